"""Each propagation rule to the letter of its source (issue 11): hand-set networks with
hand-computed values, and the peers' own numbers where the definition is shared (zennit's
composites, captum's DeepLIFT multipliers).

Items: 1 (RevealCancel's Δ⁺/Δ⁻ carried through linear operations), 2 (return_delta on
a batch of scalars), 3 (DeepLIFT / simple Taylor references), 5 (LRP bias), 6 (αβ
domain), 7 (proportional and Shapley max-pool), 8 (simple Taylor root search), 9 (deep
Taylor domains), 15 (DeepLIFT multipliers), 17 (BatchNorm after a transposed
convolution).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

from fvis.attribution import (
    LRP,
    DeepLift,
    DeepTaylor,
    IntegratedGradients,
    LayerIntegratedGradients,
    SimpleTaylor,
)
from fvis.attribution import composites as C
from fvis.attribution.canonizers import MergeBatchNorm
from fvis.attribution.pooling import shapley_max
from fvis.attribution.rules import AlphaBeta, Epsilon, ZPlus
from fvis.attribution.taylor import find_root
from fvis.hooks import UnsupportedOperation

torch.set_num_threads(1)
D = torch.float64


def linear(weight, bias=None) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=D)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=D))
    return layer


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=D)


# ---------------------------------------------------------------- item 1
class ReLULinear(nn.Module):
    """captum's ReLULinearModel on one input (B, 6): l3(relu(cat(l1(x1), l2(x2))))."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = linear([[3, 1, 0]]), linear([[2, 3, 0]])
        self.l3 = linear([[1, 1]])

    def forward(self, x):
        return self.l3(torch.relu(torch.cat([self.l1(x[:, :3]), self.l2(x[:, 3:])], 1)))


def test_reveal_cancel_carries_parts_through_concatenation():
    """x1 = (−10, 1, −5), x2 = (3, 3, 1), reference 0 (captum's test inputs): l1 gives
    Δz = −29 = +1 − 30, so RevealCancel gives x1 (−½, ½, 0): Δy⁺ = ½f(1) + ½[f(−29) −
    f(−30)] = ½, Δy⁻ = −½; l2 gives 15, all positive: x2 (6, 9, 0). Rescale (captum's
    numbers, live) gives x1 (0, 0, 0)."""
    net, x = ReLULinear(), t([-10, 1, -5, 3, 3, 1])
    rc, delta = DeepLift(net, "reveal_cancel").attribute(x, 0, return_delta=True)
    assert torch.allclose(rc, t([-0.5, 0.5, 0, 6, 9, 0]), atol=1e-12)
    assert abs(delta.item()) < 1e-12
    rescale = DeepLift(net, "rescale").attribute(x, 0)
    assert torch.allclose(rescale, t([0, 0, 0, 6, 9, 0]), atol=1e-12)
    from captum.attr import DeepLift as CaptumDeepLift
    from captum.testing.helpers.basic_models import ReLULinearModel

    theirs = CaptumDeepLift(ReLULinearModel().double()).attribute(
        (x[:, :3], x[:, 3:]), (torch.zeros(1, 3, dtype=D),) * 2
    )
    assert torch.allclose(torch.cat(theirs, 1), rescale, atol=1e-12)


class Residual(nn.Module):
    """out(relu(fc2(relu(fc1(x))) + x)): RevealCancel at the residual sum."""

    def __init__(self, merged: bool):
        super().__init__()
        g = torch.Generator().manual_seed(21)
        w1, w2, w3 = (torch.randn(n, 3, generator=g, dtype=D) for n in (3, 3, 2))
        b1, b2 = torch.randn(3, generator=g, dtype=D), torch.randn(3, generator=g, dtype=D)
        self.fc1, self.out, self.merged = linear(w1, b1), linear(w3), merged
        # the same sum as one linear layer on cat(h, x): weights (W2 | I)
        self.fc2 = linear(torch.cat([w2, torch.eye(3, dtype=D)], 1) if merged else w2, b2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        z = self.fc2(torch.cat([h, x], 1)) if self.merged else self.fc2(h) + x
        return self.out(torch.relu(z))


def test_reveal_cancel_through_a_residual_sum_equals_one_linear_layer():
    g = torch.Generator().manual_seed(5)
    x, ref = torch.randn(4, 3, generator=g, dtype=D), torch.randn(4, 3, generator=g, dtype=D)
    summed, merged = Residual(False), Residual(True)
    want, d1 = DeepLift(merged, "reveal_cancel").attribute(x, 1, reference=ref, return_delta=True)
    got, d2 = DeepLift(summed, "reveal_cancel").attribute(x, 1, reference=ref, return_delta=True)
    assert torch.allclose(got, want, atol=1e-12)
    assert max(d1.abs().max(), d2.abs().max()) < 1e-12
    rescale = DeepLift(summed, "rescale").attribute(x, 1, reference=ref)
    assert not torch.allclose(got, rescale, atol=1e-3)


def test_reveal_cancel_through_batchnorm_equals_the_folded_layer():
    """BatchNorm left in place (canonizers=()) carries the parts by its per-channel scale,
    negative scales swapping them: the same map as with BatchNorm folded into the conv."""
    net = bn_like()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3), dtype=D)
    folded = DeepLift(net, "reveal_cancel").attribute(x, 1)
    kept, delta = DeepLift(net, "reveal_cancel", canonizers=()).attribute(x, 1, return_delta=True)
    assert torch.allclose(kept, folded, atol=1e-10) and delta.abs().max() < 1e-10


class Written(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        z = self.fc(x)
        z[:, 0] = 0.0
        return self.out(torch.relu(z))


def test_reveal_cancel_refuses_what_it_cannot_carry():
    net, x = Written(), torch.randn(2, 3)
    before = snapshot(net)
    with pytest.raises(UnsupportedOperation, match="Tensor.__setitem__ in module '<model>'"):
        DeepLift(net, "reveal_cancel").attribute(x, 0)
    assert_clean(net, before)
    _, delta = DeepLift(net, "rescale").attribute(x, 0, return_delta=True)
    assert delta.abs().max() < 1e-6


# ---------------------------------------------------------------- item 2
class Scalar(nn.Module):
    """f(x) = 2·ReLU(x − 1) + 3·ReLU(−x) for a batch of scalars x (B,); layer ``pre`` is
    (B,) too."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Identity()
        self.net = nn.Sequential(linear([[1], [-1]], [-1, 0]), nn.ReLU(), linear([[2, 3]]))

    def forward(self, x):
        return self.net(self.pre(x).unsqueeze(1))


def test_return_delta_on_a_batch_of_scalars():
    net, x = Scalar(), t(3, -2, 0.5)  # f = (4, 6, 0), f(0) = 0
    attr, delta = DeepLift(net).attribute(x, 0, return_delta=True)
    assert torch.allclose(attr, t(4, 6, 0)) and delta.abs().max() < 1e-12
    # gradient at x times x: (2·3, −3·−2, 0); remainder 6 − 4 at x = 3 (the kink at 1)
    attr, delta = SimpleTaylor(net).attribute(x, 0, return_delta=True)
    assert torch.allclose(attr, t(6, 6, 0)) and torch.allclose(delta, t(2, 0, 0))
    attr, delta = IntegratedGradients(net).attribute(x, 0, baselines=0.0, return_delta=True)
    assert attr.shape == delta.shape == (3,)
    assert torch.allclose(attr, t(4, 6, 0) + delta) and delta.abs().max() < 0.1  # the kink
    attr, delta = LayerIntegratedGradients(net).attribute(
        x, 0, layer="pre", baselines=0.0, return_delta=True
    )
    assert attr.shape == delta.shape == (3,) and delta.abs().max() < 0.1


# ---------------------------------------------------------------- item 3
def test_deeplift_and_simple_taylor_default_to_a_black_reference(mnist_model, mnist_digits):
    model, info = mnist_model, mnist_model.fvis_info
    x = info.normalize(mnist_digits[0][:2])
    black = info.normalize(torch.zeros(1, 1, 28, 28))
    assert black.min() < -0.4  # black is not the zero model input (the mean grey)
    want = DeepLift(model).attribute(x, 3, reference=black)
    assert torch.equal(DeepLift(model).attribute(x, 3), want)
    assert torch.equal(DeepLift(model).attribute(x, 3, reference="black"), want)
    logits = model(torch.cat([x, black]))[:, 3]
    assert torch.allclose(want.flatten(1).sum(1), logits[:2] - logits[2], atol=1e-4)
    g = torch.Generator().manual_seed(0)
    for reference in ("zero", "blur", "uniform", "gaussian", "max_distance", 0.5,
                      lambda inputs, gen: torch.full_like(inputs, 0.25)):  # fmt: skip
        _, delta = DeepLift(model, "reveal_cancel").attribute(
            x, 3, reference=reference, generator=g, return_delta=True
        )
        assert delta.abs().max() < 1e-5, reference
    st = SimpleTaylor(model).attribute(x, 3)
    assert torch.equal(st, SimpleTaylor(model).attribute(x, 3, root=black))
    with pytest.raises(ValueError, match="unknown baseline 'grey'"):
        DeepLift(model).attribute(x, 3, reference="grey")
    with pytest.raises(ValueError, match="one reference is needed, got 2"):
        DeepLift(model).attribute(x, 3, reference=torch.zeros(2, 2, 1, 28, 28))


# ---------------------------------------------------------------- item 5
def vgg_like():
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 5),
    ).double().eval()  # fmt: skip


def bn_like():
    """zennit leaves a merged BatchNorm as x/√(1 + ε) (its 'identity' keeps ε), which moves
    its maps by ~ε/2 per BatchNorm; ε = 1e-12 here keeps that below the comparison."""
    torch.manual_seed(12)
    eps = 1e-12
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6, eps=eps), nn.ReLU(),
        nn.Conv2d(6, 8, 3), nn.BatchNorm2d(8, eps=eps), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10), nn.BatchNorm1d(10, eps=eps), nn.ReLU(),
        nn.Linear(10, 4),
    ).double()  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, -1.5, 1.5)  # negative scales flip signs too
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return net.eval()


def zennit_lrp(net, composite, x, target):
    from zennit.attribution import Gradient

    out = net(x).detach()
    seed = torch.zeros_like(out)
    seed[:, target] = out[:, target]  # fvis starts from the logit, R = A ⊙ ∂t/∂A
    with Gradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x, seed)
    return relevance


@pytest.mark.parametrize("make", [vgg_like, bn_like])
def test_lrp_composites_equal_zennit(make):
    from zennit import composites as Z
    from zennit.canonizers import SequentialMergeBatchNorm

    net = make()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=D)
    if make is bn_like:
        x = x[..., :12, :12]
    low, high = torch.zeros_like(x[:1]), torch.ones_like(x[:1])
    pairs = {
        "EpsilonPlus": (C.EpsilonPlus(), Z.EpsilonPlus),
        "EpsilonAlpha2Beta1": (C.EpsilonAlpha2Beta1(), Z.EpsilonAlpha2Beta1),
        "EpsilonPlusFlat": (C.EpsilonPlusFlat(), Z.EpsilonPlusFlat),
        "EpsilonGammaBox": (C.EpsilonGammaBox(0.0, 1.0), Z.EpsilonGammaBox),
    }
    before = snapshot(net)
    for name, (ours, theirs) in pairs.items():
        kw = {"low": low, "high": high} if name == "EpsilonGammaBox" else {}
        want = zennit_lrp(net, theirs(canonizers=[SequentialMergeBatchNorm()], **kw), x, 2)
        got = LRP(net, ours).attribute(x, 2)
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err < 1e-6, (name, err)
        assert_clean(net, before)


def test_lrp_bias_choices_and_redistribution():
    """z = 1·1 + 2·1 + b with b = 1, R = z = 4."""
    net = nn.Sequential(linear([[1, 2]], [1]))
    x = t([1, 1])
    expect = {
        Epsilon(1e-12): [1, 2],  # the bias takes 1/4
        Epsilon(1e-12, bias=False): [4 / 3, 8 / 3],  # normalized without the bias
        Epsilon(1e-12, bias="redistribute"): [1.5, 2.5],  # b shared equally: +0.5 each
        ZPlus(bias=False): [4 / 3, 8 / 3],
        ZPlus(): [1, 2],  # zennit's z⁺ keeps b⁺
    }
    for rule, want in expect.items():
        assert torch.allclose(LRP(net, rule=rule).attribute(x, 0), t(want)), rule


def test_alphabeta_with_bias_is_the_notebook_formula():
    """Understanding-NN's LRP (seed 001): R_i = Σ_j R_j [α z⁺_ij/(Σ_i z⁺_ij + b⁺_j) +
    (1 − α) z⁻_ij/(Σ_i z⁻_ij + b⁻_j)], z_ij = a_i w_ij, on a two-layer ReLU net."""
    g = torch.Generator().manual_seed(3)
    w1, b1 = torch.randn(5, 4, generator=g, dtype=D), torch.randn(5, generator=g, dtype=D)
    w2, b2 = torch.randn(3, 5, generator=g, dtype=D), torch.randn(3, generator=g, dtype=D)
    net = nn.Sequential(linear(w1, b1), nn.ReLU(), linear(w2, b2))
    x = torch.rand(2, 4, generator=g, dtype=D)
    alpha, target = 2.0, 1

    def backward(a, w, b, relevance):  # a (B, I), w (J, I), relevance (B, J)
        z = a[:, :, None] * w.T[None]
        zp, zn = z.clamp(min=0), z.clamp(max=0)
        den_p = zp.sum(1) + b.clamp(min=0)
        den_n = zn.sum(1) + b.clamp(max=0)
        den_p = torch.where(den_p == 0, 1.0, den_p)  # no part of that sign: no relevance
        den_n = torch.where(den_n == 0, 1.0, den_n)
        share = alpha * zp / den_p[:, None] + (1 - alpha) * zn / den_n[:, None]
        return (share * relevance[:, None]).sum(2)

    h = torch.relu(x @ w1.T + b1)
    out = h @ w2.T + b2
    r_out = torch.zeros_like(out)
    r_out[:, target] = out[:, target]
    want = backward(x, w1, b1, backward(h, w2, b2, r_out))
    rule = AlphaBeta(alpha, alpha - 1, stabilizer=1e-15)
    got = LRP(net, rule=rule).attribute(x, target)
    assert torch.allclose(got, want, atol=1e-10)
    assert not torch.allclose(got.sum(1), out[:, target])  # the biases absorb relevance


def test_bias_redistribution_conserves_on_a_conv_net():
    """Padded convolutions (receptive fields of different sizes), max pools, biases:
    ``bias="redistribute"`` conserves to rounding, the default ε-rule loses the biases'
    share (here nearly all of the logit)."""
    torch.manual_seed(11)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 12), nn.ReLU(), nn.Linear(12, 5),
    ).double()  # fmt: skip
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=D)
    logit = net(x)[:, 4].detach()
    r = LRP(net, rule=Epsilon(1e-12, bias="redistribute")).attribute(x, 4)
    assert torch.allclose(r.flatten(1).sum(1), logit, rtol=1e-9)
    plain = LRP(net, rule=Epsilon(1e-12)).attribute(x, 4)
    assert ((plain.flatten(1).sum(1) - logit).abs() > 0.1 * logit.abs()).all()


# ---------------------------------------------------------------- item 6
def test_alphabeta_refuses_negative_beta():
    with pytest.raises(ValueError, match="beta ≥ 0"):
        AlphaBeta(0.5, -0.5)
    AlphaBeta(1, 0)


# ---------------------------------------------------------------- item 7
class Max2(nn.Module):
    """max(x1, x2) by a 1-D max pool, then a unit linear layer."""

    def __init__(self):
        super().__init__()
        self.pool, self.out = nn.MaxPool1d(2), linear([[1.0]])

    def forward(self, x):
        return self.out(self.pool(x.unsqueeze(1)).flatten(1))


def test_max_pool_proportional_and_shapley_rules():
    net, x = Max2(), t([3, 1])
    # LRP / deep Taylor: winner takes all (3, 0); proportional (3·3/4, 3·1/4)
    assert torch.allclose(LRP(net, rule=Epsilon()).attribute(x, 0), t([3, 0]))
    prop = LRP(net, rule=Epsilon(), max_pool="proportional").attribute(x, 0)
    assert torch.allclose(prop, t([2.25, 0.75]))
    dt = DeepTaylor(net, first="zplus", max_pool="proportional").attribute(x, 0)
    assert torch.allclose(dt, t([2.25, 0.75]))
    # DeepLIFT from 0: argmax (3, 0); Shapley ½(3 − 0) + ½(3 − 1), ½·1 + ½·0
    assert torch.allclose(DeepLift(net).attribute(x, 0, reference=0.0), t([3, 0]))
    sh = DeepLift(net, max_pool="shapley").attribute(x, 0, reference=0.0)
    assert torch.allclose(sh, t([2.5, 0.5]))


def brute_shapley(x, r):
    n = len(x)

    def v(s):
        return max(x[i] if i in s else r[i] for i in range(n))

    phi = [0.0] * n
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        for k in range(n):
            for s in itertools.combinations(rest, k):
                weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                phi[i] += weight * (v(set(s) | {i}) - v(set(s)))
    return phi


def test_shapley_max_equals_enumeration():
    g = torch.Generator().manual_seed(4)
    x, r = torch.randn(3, 6, generator=g, dtype=D), torch.randn(3, 6, generator=g, dtype=D)
    x[1, 2] = r[1, 2]  # a null player
    x[2, 0] = x[2, 3]  # a tie
    valid = torch.ones(6, dtype=torch.bool)
    got = shapley_max(x, r, valid)
    for k in range(3):
        assert torch.allclose(got[k], t(brute_shapley(x[k].tolist(), r[k].tolist())))
    assert got[1, 2] == 0
    valid[5] = False  # padding: a null player, and its values ignored
    got = shapley_max(x, r, valid)
    for k in range(3):
        want = brute_shapley(x[k, :5].tolist(), r[k, :5].tolist()) + [0.0]
        assert torch.allclose(got[k], t(want))


def test_shapley_max_pool_summation_to_delta(mnist_model, mnist_digits):
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d((2, 3)), nn.Flatten(),
        nn.Linear(24, 3),
    ).double()  # fmt: skip
    g = torch.Generator().manual_seed(5)
    x, ref = (torch.randn(4, 2, 11, 11, generator=g, dtype=D) for _ in range(2))
    for rule in DeepLift.RULES:
        method = DeepLift(net, rule, max_pool="shapley")
        _, delta = method.attribute(x, 1, reference=ref, return_delta=True)
        assert delta.abs().max() < 1e-10
    digits = mnist_model.fvis_info.normalize(mnist_digits[0][:3])
    attr, delta = DeepLift(mnist_model, max_pool="shapley").attribute(digits, 7, return_delta=True)
    assert delta.abs().max() < 1e-5
    argmax = DeepLift(mnist_model).attribute(digits, 7)
    assert not torch.allclose(attr, argmax, atol=1e-3)  # the rule changes the map


def test_proportional_max_pool_conserves():
    torch.manual_seed(6)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(100, 3, bias=False),
    ).double()  # fmt: skip
    x = torch.rand(2, 1, 12, 12, dtype=D)
    rule = ZPlus(stabilizer=1e-15)
    r = LRP(net, rule=rule, max_pool="proportional").attribute(x, 1)
    # the pool's stabilizer (1e-6, absolute) is all that is lost
    assert torch.allclose(r.flatten(1).sum(1), net(x)[:, 1], rtol=1e-5)


# ---------------------------------------------------------------- item 8
def test_simple_taylor_root_search_hand_set():
    """f = 2·ReLU(x1) + ReLU(x2) − 3 at x = (2, 3): f(x) = 4, f(0) = −3; on the segment to
    black, f = 7(1 − s) − 3 vanishes at s = 4/7: x̃ = (6/7, 9/7), ∇f(x̃) = (2, 1),
    R = (2 − 6/7)·2, (3 − 9/7)·1 = (16/7, 12/7), Σ R = f(x), remainder 0."""
    net = nn.Sequential(linear([[1, 0], [0, 1]]), nn.ReLU(), linear([[2, 1]], [-3]))
    x = t([2, 3])
    root, s = find_root(net, x, _class(net, x, 0), torch.zeros_like(x))
    assert torch.allclose(root, t([6 / 7, 9 / 7]), atol=1e-9) and abs(s.item() - 4 / 7) < 1e-9
    st = SimpleTaylor(net)
    r, remainder = st.attribute(x, 0, search=True, gradient_at="root", return_delta=True)
    assert torch.allclose(r, t([16 / 7, 12 / 7]), atol=1e-9)
    assert remainder.abs().max() < 1e-9
    fixed = SimpleTaylor(net).attribute(x, 0)  # at black: Σ R = 7 ≠ f(x)
    assert torch.allclose(fixed.sum(1), t(7.0))
    with pytest.raises(ValueError, match="no root of the target on the segment from input 0"):
        SimpleTaylor(net).attribute(x, 0, root=t([5, 5]), search=True)


def _class(net, x, k):
    from fvis.attribution.base import resolve_target

    return resolve_target(net, x, k)


def test_simple_taylor_root_search_on_the_bundled_cnn(mnist_model, mnist_digits):
    model, info = mnist_model, mnist_model.fvis_info
    images, labels = mnist_digits
    x = info.normalize(images[[0, 150, 300]])  # classes 0, 1, 2 (stored by class)
    target = labels[[0, 150, 300]]
    objective = _class(model, x, target)
    black = info.normalize(torch.zeros(1, 1, 28, 28)).expand_as(x)
    root, s = find_root(model, x, objective, black)
    with torch.no_grad():
        at_root = model(root).gather(1, target.view(-1, 1)).squeeze(1)
        logit = model(x).gather(1, target.view(-1, 1)).squeeze(1)
    assert at_root.abs().max() < 1e-4 and ((s > 0) & (s < 1)).all()
    r, remainder = SimpleTaylor(model).attribute(x, target, search=True, return_delta=True)
    # Σ R = t(x) − t(x̃) + remainder, with t(x̃) ≈ 0; logits 17.57, 21.48, 19.86
    assert torch.allclose(r.flatten(1).sum(1), logit - at_root + remainder, atol=1e-4)
    assert torch.allclose(remainder, torch.tensor([0.028, 0.500, 0.119]), atol=0.01)
    _, fixed = SimpleTaylor(model).attribute(x, target, return_delta=True)  # black root
    assert torch.allclose(fixed, torch.tensor([1.187, 1.863, 1.367]), atol=0.01)


# ---------------------------------------------------------------- item 9
def test_deep_taylor_refuses_inputs_outside_each_rules_domain():
    torch.manual_seed(9)
    tanh = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    relu = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.rand(3, 4)  # in the (0, 1) box of a model without normalization
    before = snapshot(tanh)
    with pytest.raises(UnsupportedOperation, match="z⁺ rule .*non-negative.*module '2'"):
        DeepTaylor(tanh, low=0.0, high=1.0).attribute(x, 0)
    assert_clean(tanh, before)
    assert torch.isfinite(LRP(tanh, rule=ZPlus()).attribute(x, 0)).all()  # LRP's z⁺ does
    r = DeepTaylor(relu, low=0.0, high=1.0).attribute(x, 0)
    assert torch.allclose(r.sum(1), relu(x)[:, 0], atol=1e-5)  # z⁺ and zᴮ conserve
    with pytest.raises(ValueError, match="zᴮ rule needs the input of F.linear in module '0'"):
        DeepTaylor(relu, low=0.0, high=1.0).attribute(x + 1.5, 0)  # outside the box
    DeepTaylor(relu, low=0.0, high=3.0).attribute(x + 1.5, 0)


# ---------------------------------------------------------------- item 15
def test_deeplift_multipliers_equal_captum():
    from captum.attr import DeepLift as CaptumDeepLift

    torch.manual_seed(15)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3),
    ).double()  # fmt: skip
    g = torch.Generator().manual_seed(2)
    x, ref = (torch.randn(2, 1, 8, 8, generator=g, dtype=D) for _ in range(2))
    ours = DeepLift(net, multiply_by_inputs=False)
    m, delta = ours.attribute(x, 2, reference=ref, return_delta=True)
    theirs = CaptumDeepLift(net, multiply_by_inputs=False).attribute(x, ref, target=2)
    assert torch.allclose(m, theirs, atol=1e-12)
    contributions = DeepLift(net).attribute(x, 2, reference=ref)
    assert torch.allclose(contributions, (x - ref) * m)
    assert delta.abs().max() < 1e-12  # of the contributions


# ---------------------------------------------------------------- item 17
class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 3))

    def forward(self, x):
        return self.head(self.bn(self.up(x)))


def test_batchnorm_folds_into_a_transposed_convolution():
    torch.manual_seed(17)
    net = Decoder().double()
    bn = net.bn
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    nn.init.uniform_(bn.weight, -1.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    net.eval()
    x = torch.randn(2, 4, 4, 4, dtype=D)
    # the same network with the BatchNorm folded by hand
    folded = Decoder().double().eval()
    folded.load_state_dict(net.state_dict())
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        w = folded.up.weight.view(2, 2, 3, 3, 3)  # (groups, in/groups, out/groups, kh, kw)
        w.mul_(s.view(2, 1, 3, 1, 1))
        folded.up.bias.copy_(s * (folded.up.bias - bn.running_mean) + bn.bias)
    folded.bn = nn.Identity()
    assert torch.allclose(folded(x), net(x), atol=1e-12)
    before = snapshot(net)
    with MergeBatchNorm().apply(net, x) as pairs:
        assert pairs == [("up", "bn")]
        assert torch.allclose(net.up.weight, folded.up.weight, atol=1e-12)
        assert torch.allclose(net(x), folded(x), atol=1e-12)
    assert_clean(net, before)
    for make in (lambda m: LRP(m, C.EpsilonAlpha2Beta1()), lambda m: DeepLift(m, "reveal_cancel")):
        want = make(folded).attribute(x, 1)
        assert torch.allclose(make(net).attribute(x, 1), want, atol=1e-10)
