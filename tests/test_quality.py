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
from fvis.quality import continuity, model_randomization, pixel_flipping, spearman


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
    c = continuity(Echo(net), x, 0, max_shift=1)
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
    scipy_stats = pytest.importorskip("scipy.stats")
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
