"""Gradient methods, Integrated Gradients, SmoothGrad family, CAM family, layer
attribution: exact values on hand-set networks, reference cases from the papers,
axioms on the bundled model, and a sweep over torchvision architectures."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis import objectives
from fvis.attribution.base import Attribution
from fvis.attribution.baselines import baseline, make_baselines
from fvis.attribution.cam import CAM, GradCAM, GradCAMPlusPlus, GuidedGradCAM
from fvis.attribution.gradient import Gradient, GradientXInput, Saliency, Sensitivity
from fvis.attribution.integrated import IntegratedGradients, quadrature
from fvis.attribution.layer import (
    LayerGradientXActivation,
    LayerIntegratedGradients,
    conv_layer,
    top_channels,
)
from fvis.attribution.smooth import SmoothGrad, SmoothGradSquared, VarGrad
from fvis.hooks import LayerError, check_no_hooks
from fvis.models.metadata import ModelInfo, attach

# ---------------------------------------------------------------- tiny hand-set nets


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


relu = torch.relu
# IG paper §2 / anchors: f = ReLU(ReLU(x1) − 1 − ReLU(x2)) and an equivalent network.
F_IG1 = Fn(lambda x: relu(relu(x[:, :1]) - 1 - relu(x[:, 1:])))
F_IG2 = Fn(lambda x: relu(relu(x[:, :1] - 1) - relu(x[:, 1:])))
# DeepLIFT §3.6: min(i1, i2) = i1 − ReLU(i1 − i2).
F_MIN = Fn(lambda x: x[:, :1] - relu(x[:, :1] - x[:, 1:]))


def max_net() -> nn.Module:
    """max(x1, x2) for x ≥ 0 as a two-layer ReLU net (Montavon et al. 2017):
    ½ReLU(x1 + x2) + ½ReLU(x1 − x2) + ½ReLU(x2 − x1)."""
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]]))
        net[2].weight.fill_(0.5)
    return net


def cam_net() -> nn.Module:
    """1×2×2 input → 1×1 conv (2 channels: x, 3 − x) → ReLU → flatten → linear (1 output).

    At x = [[1, 2], [0.5, 4]]: A0 = [[1, 2], [0.5, 4]], A1 = [[2, 1], [2.5, 0]];
    ∂f/∂A0 = [[1, 0], [2, 1]], ∂f/∂A1 = [[0, 1], [−1, −2]]; f = 6.
    """
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 2, 1),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            head=nn.Linear(8, 1),
        )
    )
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net.conv.bias.copy_(torch.tensor([0.0, 3.0]))
        net.head.weight.copy_(torch.tensor([[1.0, 0, 2, 1, 0, 1, -1, -2]]))
        net.head.bias.fill_(1.5)
    return net.eval()


CAM_X = torch.tensor([[[[1.0, 2.0], [0.5, 4.0]]]])


def gap_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 6, 3, padding=1),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            drop=nn.Dropout(0.5),
            fc=nn.Linear(6, 4),
        )
    ).eval()


# ---------------------------------------------------------------- gradient methods


def test_gradient_methods_exact_on_hand_net():
    net = cam_net()
    g = torch.tensor([[[[1.0, -1.0], [3.0, 1.0]]]])  # W0·[x > 0] − W1·[3 − x > 0]
    assert torch.equal(Gradient(net).attribute(CAM_X, 0), g)
    assert torch.equal(Saliency(net).attribute(CAM_X, 0), g.abs())
    assert torch.equal(Sensitivity(net).attribute(CAM_X, 0), g**2)
    assert torch.equal(GradientXInput(net).attribute(CAM_X, 0), CAM_X * g)


def test_max_net_sensitivity_and_gradient_x_input():
    x = torch.tensor([[3.0, 1.0], [5.0, 2.0]])
    net = max_net()
    assert torch.allclose(net(x).squeeze(1), x.max(1).values)
    assert torch.equal(Sensitivity(net).attribute(x, 0), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(GradientXInput(net).attribute(x, 0), torch.tensor([[3.0, 0.0], [5.0, 0.0]]))


def test_gradient_x_input_is_simple_taylor_at_root_0(mnist_model, mnist_digits):
    from fvis.attribution import taylor

    x = mnist_model.fvis_info.normalize(mnist_digits[0][:2])
    ours = GradientXInput(mnist_model).attribute(x, 3)
    at_zero = taylor.SimpleTaylor(mnist_model).attribute(x, 3, root=0.0)  # the zero model input
    assert torch.allclose(ours, at_zero, atol=1e-6)


def test_min_example_ig_and_gradient_x_input_give_0_1():
    x = torch.tensor([[3.0, 1.0]])
    assert torch.equal(GradientXInput(F_MIN).attribute(x, 0), torch.tensor([[0.0, 1.0]]))
    ig = IntegratedGradients(F_MIN).attribute(x, 0, baselines="zero", steps=20)
    assert torch.allclose(ig, torch.tensor([[0.0, 1.0]]), atol=1e-6)


def test_gradient_targets_and_internal_batch_size(mnist_model, mnist_digits):
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:5])
    pred = mnist_model(x).argmax(1)
    m = Gradient(mnist_model)
    full = m.attribute(x)  # None: predicted classes
    assert torch.allclose(full, m.attribute(x, pred))
    assert torch.allclose(full, m.attribute(x, pred, internal_batch_size=2), atol=1e-6)
    one = m.attribute(x[:1], int(pred[0]))
    assert torch.allclose(one, full[:1], atol=1e-6)
    # a hidden channel as target: the gradient of mean A[conv3, 5]
    obj = objectives.channel("conv3", 5)
    xg = x.clone().requires_grad_(True)
    value = fvis.hooks.capture(mnist_model, xg, ["conv3"])["conv3"][:, 5].mean((1, 2))
    (expected,) = torch.autograd.grad(value.sum(), xg)
    assert torch.allclose(m.attribute(x, obj), expected, atol=1e-6)


def test_bad_target_errors_are_clear_and_leave_model_clean(mnist_model):
    before = snapshot(mnist_model)
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(IndexError, match="out of range"):
        Gradient(mnist_model).attribute(x, 10)
    with pytest.raises(ValueError, match="3 classes for a batch of 2"):
        IntegratedGradients(mnist_model).attribute(x, torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integers"):
        Saliency(mnist_model).attribute(x, torch.tensor([0.5, 1.0]))
    assert_clean(mnist_model, before)


# ---------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize("method", ["riemann_middle", "riemann_trapezoid", "gausslegendre"])
def test_ig_reference_case_and_implementation_invariance(method):
    x = torch.tensor([[3.0, 1.0]])
    a1, d1 = IntegratedGradients(F_IG1).attribute(
        x, 0, baselines="zero", steps=50, method=method, return_delta=True
    )
    a2 = IntegratedGradients(F_IG2).attribute(x, 0, baselines="zero", steps=50, method=method)
    assert torch.allclose(a1, torch.tensor([[1.5, -0.5]]), atol=1e-5)
    assert math.isclose(a1.sum().item(), a2.sum().item(), abs_tol=1e-6)  # both f(x) − f(0) = 1
    assert math.isclose(a2.sum().item(), 1.0, abs_tol=1e-5)
    assert abs(d1.item()) < 1e-5


def test_quadrature_rules():
    cube = Fn(lambda x: x.pow(3).sum(1, keepdim=True))  # IG from 0 is exactly x_i³
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    ig = IntegratedGradients(cube)
    exact = x**3
    gl = ig.attribute(x, 0, baselines=0.0, steps=3, method="gausslegendre")
    assert torch.allclose(gl, exact, atol=1e-12)  # Gauss–Legendre: exact for degree ≤ 5
    errors = []
    for steps in (5, 9, 17):  # trapezoid on 3α²: error x³ / (2 (m − 1)²)
        tr = ig.attribute(x, 0, baselines=0.0, steps=steps, method="riemann_trapezoid")
        assert torch.allclose(tr - exact, exact / (2 * (steps - 1) ** 2), atol=1e-12)
        errors.append((tr - exact).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    for method in ("riemann_left", "riemann_right", "riemann_middle", "gausslegendre"):
        a, w = quadrature(method, 7)
        assert math.isclose(w.sum().item(), 1.0) and a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="known"):
        quadrature("simpson", 10)


def test_ig_completeness_on_bundled_model(mnist_model, mnist_digits):
    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:2])
    ig = IntegratedGradients(mnist_model)
    with torch.no_grad():
        black = mnist_model.fvis_info.normalize(torch.zeros_like(images[:2]))
        gap = (mnist_model(x) - mnist_model(black)).gather(1, labels[:2, None]).squeeze(1)
    rel = {}
    for steps in (8, 32, 256):
        _, delta = ig.attribute(
            x, labels[:2], steps=steps, method="riemann_trapezoid", return_delta=True
        )
        rel[steps] = (delta.abs() / gap.abs()).max().item()
    assert rel[8] > rel[32] > rel[256]
    assert rel[256] < 0.01, rel
    trap = ig.attribute(x, labels[:2], steps=256, method="riemann_trapezoid")
    gl = ig.attribute(x, labels[:2], steps=64, method="gausslegendre")
    assert (gl - trap).abs().sum() / trap.abs().sum() < 0.02


def test_ig_internal_batch_size_and_objective_targets(mnist_model, mnist_digits):
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:3])
    ig = IntegratedGradients(mnist_model)
    one = ig.attribute(x, steps=10, internal_batch_size=10_000)
    for size in (7, 3, 1):  # chunks straddling items and steps
        assert torch.allclose(ig.attribute(x, steps=10, internal_batch_size=size), one, atol=1e-6)
    two = dict(baselines="uniform", n_baselines=2, generator=1, steps=10)  # 6 rows a step
    whole = ig.attribute(x, internal_batch_size=12, **two)  # whole steps per chunk
    assert torch.allclose(ig.attribute(x, internal_batch_size=4, **two), whole, atol=1e-6)
    # a hidden channel, and a per-item objective on a batch position, through the chunks
    obj = objectives.channel("conv3", 7)
    a, delta = ig.attribute(x, obj, steps=64, return_delta=True)
    assert delta.abs().max() < 2e-3 * a.abs().sum(dim=(1, 2, 3)).max()
    only_1 = objectives.channel("conv3", 7, batch=1)
    b = ig.attribute(x, only_1, steps=64, internal_batch_size=6)
    assert torch.allclose(b[1], a[1], atol=1e-6) and b[0].abs().max() == 0


def test_baselines(mnist_model, mnist_digits):
    info = mnist_model.fvis_info
    img = mnist_digits[0][:2]
    x = info.normalize(img)
    lo, hi = info.normalize(torch.zeros(1, 1, 1, 1)), info.normalize(torch.ones(1, 1, 1, 1))
    black = make_baselines("black", x, info)[0]
    assert torch.allclose(black, lo.expand_as(x)) and torch.equal(
        black, make_baselines("zero", x, info)[0]
    )
    far = make_baselines("max_distance", x, info)[0]
    assert ((far == lo) | (far == hi)).all()
    assert ((far - x).abs() >= (hi - lo) / 2 - 1e-6).all()
    g = torch.Generator().manual_seed(1)
    uni = make_baselines("uniform", x, info, g, n=4)
    assert uni.shape == (4, *x.shape) and (uni >= lo).all() and (uni <= hi).all()
    assert not torch.equal(uni[0], uni[1])
    gauss = make_baselines(baseline("gaussian", sigma=0.1), x, info, g, n=2)
    assert (gauss >= lo - 1e-6).all() and (gauss <= hi + 1e-6).all()
    assert (gauss - x).std() < 0.2 * (hi - lo).item()
    blur = make_baselines(baseline("blur", sigma=2.0), x, info)[0]
    tv = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().sum()  # noqa: E731
    assert tv(blur) < 0.5 * tv(x) and torch.allclose(blur.mean(), x.mean(), atol=0.05)
    assert make_baselines(0.5, x, info).unique().item() == 0.5
    assert torch.equal(make_baselines(x[:1], x, info)[0], x[:1].expand_as(x))
    assert make_baselines(torch.stack([x, x]), x, info).shape == (2, *x.shape)
    custom = make_baselines(lambda t, gen: t * 0 - 1, x, info, n=1)
    assert custom.shape == (1, *x.shape) and (custom == -1).all()
    with pytest.raises(ValueError, match="max_distance"):
        make_baselines("mean", x, info)
    with pytest.raises(ValueError, match="broadcast"):
        make_baselines(torch.zeros(3, 5), x, info)
    # random baselines: averaged, delta against the mean, reproducible from a seed
    ig = IntegratedGradients(mnist_model)
    a, d = ig.attribute(
        x, 3, baselines="uniform", n_baselines=3, steps=32, return_delta=True, generator=5
    )
    assert torch.equal(
        a, ig.attribute(x, 3, baselines="uniform", n_baselines=3, steps=32, generator=5)
    )
    assert not torch.equal(
        a, ig.attribute(x, 3, baselines="uniform", n_baselines=3, steps=32, generator=6)
    )
    assert d.abs().max() < 0.05 * a.abs().sum(dim=(1, 2, 3)).max()


# ---------------------------------------------------------------- SmoothGrad family


class Echo(Attribution):
    """A stand-in method whose attribution is its (noisy) input: shows the noise."""

    def attribute(self, inputs, target=None):
        return inputs.clone()


def test_smoothgrad_noise_semantics(mnist_model):
    x = torch.zeros(1, 1, 4, 4)
    sigma = 0.2 / 0.3081  # noise=0.2 of the valid range [−.1307/.3081, .8693/.3081]
    mean = SmoothGrad(Echo(mnist_model)).attribute(x, 0, n=400, noise=0.2, generator=0)
    var = VarGrad(Echo(mnist_model)).attribute(x, 0, n=400, noise=0.2, generator=0)
    sq = SmoothGradSquared(Echo(mnist_model)).attribute(x, 0, n=400, noise=0.2, generator=0)
    assert mean.abs().max() < 4 * sigma / 20  # 4 standard errors
    assert abs(var.mean().item() / sigma**2 - 1) < 0.05
    assert torch.allclose(sq, var + mean**2, rtol=1e-5)
    lo, hi = mnist_model.fvis_info.valid_range(x)
    clipped = SmoothGrad(Echo(mnist_model)).attribute(x, 0, n=50, noise=1.0, clip=True, generator=0)
    assert (clipped >= lo).all() and (clipped <= hi).all()


def test_smoothgrad_wraps_any_method(mnist_model, mnist_digits):
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:3])
    sal = Saliency(mnist_model)
    assert torch.allclose(SmoothGrad(sal).attribute(x, noise=0.0, n=3), sal.attribute(x))
    sg = SmoothGrad(mnist_model)  # a model: smooths the plain gradient
    a = sg.attribute(x, 4, n=6, generator=3)
    for size in (4, 1):  # same noise whatever the chunking; sums may differ in the last bit
        b = sg.attribute(x, 4, n=6, generator=3, internal_batch_size=size)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(a, sg.attribute(x, 4, n=6, generator=4))
    ig = SmoothGrad(IntegratedGradients(mnist_model)).attribute(x, 4, n=2, steps=8, generator=0)
    assert ig.shape == x.shape and torch.isfinite(ig).all()
    cam = VarGrad(GradCAM(mnist_model)).attribute(x, 4, n=3, upsample=True, generator=0)
    assert cam.shape == (3, 1, 28, 28) and (cam >= 0).all()
    assert (SmoothGradSquared(Gradient(mnist_model)).attribute(x, 4, n=3) >= 0).all()


# ---------------------------------------------------------------- CAM family


def test_gradcam_and_gradcam_plus_plus_hand_values():
    net = cam_net()
    assert conv_layer(net, CAM_X) == "relu"
    # α = mean ∂f/∂A = (1, −0.5): A0 − ½A1 = [[0, 1.5], [−0.75, 4]]
    signed = torch.tensor([[[[0.0, 1.5], [-0.75, 4.0]]]])
    assert torch.allclose(GradCAM(net).attribute(CAM_X, 0, relu=False), signed)
    assert torch.allclose(GradCAM(net).attribute(CAM_X, 0), signed.clamp(min=0))
    # eq. 19: ΣA0 = 7.5, ΣA1 = 5.5; α0 = 1/(2 + 7.5) at g = 1, 4/(8 + 7.5·8) at g = 2,
    # w0 = 2/9.5 + 2·4/68 = 106/323; α1 = 1/(2 + 5.5) at the one g > 0, w1 = 2/15.
    w0, w1 = 106 / 323, 2 / 15
    a0 = torch.tensor([[1.0, 2.0], [0.5, 4.0]])
    a1 = torch.tensor([[2.0, 1.0], [2.5, 0.0]])
    expected = (w0 * a0 + w1 * a1).view(1, 1, 2, 2)
    pp = GradCAMPlusPlus(net).attribute(CAM_X, 0)
    assert torch.allclose(pp, expected, atol=1e-6)
    scaled = GradCAMPlusPlus(net).attribute(CAM_X, 0, paper_scale=True)
    assert torch.allclose(scaled, expected * math.exp(6.0), rtol=1e-5)
    up = GradCAM(net).attribute(CAM_X, 0, upsample=True)
    assert up.shape == (1, 1, 2, 2)


def test_gradcam_plus_plus_matches_higher_derivatives_of_exp_score():
    """α = Y'' / (2Y'' + ΣA·Y''') with Y = exp(f), derivatives by autograd (eq. 10)."""
    net = cam_net()
    a = fvis.hooks.capture(net, CAM_X, ["relu"])["relu"].detach()
    head = lambda t: torch.exp(net.head(t.flatten(1)))[:, 0]  # noqa: E731
    d1, d2, d3 = torch.zeros_like(a), torch.zeros_like(a), torch.zeros_like(a)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in a.shape[1:]]):
        e = torch.zeros_like(a)
        e[(0, *idx)] = 1

        def y(t, e=e):
            return head(a + t * e).sum()

        t = torch.zeros((), requires_grad=True)
        (g1,) = torch.autograd.grad(y(t), t, create_graph=True)
        (g2,) = torch.autograd.grad(g1, t, create_graph=True)
        (g3,) = torch.autograd.grad(g2, t)
        d1[(0, *idx)], d2[(0, *idx)], d3[(0, *idx)] = g1, g2, g3
    denom = 2 * d2 + a.sum((2, 3), keepdim=True) * d3
    alpha = torch.where(denom != 0, d2 / denom, torch.zeros_like(d2))
    w = (alpha * d1.clamp(min=0)).sum((2, 3), keepdim=True)
    paper = (w * a).sum(1, keepdim=True).clamp(min=0)
    ours = GradCAMPlusPlus(net).attribute(CAM_X, 0, paper_scale=True)
    assert torch.allclose(ours, paper, rtol=1e-5)


def test_cam_equals_gradcam_on_gap_linear_nets():
    net = gap_net()
    x = torch.randn(3, 3, 8, 8)
    cam = CAM(net).attribute(x, torch.tensor([0, 2, 3]))
    grad = GradCAM(net).attribute(x, torch.tensor([0, 2, 3]), relu=False)
    assert torch.allclose(cam, grad * 64, atol=1e-5)  # ∂f/∂A = W / (h·w)
    with torch.no_grad():  # mean_ij M_c + b_c = f_c
        f = net(x)[torch.arange(3), torch.tensor([0, 2, 3])]
    assert torch.allclose(cam.mean((1, 2, 3)) + net.fc.bias[[0, 2, 3]], f, atol=1e-5)
    with pytest.raises(ValueError, match="Objective"):
        CAM(net).attribute(x, objectives.channel("conv", 1))


def test_cam_refuses_non_gap_networks(mnist_model):
    with pytest.raises(ValueError, match="global average pool"):
        CAM(mnist_model).attribute(torch.zeros(1, 1, 28, 28), 3)
    net = nn.Sequential(gap_net(), nn.Softmax(1))
    with pytest.raises(ValueError, match="something follows it"):
        CAM(net).attribute(torch.zeros(1, 3, 8, 8), 1)


def test_layer_defaults_and_names(mnist_model):
    import torchvision

    assert conv_layer(mnist_model, torch.zeros(1, 1, 28, 28)) == "relu3"
    r18 = fvis.load_model("torchvision:resnet18", weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    assert conv_layer(r18, x) == "layer4"
    assert isinstance(r18, torchvision.models.ResNet)
    before = snapshot(r18)
    with pytest.raises(LayerError, match="layer1.0.relu:1"):
        GradCAM(r18).attribute(x, 1, layer="layer1.0.relu")
    m = GradCAM(r18).attribute(x, 1, layer="layer1.0.relu:1", upsample=True)
    assert m.shape == (1, 1, 64, 64) and torch.isfinite(m).all()
    with pytest.raises(ValueError, match="spatial"):
        GradCAM(r18).attribute(x, 1, layer="fc")
    assert_clean(r18, before)


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(mnist_model, mnist_digits):
    from fvis.attribution.guided import GuidedBackprop

    x = mnist_model.fvis_info.normalize(mnist_digits[0][:2])
    ggc = GuidedGradCAM(mnist_model).attribute(x, 3, layer="relu2")
    cam = GradCAM(mnist_model).attribute(x, 3, layer="relu2", upsample=True)
    assert ggc.shape == x.shape
    assert torch.allclose(ggc, GuidedBackprop(mnist_model).attribute(x, 3) * cam, atol=1e-6)


# ---------------------------------------------------------------- layer attribution


def test_layer_gradient_x_activation_sums_to_output_on_bias_free_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(2, 4, 3, bias=False),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 4 * 4, 5, bias=False),
        )
    )
    x = torch.randn(3, 2, 6, 6)
    r = LayerGradientXActivation(net).attribute(x, 2, layer="relu")
    assert r.shape == (3, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(r.sum((1, 2, 3)), net(x)[:, 2], atol=1e-5)
    per_c = LayerGradientXActivation(net).attribute(x, 2, layer="relu", reduce="channel")
    per_p = LayerGradientXActivation(net).attribute(
        x, 2, layer="relu", reduce="position", upsample=True
    )
    assert torch.allclose(per_c, r.sum((2, 3)), atol=1e-6) and per_p.shape == (3, 1, 6, 6)


def test_layer_integrated_gradients_completeness(mnist_model, mnist_digits):
    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:2])
    lig = LayerIntegratedGradients(mnist_model)
    r, delta = lig.attribute(x, labels[:2], layer="pool1", steps=64, return_delta=True)
    assert r.shape == (2, 32, 14, 14)
    with torch.no_grad():
        black = mnist_model.fvis_info.normalize(torch.zeros_like(images[:2]))
        gap = (mnist_model(x) - mnist_model(black)).gather(1, labels[:2, None]).squeeze(1)
    # pool1 cuts the network, so F(A) − F(A′) = f(x) − f(x′)
    assert torch.allclose(r.sum((1, 2, 3)), gap, rtol=0.02, atol=0.02)
    assert (delta.abs() < 0.01 * gap.abs()).all()
    same = lig.attribute(x, labels[:2], layer="pool1", steps=64, internal_batch_size=5)
    assert torch.allclose(same, r, atol=1e-5)


def test_top_channels(mnist_model, mnist_digits):
    # hand-set: channel c is w_c·x (x = 1), the head Σ_c v_c·mean(a_c); so the channel's
    # gradient × activation summed over positions is R_c = w_c·v_c = (1, −3, 6, 2)
    net = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 1, bias=False))  # fmt: skip
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1))
        net[4].weight.copy_(torch.tensor([[1.0, -1.5, 2.0, 0.5]]))
    attach(net, ModelInfo(input_size=(1, 2, 2), mean=(0.0,), std=(1.0,)))
    top = top_channels(net, torch.ones(1, 1, 2, 2), 0, "1", k=2)
    assert top.indices.tolist() == [[2, 3]] and top.values.tolist() == [[6.0, 2.0]]
    by_abs = top_channels(net, torch.ones(1, 1, 2, 2), 0, "1", k=2, absolute=True)
    assert by_abs.indices.tolist() == [[2, 1]] and by_abs.values.tolist() == [[6.0, -3.0]]
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:2])
    ig = top_channels(mnist_model, x, 3, "relu3", k=3, method="integrated_gradients", steps=8)
    assert ig.indices.shape == (2, 3)


# ---------------------------------------------------------------- architecture sweep

SWEEP_MODELS = {
    "fvis:mnist": {},
    "torchvision:vgg16": {},
    "torchvision:resnet18": {},
    "torchvision:googlenet": {"aux_logits": False, "init_weights": True},
    "torchvision:mobilenet_v2": {},
    "torchvision:densenet121": {},
}
# CAM needs GAP → one linear layer; these architectures are refused with a ValueError.
CAM_REFUSED = {"fvis:mnist", "torchvision:vgg16", "torchvision:densenet121"}


def sweep_methods(model):
    m = model
    methods = {
        "gradient": lambda x, t: Gradient(m).attribute(x, t),
        "saliency": lambda x, t: Saliency(m).attribute(x, t),
        "sensitivity": lambda x, t: Sensitivity(m).attribute(x, t),
        "gradient_x_input": lambda x, t: GradientXInput(m).attribute(x, t),
        "ig": lambda x, t: IntegratedGradients(m).attribute(x, t, steps=3, baselines="blur"),
        "smoothgrad": lambda x, t: SmoothGrad(Saliency(m)).attribute(x, t, n=2, generator=0),
        "smoothgrad2": lambda x, t: SmoothGradSquared(m).attribute(x, t, n=2, generator=0),
        "vargrad": lambda x, t: VarGrad(GradientXInput(m)).attribute(x, t, n=2, generator=0),
        "cam": lambda x, t: CAM(m).attribute(x, t, upsample=True),
        "gradcam": lambda x, t: GradCAM(m).attribute(x, t, upsample=True),
        "gradcam++": lambda x, t: GradCAMPlusPlus(m).attribute(x, t, upsample=True),
        "layer_gxa": lambda x, t: LayerGradientXActivation(m).attribute(
            x, t, reduce="position", upsample=True
        ),
        "layer_ig": lambda x, t: LayerIntegratedGradients(m).attribute(
            x, t, steps=3, reduce="position", upsample=True
        ),
        "guided_gradcam": lambda x, t: GuidedGradCAM(m).attribute(x, t),
    }
    return methods


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(SWEEP_MODELS))
def test_sweep_every_method_on_every_architecture(spec):
    torch.manual_seed(0)
    if spec.startswith("fvis:"):
        model = fvis.load_model(spec)
        x = torch.randn(2, 1, 28, 28)
    else:
        model = fvis.load_model(spec, weights=None, **SWEEP_MODELS[spec])
        # 64 px; VGG-16 (15 GFLOPs at 224 px) at 32 px, where its last conv block is 2×2
        # and its `features` output 1×1, so the CAM layer default falls back to features.29
        x = torch.randn(2, 3, *((32, 32) if spec.endswith("vgg16") else (64, 64)))
    before = snapshot(model)
    # Comparing VGG-16's 138 M weights takes ~0.5 s; check them after each loop instead
    # (a changed weight stays changed), and the hooks after every call.
    every_call = not spec.endswith("vgg16")

    def check():
        assert check_no_hooks(model) == []
        if every_call:
            assert_clean(model, before)

    target = torch.tensor([1, 7])
    for name, run in sweep_methods(model).items():
        if name == "cam" and spec in CAM_REFUSED:
            with pytest.raises(ValueError, match="global average pool"):
                run(x, target)
        else:
            out = run(x, target)
            c = x.shape[1] if out.shape[1] != 1 else 1
            assert out.shape == (2, c, *x.shape[2:]), (name, out.shape)
            assert torch.isfinite(out).all(), name
        check()
    assert_clean(model, before)
    for run in sweep_methods(model).values():  # a bad target: clear error, clean model
        with pytest.raises((IndexError, ValueError), match="out of range|global average pool"):
            run(x, torch.tensor([1, 5000]))
        check()
    assert_clean(model, before)


def test_ig_on_channels_last_inputs():
    """Gradients of channels_last inputs come back strided; the chunk reduction copes."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).eval()
    x = torch.rand(3, 3, 6, 6)
    cl = x.contiguous(memory_format=torch.channels_last)
    ig = IntegratedGradients(net)
    want = ig.attribute(x, 1, steps=5, baselines=0.5, internal_batch_size=6)
    assert torch.allclose(ig.attribute(cl, 1, steps=5, baselines=0.5, internal_batch_size=6), want)
