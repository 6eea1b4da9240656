"""Explanation quality: pixel flipping, continuity, model-parameter randomisation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

from fvis.attribution.base import Attribution
from fvis.attribution.gradient import Gradient, GradientXInput, Saliency
from fvis.attribution.integrated import IntegratedGradients
from fvis.quality import (
    ORDERS,
    continuity,
    diversity,
    infidelity,
    max_sensitivity,
    model_randomization,
    pixel_flipping,
    recompute_flipping,
    road_impute,
    spearman,
    transfer,
    transformation_robustness,
)


def linear_model(seed: int = 0) -> nn.Module:
    """f(x) = Σ w ⊙ x + 1 on 1×8×8 images: the exact contribution of pixel i is w_i x_i."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(1, 64))
        net[1].bias.fill_(1.0)
    return net.eval()


class Fixed(Attribution):
    """A method that ignores the model and returns given maps (an oracle, or noise)."""

    def __init__(self, model, maps):
        super().__init__(model)
        self.maps = maps

    def attribute(self, inputs, target=None):
        return self.maps.expand_as(inputs).clone()


class Echo(Attribution):
    """R(x) = x: an edge detector that never looks at the model."""

    def attribute(self, inputs, target=None):
        return inputs.clone()


# ---------------------------------------------------------------- pixel flipping


def test_pixel_flipping_oracle_beats_random_on_hand_built_model():
    net = linear_model()
    x = torch.rand(4, 1, 8, 8)
    oracle = net[1].weight.view(1, 1, 8, 8) * x  # exact contributions (fill = black = 0)
    random = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    good = pixel_flipping(net, x, oracle, 0, patch=2, steps=16)
    bad = pixel_flipping(net, x, random, 0, patch=2, steps=16)
    assert (good.auc < bad.auc).all() and (good.aopc > bad.aopc).all()
    with torch.no_grad():
        f = net(x)[:, 0]
    assert torch.allclose(good.scores[:, 0], f) and torch.allclose(
        good.scores[:, -1], torch.ones(4)
    )
    assert torch.allclose(good.fractions, torch.linspace(0, 1, 17))
    # MoRF with exact contributions removes the largest positive evidence first, so the
    # curve first falls monotonically
    d = good.scores.diff(dim=1)
    assert (d[:, :4] <= 1e-6).all()


def test_pixel_flipping_matches_step_by_step_reference():
    net = linear_model(1)
    x = torch.rand(2, 1, 8, 8)
    maps = torch.randn(2, 1, 8, 8)
    res = pixel_flipping(net, x, maps, 0, patch=4, steps=4, internal_batch_size=3)
    cells = maps.view(2, 2, 4, 2, 4).sum((2, 4)).flatten(1)  # 2×2 cells of 4×4 px
    for b in range(2):
        order = cells[b].argsort(descending=True).tolist()
        img = x[b : b + 1].clone()
        expected = [net(img).item()]
        for k in range(4):
            r, c = divmod(order[k], 2)
            img[..., 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 0
            expected.append(net(img).item())
        assert torch.allclose(res.scores[b], torch.tensor(expected), atol=1e-5)
    curve = res.scores
    auc = ((curve[:, 1:] + curve[:, :-1]) / 2 * 0.25).sum(1)
    assert torch.allclose(res.auc, auc, atol=1e-6)
    assert torch.allclose(res.aopc, (curve[:, :1] - curve).mean(1))


def test_pixel_flipping_skips_steps_that_change_nothing():
    """Cells already equal to the fill (a black border under fill="black") leave the
    input as it was: those steps keep the previous score and cost no forward. Hand-set:
    item 0 has content only in cell 3 of 4, item 1 in cells 0 and 2."""
    net = linear_model(2)
    x = torch.zeros(2, 1, 8, 8)
    x[0, :, 4:, 4:] = torch.rand(4, 4) + 0.5
    x[1, :, :4, :4], x[1, :, 4:, :4] = torch.rand(4, 4) + 0.5, torch.rand(4, 4) + 0.5
    maps = torch.arange(4.0).flip(0).view(1, 1, 2, 2).repeat(2, 1, 1, 1)  # order 0, 1, 2, 3
    maps = maps.repeat_interleave(4, 2).repeat_interleave(4, 3)
    rows = []
    counted = _CountRows(net, rows)
    res = pixel_flipping(counted, x, maps, 0, patch=4, steps=4, fill="black")
    with torch.no_grad():
        f0, f1 = net(x)[:, 0].tolist()
    bias = net[1].bias.item()
    # item 0: only step 4 removes content; item 1: steps 1 and 3 (cells 0 and 2)
    assert torch.allclose(res.scores[0], torch.tensor([f0, f0, f0, f0, bias]), atol=1e-6)
    x1 = x[1:].clone()
    x1[..., :4, :4] = 0
    mid = net(x1).item()
    assert torch.allclose(res.scores[1], torch.tensor([f1, mid, mid, bias, bias]), atol=1e-6)
    # one chunk scored: step 0 of both items, item 0's step 4, item 1's steps 1 and 3 (of 10)
    assert rows[-1] == 5
    rows.clear()
    pixel_flipping(counted, x, maps, 0, patch=4, steps=4, fill="uniform")
    assert rows[-1] == 10  # a random fill differs everywhere: every step is scored


class _CountRows(nn.Module):
    def __init__(self, net, rows):
        super().__init__()
        self.net, self.rows = net, rows

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.net(x)


def test_pixel_flipping_on_bundled_model(mnist_model, mnist_digits):
    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:16])
    ig = IntegratedGradients(mnist_model).attribute(x, labels[:16], steps=16)
    rand = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    good = pixel_flipping(mnist_model, x, ig, labels[:16])
    bad = pixel_flipping(mnist_model, x, rand, labels[:16])
    assert good.scores.shape == (16, 21)
    assert good.auc.mean() < bad.auc.mean() and good.aopc.mean() > bad.aopc.mean()
    small = pixel_flipping(mnist_model, x[:2], ig[:2, :, ::4, ::4], labels[:2])  # upsampled
    assert small.scores.shape == (2, 21)
    with pytest.raises(ValueError, match="do not match"):
        pixel_flipping(mnist_model, x, ig[:3], labels[:16])


# ---------------------------------------------------------------- continuity


def test_continuity_definition():
    net = linear_model()
    x = torch.rand(2, 1, 8, 8)
    zero = Fixed(net, torch.zeros(1, 1, 8, 8))
    assert torch.equal(continuity(zero, x, 0), torch.zeros(2))
    # R(x) = x: max over shifts of ‖x − x′‖₁ / ‖x − x′‖₂, computed here directly
    c = continuity(Echo(net), x, 0, max_shift=1, align=False)
    best = torch.zeros(2)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            moved = torch.zeros_like(x)
            ys, yd = (
                (slice(0, 8 - dy), slice(dy, 8)) if dy >= 0 else (slice(-dy, 8), slice(0, 8 + dy))
            )
            xs, xd = (
                (slice(0, 8 - dx), slice(dx, 8)) if dx >= 0 else (slice(-dx, 8), slice(0, 8 + dx))
            )
            moved[..., yd, xd] = x[..., ys, xs]
            diff = (moved - x).flatten(1)
            best = torch.maximum(best, diff.abs().sum(1) / diff.norm(dim=1))
    assert torch.allclose(c, best)


def test_continuity_on_bundled_model(mnist_model, mnist_digits):
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:2])
    c = continuity(Saliency(mnist_model), x, max_shift=1)
    assert c.shape == (2,) and torch.isfinite(c).all() and (c > 0).all()


# ---------------------------------------------------------------- randomisation


def test_spearman():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(a, a).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    ties = torch.tensor([[0.0, 0.0, 1.0, 2.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    # tie-averaged ranks (1.5, 1.5, 3, 4.5, 4.5) vs (1..5); centred: (−1.5, −1.5, 0, 1.5,
    # 1.5)·(−2, −1, 0, 1, 2) = 9, norms 3 and √10
    assert spearman(*ties).item() == pytest.approx(9 / (3 * math.sqrt(10.0)))
    import scipy.stats as scipy_stats

    u, v = torch.randn(2, 50).round(), torch.randn(2, 50)
    for i in range(2):
        assert spearman(u[i : i + 1], v[i : i + 1]).item() == pytest.approx(
            scipy_stats.spearmanr(u[i], v[i]).statistic, abs=1e-9
        )


def test_randomization_drops_correlation_and_leaves_model_untouched(mnist_model, mnist_digits):
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:4])
    before = snapshot(mnist_model)
    for method in (Gradient, GradientXInput):
        res = model_randomization(mnist_model, method, x)
        assert res.stages == ["logits", "fc1", "conv3", "conv2", "conv1"]
        assert res.correlation.shape == (4, 5)
        first, last = res.correlation[:, 0].mean(), res.correlation[:, -1].mean()
        assert last < first and last < 0.6, res.correlation
    assert_clean(mnist_model, before)
    # a method that ignores the model keeps correlation 1: the check exposes it
    echo = model_randomization(mnist_model, Echo, x, 3, stages=["logits", "conv1"])
    assert torch.allclose(echo.correlation, torch.ones(4, 2))
    # container stages, a seed reproduces
    a = model_randomization(mnist_model, Gradient, x[:1], 3, stages=["fc1", "conv3"], seed=1)
    b = model_randomization(mnist_model, Gradient, x[:1], 3, stages=["fc1", "conv3"], seed=1)
    assert torch.equal(a.correlation, b.correlation)
    with pytest.raises(KeyError, match="conv9"):
        model_randomization(mnist_model, Gradient, x[:1], 3, stages=["conv9"])
    assert_clean(mnist_model, before)


# ---------------------------------------------------------------- selectivity, more


class Toy(nn.Module):
    """f(x) = ReLU(x₀ + x₁ − 1) + 0.5 x₂ + 0.1 x₃ on a 1×1×2×2 image (x₀..x₃ row-major)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 2)
        self.out = nn.Linear(2, 1)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.1]]))
            self.hidden.bias.copy_(torch.tensor([-1.0, 0.0]))
            self.out.weight.fill_(1.0)
            self.out.bias.zero_()

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def test_recompute_loop_reproduces_hand_computed_curve():
    net = Toy().eval()
    x = torch.tensor([1.0, 1.0, 0.9, 1.0]).view(1, 1, 2, 2)
    gxi = GradientXInput(net)
    # R(x) = x ⊙ ∇f = (1, 1, 0.45, 0.1), f = 1.55. Recomputed: removing x₀ switches the
    # ReLU off, so x₁'s relevance drops to 0 and x₂ (0.45) goes next, then x₃, then x₁.
    loop = recompute_flipping(gxi, x, 0, patch=1, steps=4)
    assert torch.allclose(loop.scores, torch.tensor([[1.55, 0.55, 0.1, 0.0, 0.0]]))
    assert torch.allclose(loop.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    # area: 0.25 · ((1.55 + 0.55) + (0.55 + 0.1) + (0.1 + 0) + 0) / 2
    assert loop.auc.item() == pytest.approx(0.35625)
    # one-shot on R(x) keeps the stale order x₀, x₁, x₂, x₃
    once = pixel_flipping(net, x, gxi.attribute(x, 0), 0, patch=1, steps=4)
    assert torch.allclose(once.scores, torch.tensor([[1.55, 0.55, 0.55, 0.1, 0.0]]))
    # least relevant first: x₃ (0.1), x₂ (0.45), then the tie x₀/x₁ in cell order
    lerf = recompute_flipping(gxi, x, 0, patch=1, steps=4, order="lerf")
    assert torch.allclose(lerf.scores, torch.tensor([[1.55, 1.45, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="steps must be 1..4"):
        recompute_flipping(gxi, x, 0, patch=1, steps=5)


def test_orders_rank_true_relevance_morf_random_lerf():
    net = linear_model(2)
    x = torch.rand(6, 1, 8, 8)
    oracle = net[1].weight.view(1, 1, 8, 8) * x
    curves = {o: pixel_flipping(net, x, oracle, 0, patch=2, steps=16, order=o) for o in ORDERS}
    assert (curves["morf"].auc < curves["random"].auc).all()
    assert (curves["random"].auc < curves["lerf"].auc).all()
    # LeRF with the exact contributions removes the most negative evidence first: rising
    assert (curves["lerf"].scores.diff(dim=1)[:, :4] >= -1e-6).all()
    # the random order is seeded, and differs per item
    again = pixel_flipping(net, x, oracle, 0, patch=2, steps=16, order="random")
    assert torch.equal(again.scores, curves["random"].scores)
    with pytest.raises(ValueError, match="order must be one of"):
        pixel_flipping(net, x, oracle, 0, order="best")


def test_pixel_flipping_equals_quantus_region_perturbation(mnist_model, mnist_digits):
    import quantus

    images, labels = mnist_digits
    x, y = mnist_model.fvis_info.normalize(images[::250]), labels[::250]
    maps = Saliency(mnist_model).attribute(x, y)
    # Quantus: one 7×7 cell per step, fill = each image's minimum ("black"), logits
    fill = x.flatten(1).min(1).values.view(-1, 1, 1, 1).expand_as(x)
    for order in ("morf", "lerf"):
        ours = pixel_flipping(mnist_model, x, maps, y, patch=7, steps=16, order=order, fill=fill)
        metric = quantus.RegionPerturbation(
            patch_size=7, order=order, regions_evaluation=16, normalise=False,
            disable_warnings=True,
        )  # fmt: skip
        theirs = metric(mnist_model, x.numpy(), y.numpy(), a_batch=maps.numpy(), softmax=False)
        drop = ours.scores[:, :1] - ours.scores[:, 1:]  # Quantus records f(x) − f(x_k)
        assert torch.allclose(drop, torch.tensor(theirs, dtype=torch.float32), atol=1e-4)


def test_road_imputation_matches_grad_cam_and_is_used():
    import pytorch_grad_cam.metrics.road as road

    g = torch.Generator().manual_seed(3)
    img = torch.rand(2, 3, 9, 11, generator=g)
    removed = torch.rand(2, 9, 11, generator=g) < 0.4
    removed[1, 2:7, 3:9] = True  # a large hole
    ours = road_impute(img, removed, noise=0.0)
    for i in range(2):
        ref = road.NoisyLinearImputer(noise=0.0)(img[i], (~removed[i]).float())
        assert torch.allclose(ours[i], ref, atol=1e-5)
    assert torch.equal(
        ours[~removed[:, None].expand_as(img)], img[~removed[:, None].expand_as(img)]
    )
    # noise: 0.01 · N(0, 1) on the removed pixels only, from the generator
    noisy = road_impute(img, removed, noise=0.01, generator=1)
    assert 0 < (noisy - ours).abs().max() < 0.1
    net = linear_model()
    x = torch.rand(2, 1, 8, 8)
    curve = pixel_flipping(net, x, x, 0, patch=2, steps=16, imputation="road", noise=0.0)
    rank = (-x.view(2, 4, 2, 4, 2).sum((2, 4)).flatten(1)).argsort(dim=1, stable=True)
    for b in range(2):  # step 1: the first cell imputed from its neighbours
        r, c = divmod(rank[b, 0].item(), 4)
        gone = torch.zeros(1, 8, 8, dtype=torch.bool)
        gone[:, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = True
        with torch.no_grad():
            expected = net(road_impute(x[b : b + 1], gone, noise=0.0))[0, 0]
        assert curve.scores[b, 1].item() == pytest.approx(expected.item(), abs=1e-5)


# ---------------------------------------------------------------- infidelity, sensitivity


def test_infidelity_hand_computed_on_linear_model():
    net = linear_model(4)
    w = net[1].weight.view(1, 1, 8, 8)
    x = torch.rand(3, 1, 8, 8)
    n, sigma = 5, 0.1
    eps = torch.randn((n, 3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    pert = sigma * eps  # valid range (0, 1) without normalization
    d = (pert * w).flatten(2).sum(2)  # f(x) − f(x − I) = Σ w I
    gxi = w * x
    a = (pert * gxi).flatten(2).sum(2)
    expected = ((a - d) ** 2).mean(0)
    got = infidelity(net, x, gxi, 0, n=n, sigma=sigma)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-9)
    # the gradient of a linear model predicts every perturbation exactly
    assert torch.allclose(infidelity(net, x, w.expand_as(x), 0, n=n), torch.zeros(3), atol=1e-9)
    # normalize: β = Σ a d / Σ a²
    beta = (a * d).sum(0) / (a * a).sum(0)
    got_n = infidelity(net, x, gxi, 0, n=n, sigma=sigma, normalize=True)
    assert torch.allclose(got_n, ((beta * a - d) ** 2).mean(0), rtol=1e-4, atol=1e-9)
    # captum, given the same perturbations (its rows are item-major)
    import captum.metrics as metrics

    item_major = pert.transpose(0, 1).reshape(-1, 1, 8, 8)

    def perturb(inputs):
        return item_major, inputs - item_major

    for norm in (False, True):
        ref = metrics.infidelity(net, perturb, x, gxi, target=0, n_perturb_samples=n,
                                 normalize=norm)  # fmt: skip
        ours = infidelity(net, x, gxi, 0, n=n, sigma=sigma, normalize=norm)
        assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-9)


def test_max_sensitivity_hand_computed_on_linear_model():
    net = linear_model(5)
    w = net[1].weight.view(1, 1, 8, 8)
    x = torch.rand(2, 1, 8, 8) + 0.5
    n, radius = 6, 0.05
    delta = 2 * torch.rand((n, 2, 1, 8, 8), generator=torch.Generator().manual_seed(0)) - 1
    delta = delta * radius
    # gradient × input of a linear model: R(x + δ) − R(x) = w ⊙ δ
    expected = ((w * delta).flatten(2).norm(dim=2) / (w * x).flatten(1).norm(dim=1)).max(0).values
    got = max_sensitivity(GradientXInput(net), x, 0, n=n, radius=radius)
    assert torch.allclose(got, expected, rtol=1e-5)
    assert torch.allclose(max_sensitivity(Gradient(net), x, 0, n=n), torch.zeros(2))
    import captum.metrics as metrics

    item_major = delta.transpose(0, 1).reshape(-1, 1, 8, 8)

    def explain(inputs, target):  # captum: a tuple (or a tensor) in and out, under no_grad
        with torch.enable_grad():
            if isinstance(inputs, tuple):
                return (GradientXInput(net).attribute(inputs[0], target),)
            return GradientXInput(net).attribute(inputs, target)

    ref = metrics.sensitivity_max(
        explain,
        x, perturb_func=lambda inp: inp + item_major, n_perturb_samples=n, target=0,
    )  # fmt: skip
    assert torch.allclose(got, ref, rtol=1e-5)


def test_continuity_zero_for_translation_equivariant_explanation():
    net = linear_model()
    x = torch.rand(2, 1, 8, 8)
    # R(x) = x² moves with the image: zero; a map tied to positions does not
    assert torch.equal(continuity(Square(net), x, 0), torch.zeros(2))
    assert (continuity(GradientXInput(net), x, 0) > 0).all()
    fixed = continuity(Fixed(net, torch.rand(1, 1, 8, 8)), x, 0)
    assert (fixed > 0).all()


class Square(Attribution):
    def attribute(self, inputs, target=None):
        return inputs**2


# ---------------------------------------------------------------- feature visualizations


def test_transformation_robustness_diversity_transfer(mnist_digits):
    net = linear_model(6)
    with torch.no_grad():
        net[1].weight.abs_()  # positive evidence everywhere: f(x) > 0 on images in [0, 1]
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(transformation_robustness(net, 0, x, transforms=None, n=2), torch.ones(3))
    # a transform that halves the image: f(x/2) / f(x) = (Σ w x / 2 + 1) / (Σ w x + 1)
    half = transformation_robustness(net, 0, x, transforms=lambda im, g: im / 2, n=2)
    with torch.no_grad():
        f = net(x)[:, 0]
    assert torch.allclose(half, (f - 1) / 2 / f + 1 / f)
    # Lucid's transforms draw from the generator: reproducible
    a = transformation_robustness(net, 0, x, n=4, generator=1)
    assert torch.equal(a, transformation_robustness(net, 0, x, n=4, generator=1))

    e = torch.eye(4).view(4, 1, 2, 2)
    assert diversity(e) == pytest.approx(1.0)  # orthogonal images
    assert diversity(e[:1].expand(3, -1, -1, -1)) == pytest.approx(0.0, abs=1e-12)
    # a one-channel layer's Gram matrix is its mean square: moved pixels look alike
    conv = nn.Sequential(nn.Conv2d(1, 1, 1)).eval()
    assert diversity(e, conv, "0") == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        diversity(e[:1])

    import fvis

    mlp = fvis.load_model("fvis:mnist-mlp")
    images, labels = mnist_digits
    p = transfer(mlp, images[::100], labels[::100])
    with torch.no_grad():
        ref = mlp(mlp.fvis_info.normalize(images[::100])).softmax(1)
    assert torch.allclose(p, ref[torch.arange(10), labels[::100]])
    assert p.mean() > 0.8  # real digits transfer to the second classifier
