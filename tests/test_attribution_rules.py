"""Propagation-rule methods: Deconvnet, Guided Backprop, DeepLIFT, LRP, Taylor.

Exact values on hand-set networks (docs/anchors: DeepLIFT, LRP and deep Taylor reference
cases), each LRP rule against its explicit matrix formula, axioms (summation-to-delta,
conservation, LRP-0 = gradient × input) on the bundled CNN, BatchNorm canonization, the
hook machinery (functional, reused and in-place ReLUs) and the refusals.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_clean, snapshot
from torch import nn

from fvis import objectives
from fvis.attribution import LRP, Deconvnet, DeepLift, DeepTaylor, GuidedBackprop, SimpleTaylor
from fvis.attribution.algebra import WeightedCall
from fvis.attribution.canonizers import MergeBatchNorm
from fvis.attribution.composites import (
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    Uniform,
)
from fvis.attribution.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from fvis.hooks import UnsupportedOperation, check_no_hooks
from fvis.models.metadata import attach

torch.set_num_threads(1)


def linear(weight, bias=None) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=torch.float64)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float64))
    return layer


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@pytest.fixture(scope="module")
def mnist(mnist_model):
    return mnist_model


@pytest.fixture(scope="module")
def digits(mnist_model, mnist_digits):
    """Three test digits, normalized as the model takes them."""
    return mnist_model.fvis_info.normalize(mnist_digits[0][:3])


# ---------------------------------------------------------------- DeepLIFT reference cases
def test_deeplift_anchor_two_relus():
    """f = 2·ReLU(x1) + 2·ReLU(x2 − 1.5), x = (1, 2), reference 0 → (2, 1)."""
    f = nn.Sequential(linear([[1, 0], [0, 1]], [0, -1.5]), nn.ReLU(), linear([[2, 2]]))
    for rule in DeepLift.RULES:
        attr, delta = DeepLift(f, rule).attribute(t([1, 2]), 0, return_delta=True)
        assert torch.allclose(attr, t([2.0, 1.0]), atol=1e-12)
        assert abs(delta.item()) < 1e-12


class FunctionalMin(nn.Module):
    """min(i1, i2) = i1 − ReLU(i1 − i2), written with indexing and a functional ReLU."""

    def forward(self, x):
        return x[:, :1] - F.relu(x[:, :1] - x[:, 1:2])


def test_deeplift_anchor_min_rescale_vs_revealcancel():
    """min(i1, i2) at (3, 1), reference 0: Rescale (0, 1), RevealCancel (0.5, 0.5) (seed 003)."""

    class Layered(nn.Module):  # the same function from linear layers: h = relu(i1 − i2)
        def __init__(self):
            super().__init__()
            self.diff, self.out = linear([[1, -1]]), linear([[1, 0, -1]])

        def forward(self, x):
            return self.out(torch.cat([x, F.relu(self.diff(x))], 1))

    x = t([3, 1])
    for model in (FunctionalMin(), Layered()):
        res, d1 = DeepLift(model, "rescale").attribute(x, 0, return_delta=True)
        rc, d2 = DeepLift(model, "reveal_cancel").attribute(x, 0, return_delta=True)
        assert torch.allclose(res, t([0.0, 1.0]), atol=1e-12)
        assert torch.allclose(rc, t([0.5, 0.5]), atol=1e-12)
        assert max(abs(d1.item()), abs(d2.item())) < 1e-12


def test_deeplift_summation_to_delta_bundled_cnn(mnist, digits):
    ref = mnist.fvis_info.normalize(torch.zeros(1, 1, 28, 28))  # black digit
    g = torch.Generator().manual_seed(2)
    noise_ref = torch.randn(3, 1, 28, 28, generator=g)
    before = snapshot(mnist)
    for rule in DeepLift.RULES:
        for reference in (None, ref, noise_ref):
            attr, delta = DeepLift(mnist, rule).attribute(
                digits, None, reference=reference, return_delta=True
            )
            assert attr.shape == digits.shape
            assert delta.abs().max() < 1e-5, (rule, delta)
    assert_clean(mnist, before)


def test_deeplift_maxpool_exact_when_argmax_moves():
    """Overlapping, padded, ceil-mode max pools whose argmax differs between input and
    reference: summation-to-delta is exact, where the plain gradient would not be."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    ).double()  # fmt: skip
    x = torch.randn(4, 2, 11, 11, dtype=torch.float64)
    ref = torch.randn(4, 2, 11, 11, dtype=torch.float64)
    for rule in DeepLift.RULES:
        _, delta = DeepLift(net, rule).attribute(x, 1, reference=ref, return_delta=True)
        assert delta.abs().max() < 1e-10
    # float32 on the same net
    _, delta = DeepLift(net.float(), "rescale").attribute(
        x.float(), 1, reference=ref.float(), return_delta=True
    )
    assert delta.abs().max() < 1e-5


# ---------------------------------------------------------------- LRP
def test_lrp_anchor_331():
    """3-3-1 net, W1 = 2·ones, W2 = 3·ones, x = [1, 2, 3] → [18, 36, 54], sum f(x) = 108."""
    net = nn.Sequential(linear(2 * torch.ones(3, 3)), nn.ReLU(), linear(3 * torch.ones(1, 3)))
    for rule in (Epsilon(0), Epsilon(1e-9), ZPlus(), Gamma(0.25)):
        r = LRP(net, rule=rule).attribute(t([1, 2, 3]), 0)
        assert torch.allclose(r, t([18.0, 36.0, 54.0]), atol=1e-6), rule


def test_lrp0_equals_gradient_times_input(mnist, digits):
    x = digits.clone().requires_grad_(True)
    mnist(x)[:, 3].sum().backward()
    r = LRP(mnist, rule=Epsilon(0)).attribute(digits, 3)
    assert torch.allclose(r, x.grad * digits, atol=1e-6)


def test_lrp_epsilon_conservation_without_bias():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, bias=False),
        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5, bias=False),
    ).double()  # fmt: skip
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    out = net(x)
    errors = []
    for eps in (1e-3, 1e-5, 1e-12):  # ε absorbs relevance; ε → 0 conserves it
        r = LRP(net, rule=Epsilon(eps)).attribute(x, 2)
        errors.append((r.flatten(1).sum(1) - out[:, 2]).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-9 * out[:, 2].abs().max()
    # z⁺ conserves too (no bias, positive denominators)
    tiny = ZPlus(stabilizer=1e-15)
    r = LRP(net, Composite(conv=tiny, linear=tiny, pool=tiny)).attribute(x, torch.tensor([0, 1, 2]))
    assert torch.allclose(r.flatten(1).sum(1), out[[0, 1, 2], [0, 1, 2]], rtol=1e-9)


def dense_call(w, b=None):
    return WeightedCall(F.linear, w, b, (), {})


def explicit(contrib, relevance, eps=1e-6, bias=0.0):
    """R_i = Σ_j c_ij / stab(Σ_i c_ij + b_j) · R_j for contributions c (B, I, J)."""
    z = contrib.sum(1, keepdim=True) + bias
    stab = z + eps * torch.where(z >= 0, 1.0, -1.0)
    return (contrib / stab * relevance[:, None, :]).sum(2)


@pytest.mark.parametrize("signed", [False, True])
def test_each_rule_against_its_matrix_formula(signed):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)  # (J, I)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    a = torch.rand(2, 6, generator=g, dtype=torch.float64)
    if signed:
        a = a - 0.5
    relevance = torch.randn(2, 4, generator=g, dtype=torch.float64)
    xw = a[:, :, None] * w.T[None]  # (B, I, J): a_i w_ij
    pos, neg = xw.clamp(min=0), xw.clamp(max=0)
    lo, hi = -torch.ones(6, dtype=torch.float64), 2 * torch.ones(6, dtype=torch.float64)
    wp, wn = w.T.clamp(min=0)[None], w.T.clamp(max=0)[None]
    z = a @ w.T + b
    bp, bn = b.clamp(min=0)[None, None], b.clamp(max=0)[None, None]  # b⁺, b⁻ per output
    gamma = 0.25

    def eps_rule(eps):  # the bias is part of the denominator only
        den = z + eps * torch.where(z >= 0, 1.0, -1.0)
        return (xw / den[:, None] * relevance[:, None]).sum(2)

    # γ: outputs with z > 0 weight positive contributions (bias b + γb⁺), others negative
    up, down = xw + gamma * pos, xw + gamma * neg
    c = torch.where((z > 0)[:, None, :], up, down)
    den = torch.where(z > 0, up.sum(1) + b + gamma * b.clamp(min=0),
                      down.sum(1) + b + gamma * b.clamp(max=0))  # fmt: skip
    den = den + 1e-6 * torch.where(den >= 0, 1.0, -1.0)
    expected = {
        Epsilon(0.1): eps_rule(0.1),
        Epsilon(0): eps_rule(0.0),
        Gamma(gamma): (c / den[:, None, :] * relevance[:, None, :]).sum(2),
        ZPlus(): explicit(pos, relevance, bias=bp),
        ZPlus(bias=False): explicit(pos, relevance),
        AlphaBeta(2, 1): 2 * explicit(pos, relevance, bias=bp) - explicit(neg, relevance, bias=bn),
        AlphaBeta(2, 1, bias=False): 2 * explicit(pos, relevance) - explicit(neg, relevance),
        AlphaBeta(1, 0): explicit(pos, relevance, bias=bp),
        WSquare(): explicit((w.T**2)[None].expand(2, 6, 4), relevance, bias=b**2),
        WSquare(bias=False): explicit((w.T**2)[None].expand(2, 6, 4), relevance),
        Flat(): explicit(torch.ones(2, 6, 4, dtype=torch.float64), relevance),
        Flat(bias=True): explicit(torch.ones(2, 6, 4, dtype=torch.float64), relevance, bias=1.0),
        ZBox(lo, hi): explicit(xw - lo[None, :, None] * wp - hi[None, :, None] * wn, relevance),
        ZBox(lo, hi, bias=False): explicit(
            xw - lo[None, :, None] * wp - hi[None, :, None] * wn, relevance
        ),
    }
    for rule, want in expected.items():
        (got,) = rule.relevance(dense_call(w, b), [a], relevance)
        assert torch.allclose(got, want, atol=1e-10), rule


def test_rules_on_a_convolution_match_its_dense_matrix():
    """A strided, padded convolution is the linear map of its Jacobian: the rule gives the
    same relevance on both."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    a = torch.rand(1, 2, 5, 5, generator=g, dtype=torch.float64)
    conv = WeightedCall(F.conv2d, w, None, (2, 1), {})
    dense = torch.autograd.functional.jacobian(lambda v: conv.forward([v]), a)
    dense = dense.reshape(-1, a.numel())  # (J, I)
    relevance = torch.rand(1, dense.shape[0], generator=g, dtype=torch.float64)
    for rule in (Epsilon(0.01), ZPlus(), AlphaBeta(2, 1), WSquare(), ZBox(-1.0, 2.0)):
        (got,) = rule.relevance(conv, [a], relevance.view(1, 3, 3, 3))
        (want,) = rule.relevance(dense_call(dense), [a.flatten(1)], relevance)
        assert torch.allclose(got.flatten(1), want, atol=1e-10), rule


def test_alphabeta_requires_conservation():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2, 2)


def test_composites_assign_rules_by_kind_position_and_name(mnist, digits):
    seen = []

    class Spy(Composite):
        def rule(self, layer):
            seen.append((layer.name, layer.kind, layer.first))
            return super().rule(layer)

    LRP(mnist, Spy(conv=ZPlus(), linear=Epsilon(), first=Flat())).attribute(digits, 1)
    assert seen == [
        ("conv1", "conv", True), ("conv2", "conv", False), ("conv3", "conv", False),
        ("fc1", "linear", False), ("logits", "linear", False),
    ]  # fmt: skip
    named = EpsilonPlus(layers={"logits": Epsilon(0.5), "block.conv": Flat()})
    assert named.rule(_layer("logits", "linear")).epsilon == 0.5
    assert isinstance(named.rule(_layer("block.conv:1", "conv")), Flat)  # every call
    assert isinstance(EpsilonGammaBox().rule(_layer("conv1", "conv", 0)), ZBox)
    assert isinstance(EpsilonAlpha2Beta1().rule(_layer("conv2", "conv", 1)), AlphaBeta)
    assert isinstance(EpsilonPlusFlat().rule(_layer("conv1", "conv", 0)), Flat)
    assert isinstance(Uniform(WSquare()).rule(_layer("p", "pool", -1)), WSquare)


def _layer(name, kind, index=3):
    from fvis.attribution.composites import Layer

    return Layer(name, None, kind, index)


def test_lrp_composites_on_bundled_cnn(mnist, digits):
    logits = mnist(digits)[:, 7]
    for composite in (EpsilonPlus(), EpsilonAlpha2Beta1(), EpsilonGammaBox(), EpsilonPlusFlat()):
        r = LRP(mnist, composite).attribute(digits, 7)
        assert r.shape == digits.shape and torch.isfinite(r).all()
        # only biases (and ε) absorb relevance: totals stay close to the logit
        assert torch.allclose(r.flatten(1).sum(1), logits, rtol=0.25, atol=0.5)


def test_zbox_needs_bounds_for_a_layer_not_fed_by_the_input():
    net = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))  # first layer's input is relu(x)
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="ZBox\\(low=..., high=...\\)"):
        LRP(net, EpsilonGammaBox()).attribute(x, 0)
    r = LRP(net, EpsilonGammaBox(low=0.0, high=3.0)).attribute(x, 0)
    assert torch.isfinite(r).all()
    assert check_no_hooks(net) == []


def test_zbox_bounds_follow_reshaping_and_scaling():
    """GoogLeNet-style input transform (index, scale, shift, concatenate) before the first
    conv: the valid-range bounds are carried through it."""

    class Transformed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)

        def forward(self, x):
            a = torch.unsqueeze(x[:, 0], 1) * 0.5 - 1.0
            b = -2.0 * x[:, 1:2]
            return self.conv(torch.cat([a, b], 1)).flatten(1)

    net = Transformed()
    r = LRP(net, EpsilonGammaBox()).attribute(torch.rand(2, 2, 6, 6), 0)
    assert torch.isfinite(r).all()


# ---------------------------------------------------------------- Taylor
def max_net():
    """max(x1, x2) for x ≥ 0: ½ReLU(x1 − x2) + ½ReLU(x2 − x1) + ½ReLU(x1) + ½ReLU(x2)."""
    w1 = [[1, -1], [-1, 1], [1, 0], [0, 1]]
    return nn.Sequential(linear(w1), nn.ReLU(), linear(0.5 * torch.ones(1, 4)))


def test_deep_taylor_max_anchor():
    """x1 > x2: deep Taylor z⁺ gives ((2x1 − x2)/2, x2/2), sensitivity (1, 0), gradient ×
    input (x1, 0)."""
    net = max_net()
    x = t([3, 1], [5, 2])
    dt = DeepTaylor(net, first="zplus").attribute(x, 0)
    assert torch.allclose(dt, t([2.5, 0.5], [4.0, 1.0]), atol=1e-12)
    assert torch.allclose(dt.sum(1), x.max(1).values)
    st, delta = SimpleTaylor(net).attribute(x, 0, return_delta=True)
    assert torch.allclose(st, t([3, 0], [5, 0]))
    assert delta.abs().max() < 1e-12
    sens = GuidedBackprop(net).attribute(x, 0)  # the plain gradient here: all weights +
    assert torch.allclose(sens, t([1, 0], [1, 0]))


def test_simple_taylor_root_point(mnist, digits):
    root = mnist.fvis_info.normalize(torch.zeros(1, 1, 28, 28))
    r, delta = SimpleTaylor(mnist).attribute(digits, 2, root=root, return_delta=True)
    g = torch.autograd.functional.jacobian(lambda v: mnist(v)[:, 2].sum(), digits)
    assert torch.allclose(r, (digits - root) * g, atol=1e-6)
    r2 = SimpleTaylor(mnist).attribute(digits, 2, root=root, gradient_at="root")
    g0 = torch.autograd.functional.jacobian(
        lambda v: mnist(v)[:, 2].sum(), root.expand_as(digits).contiguous()
    )
    assert torch.allclose(r2, (digits - root) * g0, atol=1e-6)
    assert delta.shape == (3,)


def test_deep_taylor_bounded_input(mnist, digits):
    r = DeepTaylor(mnist).attribute(digits, 4)
    # z⁺ and zᴮ conserve: the total is the logit (stabilizer 1e-6 aside)
    assert torch.allclose(r.flatten(1).sum(1), mnist(digits)[:, 4], atol=1e-3)


# ---------------------------------------------------------------- Deconvnet / Guided
def test_guided_and_deconvnet_rules():
    """ReLU backward: Guided 1[z > 0]·max(g, 0), Deconvnet max(g, 0)."""
    l1 = linear([[1, -1], [-1, 1], [1, 1]], [0.0, 0.0, -10.0])
    l2 = linear([[1, -2, 3]])
    net = nn.Sequential(l1, nn.ReLU(), l2)
    x = t([2, 1])  # z = (1, -1, -7): only unit 0 active
    # gradient at the hidden layer g = (1, -2, 3)
    guided = GuidedBackprop(net).attribute(x, 0)  # (1, 0, 0) @ W1
    deconv = Deconvnet(net).attribute(x, 0)  # (1, 0, 3) @ W1
    assert torch.allclose(guided, t([1, -1]))
    assert torch.allclose(deconv, t([4, 2]))


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvnet])
def test_relu_fast_path_matches_the_general_rule(mnist, digits, method):
    """Plain ReLU takes a fast path (in place, no copy); Hardtanh(0, ∞) is the same function
    through the general ReLU-like path, so both must give the same map."""
    import copy

    other = copy.deepcopy(mnist)
    for name, m in list(other.named_modules()):
        if isinstance(m, nn.ReLU):
            parent, _, leaf = name.rpartition(".")
            setattr(other.get_submodule(parent), leaf, nn.Hardtanh(0.0, float("inf")))
    assert not any(isinstance(m, nn.ReLU) for m in other.modules())
    want, got = method(mnist).attribute(digits, 2), method(other).attribute(digits, 2)
    assert want.abs().sum() > 0
    assert torch.allclose(got, want, atol=1e-6)


# ---------------------------------------------------------------- hook machinery
class Functional(nn.Module):
    """The bundled CNN written with functional ReLUs, one reused ReLU module called four
    times, in-place activations and a functional max-pool."""

    def __init__(self, cnn: nn.Sequential, style: str):
        super().__init__()
        self.cnn, self.style = cnn, style
        self.relu = nn.ReLU(inplace=True)

    def act(self, x):
        if self.style == "functional":
            return F.relu(x)
        if self.style == "reused":
            return self.relu(x)
        return x.relu_()  # in-place Tensor method

    def forward(self, x):
        c = self.cnn
        x = self.act(c.conv1(x))
        x = F.max_pool2d(self.act(c.conv2(x)), 2)
        x = F.max_pool2d(self.act(c.conv3(x)), 2)
        return c.logits(self.act(c.fc1(x.flatten(1))))


class InPlaceArithmetic(nn.Module):
    """Scaling, shifting, in-place updates, a constant receiving an activation in place,
    reversed subtraction, a residual ``add_`` and ReLU6."""

    def __init__(self):
        super().__init__()
        self.fc, self.skip = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x) * 1.5
        y += 1
        y *= 2
        c = torch.ones_like(y)
        c += y
        z = -(2 - F.relu6(c) / 3)
        z.add_(self.skip(x))
        return z.relu()


def test_forward_values_unchanged_under_every_policy():
    from fvis import hooks
    from fvis.attribution import deeplift, guided, lrp

    torch.manual_seed(8)
    net, x = InPlaceArithmetic(), torch.randn(3, 4)
    want = net(x)
    policies = {
        "guided": (guided._GuidedPolicy(True), x),
        "deeplift": (deeplift._DeepLiftPolicy("reveal_cancel", 3), torch.cat([x, x.flip(0)])),
        "lrp": (lrp._LRPPolicy(EpsilonPlus(), "LRP"), x),
    }
    for name, (policy, inputs) in policies.items():
        acts = hooks.run(net, inputs.clone().requires_grad_(True), ["output"], policy)
        assert torch.allclose(acts["output"][:3], want, atol=1e-6), name
    for rule in DeepLift.RULES:
        _, delta = DeepLift(net, rule).attribute(x, 1, reference=x.flip(0), return_delta=True)
        assert delta.abs().max() < 1e-6


METHODS = {
    "deconvnet": lambda m: Deconvnet(m).attribute,
    "guided": lambda m: GuidedBackprop(m).attribute,
    "deeplift": lambda m: lambda x, t: DeepLift(m).attribute(x, t, reference=x.flip(0)),
    "revealcancel": lambda m: (
        lambda x, t: DeepLift(m, "reveal_cancel").attribute(x, t, reference=x.flip(0))
    ),
    "lrp": lambda m: LRP(m, EpsilonAlpha2Beta1()).attribute,
    "deeptaylor": lambda m: DeepTaylor(m).attribute,
}


@pytest.mark.parametrize("style", ["functional", "reused", "inplace"])
def test_functional_reused_and_inplace_relus_match_modules(mnist, digits, style):
    other = attach(Functional(mnist, style), mnist.fvis_info)
    for name, method in METHODS.items():
        want = method(mnist)(digits, 5)
        got = method(other)(digits, 5)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (style, name)
        assert check_no_hooks(other) == []


@pytest.mark.parametrize("name", list(METHODS))
def test_targets_int_per_item_and_objective(mnist, digits, name):
    method = METHODS[name](mnist)
    per_item = torch.tensor([1, 4, 9])
    a = method(digits, per_item)
    for i, k in enumerate(per_item.tolist()):  # each item explained for its own class
        if name in ("deeplift", "revealcancel"):
            continue  # the reference x.flip(0) couples items; checked by delta elsewhere
        single = method(digits[i : i + 1], k)
        assert torch.allclose(a[i : i + 1], single, atol=1e-6)
    hidden = method(digits, objectives.channel("conv3", 5))  # a hidden channel
    assert hidden.shape == digits.shape and torch.isfinite(hidden).all()
    predicted = method(digits, None)
    assert torch.allclose(predicted, method(digits, mnist(digits).argmax(1)))


def test_deeplift_explains_a_hidden_channel_exactly(mnist, digits):
    attr, delta = DeepLift(mnist, "reveal_cancel").attribute(
        digits, objectives.channel("conv3", 5), return_delta=True
    )
    assert delta.abs().max() < 1e-5


# ---------------------------------------------------------------- canonizers
def bn_net():
    torch.manual_seed(7)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2),
    )  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return net.eval()


def test_merge_batchnorm_output_unchanged_and_restored():
    net = bn_net()
    x = torch.randn(5, 3, 8, 8)
    before, out = snapshot(net), net(x)
    with MergeBatchNorm().apply(net, x) as pairs:
        assert pairs == [("0", "1"), ("3", "4"), ("7", "8")]
        assert torch.allclose(net(x), out, atol=1e-5)
        assert net[0].bias is not None  # a bias was added for the fold
    assert net[0].bias is None
    assert_clean(net, before)
    with pytest.raises(RuntimeError, match="boom"), MergeBatchNorm().apply(net, x):
        raise RuntimeError("boom")
    assert_clean(net, before)


def test_merge_batchnorm_skips_shared_and_training():
    net = bn_net()
    net[4].train()  # a BatchNorm in training mode is not folded
    x = torch.randn(2, 3, 8, 8)
    assert MergeBatchNorm().pairs(net, x) == [("0", "1"), ("7", "8")]

    class Fork(nn.Module):  # the conv output is also used elsewhere: not foldable
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2).eval()

        def forward(self, x):
            z = self.conv(x)
            return self.bn(z) + z

    assert MergeBatchNorm().pairs(Fork(), torch.randn(1, 1, 3, 3)) == []


def test_methods_restore_everything_after_an_exception():
    net = bn_net()
    x = torch.rand(2, 3, 8, 8)  # in the valid range (0, 1), deep Taylor's zᴮ box
    before = snapshot(net)
    flags = [p.requires_grad for p in net.parameters()]

    def boom(acts):
        raise RuntimeError("objective failed")

    failing = objectives.Objective(boom, ["output"], "boom")
    for method in (LRP(net), DeepLift(net, "reveal_cancel"), GuidedBackprop(net), DeepTaylor(net)):
        with pytest.raises(RuntimeError, match="objective failed"):
            method.attribute(x, failing)
        assert_clean(net, before)
        assert [p.requires_grad for p in net.parameters()] == flags


# ---------------------------------------------------------------- refusals
class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = GateBlock()
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.gate(self.fc(x)))


class GateBlock(nn.Module):
    def forward(self, x):
        return torch.div(x, torch.sigmoid(x))  # a quotient of two activations


def test_unsupported_operation_is_refused_with_the_module_name():
    net = Gated()
    x = torch.randn(2, 4)
    before = snapshot(net)
    for method in (LRP(net), DeepLift(net), DeepTaylor(net, first="w2")):
        with pytest.raises(UnsupportedOperation, match="torch.div.*'gate' \\(GateBlock\\)"):
            method.attribute(x, 0)
        assert_clean(net, before)
    # Guided Backprop has no rule to refuse the product, but no ReLU either: refused, as
    # its result would be the plain gradient
    with pytest.raises(UnsupportedOperation, match="no ReLU-like unit .*torch.sigmoid"):
        GuidedBackprop(net).attribute(x, 0)


def test_training_batchnorm_runs_in_eval_mode_and_torchscript_is_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2))
    net[1].running_mean.uniform_(-1, 1)
    before = snapshot(net)
    x = torch.randn(2, 3, 8, 8)
    for make in (LRP, DeepLift, lambda m: DeepLift(m, "reveal_cancel")):
        expected = make(net.eval()).attribute(x, None)
        net.train()
        assert torch.equal(make(net).attribute(x, None), expected)
        assert_clean(net, before)  # running statistics untouched
        assert net.training and net[1].training  # modes restored
    with warnings.catch_warnings():  # torch.jit.script is deprecated, still in use
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    with pytest.raises(UnsupportedOperation, match="TorchScript"):
        GuidedBackprop(scripted).attribute(torch.randn(2, 3), 0)
