"""Issue 11 items 15 (IG), 16, 18: IG's multiply_by_inputs, SmoothGrad noise relative to
each sample's range, and the Grad-CAM family's options — hand-computed numbers and the
peers' (captum, zennit, pytorch-grad-cam) where a definition is shared."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

from fvis.attribution import IntegratedGradients, LayerIntegratedGradients


def near(t: torch.Tensor, expected, atol: float = 1e-5) -> bool:
    return torch.allclose(t, torch.tensor(expected, dtype=t.dtype), atol=atol, rtol=0)


class SumOfSquares(nn.Module):
    """f(x) = Σ_i x_i², as a (B, 1) output."""

    def forward(self, x):
        return x.pow(2).flatten(1).sum(1, keepdim=True)


def test_ig_multiply_by_inputs_false_is_the_path_averaged_gradient():
    # From the zero baseline ∇f(αx) = 2αx, so ∫₀¹ ∇f dα = x (multiply_by_inputs=False) and
    # IG = x ⊙ x = x² (default); completeness Σ x² = f(x) − f(0) holds for both deltas.
    x = torch.tensor([[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]])
    model = SumOfSquares()
    ig = IntegratedGradients(model).attribute(x, 0, baselines=0.0, steps=4)
    assert near(ig, [[1.0, 4.0, 9.0], [0.25, 0.0, 16.0]])
    local = IntegratedGradients(model, multiply_by_inputs=False)
    g, delta = local.attribute(x, 0, baselines=0.0, steps=4, return_delta=True)
    assert near(g, [[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]])
    assert delta.abs().max().item() < 1e-5  # of (x − x′) ⊙ g, not of g
    # baseline 1: ∫ 2(1 + α(x − 1)) dα = x + 1
    g1 = local.attribute(x, 0, baselines=1.0, steps=4)
    assert near(g1, (x + 1).tolist())


def test_ig_multiply_by_inputs_false_equals_captum(mnist_model, mnist_digits):
    import captum.attr as captum_attr

    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:2])
    before = snapshot(mnist_model)
    ours = IntegratedGradients(mnist_model, multiply_by_inputs=False).attribute(
        x, labels[:2], baselines="black", steps=16, method="gausslegendre"
    )
    black = mnist_model.fvis_info.normalize(torch.zeros_like(images[:2]))
    ref = captum_attr.IntegratedGradients(mnist_model, multiply_by_inputs=False).attribute(
        x, black, target=labels[:2], n_steps=16, method="gausslegendre"
    )
    assert_clean(mnist_model, before)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_layer_ig_multiply_by_inputs_false():
    # layer "0" = 2x (a 1×1 conv), output = Σ layer²: F(A) = Σ A², ∫ ∂F/∂A = A from A′ = 0
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    model = nn.Sequential(conv, SumOfSquares())
    x = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 1, 2, 2)
    a = 2 * x
    local = LayerIntegratedGradients(model, multiply_by_inputs=False)
    g = local.attribute(x, 0, layer="0", baselines=0.0, steps=3)
    assert torch.allclose(g, a, atol=1e-5)
    full = LayerIntegratedGradients(model).attribute(x, 0, layer="0", baselines=0.0, steps=3)
    assert torch.allclose(full, a * a, atol=1e-5)


def test_smoothgrad_noise_relative_to_each_sample_hand_computed():
    # f = Σ x², gradient 2(x + ε): with n = 1 the noise is (SG / 2 − x), and its std per
    # sample is noise · (max − min) of that sample: 0.1 · 5 = 0.5 and 0.1 · 0.7 = 0.07
    from fvis.attribution import SmoothGrad

    x = torch.tensor([[[-3.0, 2.0, 0.0]], [[0.1, 0.8, 0.5]]])  # (2, 1, 3)
    sg = SmoothGrad(SumOfSquares()).attribute(
        x, 0, n=1, noise=0.1, relative_to="sample", generator=7
    )
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    eps = sg / 2 - x
    assert near((eps / z).flatten(1), [[0.5] * 3, [0.07] * 3], atol=1e-5)
    # the default is relative to the valid range [0, 1] of an unnormalized model: σ = 0.1
    sg = SmoothGrad(SumOfSquares()).attribute(x, 0, n=1, noise=0.1, generator=7)
    assert ((sg / 2 - x) / z).flatten().tolist() == pytest.approx([0.1] * 6, rel=1e-4)
    with pytest.raises(ValueError, match="relative_to must be 'valid'"):
        SmoothGrad(SumOfSquares()).attribute(x, 0, relative_to="global")


def test_smoothgrad_relative_to_sample_equals_zennit(mnist_model, mnist_digits):
    # zennit's SmoothGrad draws n_iter − 1 noisy copies from the global generator and adds
    # the noise-free gradient as the last one: (n + 1)·zennit − ∇f(x) = n·fvis
    import zennit.attribution as zennit_attr

    from fvis.attribution import Gradient, SmoothGrad

    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:2])
    n, seed = 5, 3
    ours = SmoothGrad(mnist_model).attribute(
        x, labels[:2], n=n, noise=0.2, relative_to="sample", generator=seed
    )
    onehot = torch.eye(10)[labels[:2]]
    torch.manual_seed(seed)
    with zennit_attr.SmoothGrad(mnist_model, noise_level=0.2, n_iter=n + 1) as attributor:
        _, theirs = attributor(x, onehot)
    plain = Gradient(mnist_model).attribute(x, labels[:2])
    scale = theirs.abs().max().item()
    assert torch.allclose(n * ours, (n + 1) * theirs - plain, atol=1e-5 * scale * n)


# ---------------------------------------------------------------- Grad-CAM family


def _gap_net():
    """conv 1×1 (1 → 2 channels: A0 = x, A1 = −x + 1) → GAP → linear W = [[2, −1], [0.5, 3]]."""
    conv = nn.Conv2d(1, 2, 1)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 1.0]))
        fc.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


X4 = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)


def test_gradcam_per_channel_terms_hand_computed():
    from fvis.attribution import GradCAM

    # ∂f0/∂A_k = W[0, k] / 4: terms (2/4)·x and (−1/4)·(1 − x)
    terms = GradCAM(_gap_net()).attribute(X4, 0, layer="0", per_channel=True)
    expected = [[[0.0, 0.5], [1.0, 1.5]], [[-0.25, 0.0], [0.25, 0.5]]]
    assert terms.shape == (1, 2, 2, 2)
    assert near(terms[0], expected, atol=1e-6)
    signed = GradCAM(_gap_net()).attribute(X4, 0, layer="0", relu=False)
    assert torch.allclose(terms.sum(1, keepdim=True), signed, atol=1e-6)
    assert signed.flatten().tolist() == pytest.approx([-0.25, 0.5, 1.25, 2.0], abs=1e-6)


def test_gradcam_refuses_layers_without_a_spatial_map():
    from fvis.attribution import GradCAM, GradCAMPlusPlus, GuidedGradCAM

    net = _gap_net()
    for method, name in ((GradCAM, "Grad-CAM"), (GradCAMPlusPlus, "Grad-CAM\\+\\+")):
        with pytest.raises(ValueError, match=rf"{name} needs .* '1' gives \(1, 2, 1, 1\)"):
            method(net).attribute(X4, 0, layer="1")  # after global pooling: 1×1
        with pytest.raises(ValueError, match=r"'2' gives \(1, 2\)"):
            method(net).attribute(X4, 0, layer="2")  # flattened
    with pytest.raises(ValueError, match="H·W > 1"):
        GuidedGradCAM(net).attribute(X4, 0, layer="3")
    with pytest.raises(ValueError, match="several layers .* relu=True"):
        GradCAM(net).attribute(X4, 0, layer=["0", "0"], relu=False)


def test_gradcam_attribute_to_layer_input_equals_captum(mnist_model, mnist_digits):
    from fvis.attribution import GradCAM

    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:3])
    before = snapshot(mnist_model)
    # relu3's input is conv3's output
    to_input = GradCAM(mnist_model).attribute(x, labels[:3], layer="relu3",
                                               attribute_to_layer_input=True)  # fmt: skip
    conv3 = GradCAM(mnist_model).attribute(x, labels[:3], layer="conv3")
    assert torch.allclose(to_input, conv3, atol=1e-6)
    assert not torch.allclose(
        to_input, GradCAM(mnist_model).attribute(x, labels[:3], layer="relu3")
    )
    import captum.attr as captum_attr

    ref = captum_attr.LayerGradCam(mnist_model, mnist_model.relu3).attribute(
        x, labels[:3], attribute_to_layer_input=True, relu_attributions=True
    )
    assert torch.allclose(to_input, ref, atol=1e-6 * (1 + ref.abs().max().item()))
    # captum's spelling of relu= is accepted with its meaning
    signed = GradCAM(mnist_model).attribute(x, labels[:3], layer="conv3", relu_attributions=False)
    assert torch.equal(
        signed, GradCAM(mnist_model).attribute(x, labels[:3], layer="conv3", relu=False)
    )
    assert (signed < 0).any()
    assert_clean(mnist_model, before)


def test_gradcam_layer_input_of_an_inplace_module_and_a_reused_one():
    import torchvision

    from fvis.attribution import GradCAM

    r18 = torchvision.models.resnet18(weights=None).eval()  # in-place ReLUs, relu called twice
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = snapshot(r18)
    a = GradCAM(r18).attribute(x, 1, layer="layer4.1.relu:1", attribute_to_layer_input=True)
    # the input of the block's second ReLU is bn2(conv2(·)) + identity: not rectified yet
    b = GradCAM(r18).attribute(x, 1, layer="layer4.1.relu:1")
    assert a.shape == b.shape == (1, 1, 2, 2) and not torch.allclose(a, b)
    assert_clean(r18, before)


def test_guided_gradcam_interpolation_equals_captum(mnist_model, mnist_digits):
    from fvis.attribution import GradCAM, GuidedBackprop, GuidedGradCAM

    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:2])
    near = GuidedGradCAM(mnist_model).attribute(x, labels[:2], layer="relu3",
                                                 interpolate_mode="nearest")  # fmt: skip
    cam = GradCAM(mnist_model).attribute(x, labels[:2], layer="relu3")  # 14×14
    guided = GuidedBackprop(mnist_model).attribute(x, labels[:2])
    # nearest from 14 to 28 px: each map value covers a 2×2 block
    assert torch.allclose(near, guided * cam.repeat_interleave(2, 2).repeat_interleave(2, 3))
    bilinear = GuidedGradCAM(mnist_model).attribute(x, labels[:2], layer="relu3")
    assert not torch.allclose(near, bilinear)
    import captum.attr as captum_attr

    for mode, ours in (("nearest", near), ("bilinear", bilinear)):
        ref = captum_attr.GuidedGradCam(mnist_model, mnist_model.relu3).attribute(
            x, labels[:2], interpolate_mode=mode
        )
        assert torch.allclose(ours, ref, atol=1e-6 * ref.abs().max().item()), mode


def test_gradcam_several_layers_equals_pytorch_grad_cam(mnist_model, mnist_digits):
    from fvis.attribution import GradCAM

    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:3])
    ours = GradCAM(mnist_model).attribute(x, labels[:3], layer=["relu2", "relu3"])
    assert ours.shape == (3, 1, 28, 28)
    # by hand: each map scaled to [0, 1] at its own resolution, upsampled, averaged
    from fvis.attribution.base import upsample

    parts = [GradCAM(mnist_model).attribute(x, labels[:3], layer=n) for n in ("relu2", "relu3")]
    lo, hi = [p.amin((1, 2, 3), True) for p in parts], [p.amax((1, 2, 3), True) for p in parts]
    scaled = [upsample((p - a) / (b - a + 1e-7), (28, 28)) for p, a, b in zip(parts, lo, hi)]
    assert torch.allclose(ours, (scaled[0] + scaled[1]) / 2, atol=1e-6)
    assert ours[2].amax() < 0.5  # item 2: relu2's map is 0 everywhere, relu3's has max 1
    import pytorch_grad_cam as cam_mod
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer_model = copy.deepcopy(mnist_model).requires_grad_(True)  # it needs weight gradients
    layers = [peer_model.relu2, peer_model.relu3]
    with cam_mod.GradCAM(model=peer_model, target_layers=layers) as reference:
        ref = reference(x, [ClassifierOutputTarget(int(k)) for k in labels[:3]])
    # pytorch-grad-cam scales the average to [0, 1] once more
    flat = ours.flatten(1)
    rescaled = (flat - flat.amin(1, True)) / (flat.amax(1, True) - flat.amin(1, True) + 1e-7)
    assert torch.allclose(rescaled, torch.from_numpy(ref).flatten(1), atol=1e-5)
