"""Layouts: units, layer listings and CAMs mean the feature dimension of NCHW, channels-last
and token activations (exact numbers on hand-set models; pytorch-grad-cam on ViT/Swin)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import assert_clean, snapshot
from pytorch_grad_cam import GradCAM as PGCGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.ops.misc import Permute

import fvis
from fvis import hooks
from fvis import objectives as O
from fvis.attribution import GradCAM, LayerGradientXActivation, LayerIntegratedGradients
from fvis.attribution.layer import default_layer
from fvis.hooks import Layout
from fvis.models.metadata import ModelInfo, attach
from fvis.recipes.recipe import _counts
from fvis.recipes.units import UnitError, parse_unit, parse_units


class TinyTokens(nn.Module):
    """1×4×4 image → 2×2 patches of 2×2 px → tokens (B, 1 + 4, 3): class token first.
    Patch features: d0 = sum of the patch, d1 = its top-left pixel, d2 = 5 (a bias)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 3, 2, stride=2)
        self.cls_token = nn.Parameter(torch.tensor([[[100.0, 200.0, 300.0]]]))
        self.mix = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.patch.weight.zero_()
            self.patch.weight[0] = 1
            self.patch.weight[1, 0, 0, 0] = 1
            self.patch.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
            self.mix.weight.copy_(torch.eye(3))
            self.mix.bias.zero_()
            self.head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, 4, 3), patches row-major
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1)
        return self.head(self.mix(t)[:, 0])


class TinyNHWC(nn.Module):
    """1×2×3 image → 1×1 conv (x, 2x, −x) → channels last → Linear: d0 = x, d1 = 3x →
    mean over positions → Linear head ``W``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1, bias=False)
        self.last = Permute([0, 2, 3, 1])
        self.lin = nn.Linear(3, 2, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0, -1.0]).view(3, 1, 1, 1))
            self.lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]))
            self.head.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 1.0]]))

    def forward(self, x):
        return self.head(self.lin(self.last(self.conv(x))).mean((1, 2)))


def _tokens():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    return attach(TinyTokens(), ModelInfo(input_size=(1, 4, 4))), x


def _nhwc():
    return attach(TinyNHWC(), ModelInfo(input_size=(1, 2, 3))), torch.arange(6.0).view(1, 1, 2, 3)


def _value(model, x, objective):
    return objective(hooks.capture(model, x, objective.layers)).item()


def test_tokens_layers_report_features_grid_and_layout():
    model, _ = _tokens()
    rows = {r.name: r for r in fvis.layers(model)}
    mix = rows["mix"]
    assert mix.shape == (5, 3) and mix.layout == Layout("tokens", 1, (2, 2))
    assert (mix.features, mix.channels, mix.grid, str(mix.layout)) == (3, 3, (2, 2), "tokens 1+2×2")
    assert rows["patch"].layout == Layout("NCHW") and rows["patch"].grid == (2, 2)
    assert rows["output"].features == 2 and rows["output"].grid == ()


def test_tokens_channel_and_neuron_read_embedding_dims_over_patches():
    model, x = _tokens()
    before = snapshot(model)
    # patches (row-major): sums 10, 18, 42, 50; top-left pixels 0, 2, 8, 10
    assert _value(model, x, O.channel("mix", 0)) == 30.0  # class token 100 left out
    assert _value(model, x, O.channel("mix", 1)) == 5.0
    assert _value(model, x, O.channel("mix", 2)) == 5.0
    assert _value(model, x, O.neuron("mix", 0, x=1, y=0)) == 18.0
    assert _value(model, x, O.neuron("mix", 1, x=0, y=1)) == 8.0
    assert _value(model, x, O.neuron("mix", 0)) == 50.0  # centre of 2×2: (1, 1)
    assert _value(model, x, parse_unit("mix[0]@(0,1)").objective()) == 42.0
    assert _value(model, x, O.direction("mix", [1.0, -1.0, 0.0])) == 25.0
    with pytest.raises(IndexError, match="with 3 channels"):
        _value(model, x, O.channel("mix", 3))
    with pytest.raises(IndexError, match="outside layer 'mix' of size 2×2"):
        _value(model, x, O.neuron("mix", 0, x=2, y=0))
    assert_clean(model, before)


def test_unit_specs_count_features():
    model, _ = _tokens()
    assert [u.index for u in parse_units("mix[*]", **_counts(model))] == [0, 1, 2]
    with pytest.raises(UnitError, match="out of range"):
        parse_units("mix[3]", **_counts(model))


def test_declared_layout_overrides_detection():
    model = attach(TinyTokens(), ModelInfo(input_size=(1, 4, 4), layouts={"mix": "NCHW"}))
    x = torch.arange(16.0).view(1, 1, 4, 4)
    row = {r.name: r for r in fvis.layers(model)}["mix"]
    assert (row.layout, row.features) == (Layout("NCHW"), 5)
    assert _value(model, x, O.channel("mix", 0)) == 200.0  # dim 1 = token 0, the class token
    with pytest.raises(ValueError, match="layout of 'mix' must be"):
        ModelInfo(input_size=(1, 4, 4), layouts={"mix": "NWHC"})


def test_nhwc_channel_neuron_and_units_use_the_last_dim():
    model, x = _nhwc()
    row = {r.name: r for r in fvis.layers(model)}["lin"]
    assert (row.shape, row.layout, row.features, row.grid) == ((2, 3, 2), Layout("NHWC"), 2, (2, 3))
    assert {r.name: r for r in fvis.layers(model)}["last"].layout == Layout("NHWC")  # Permute
    assert _value(model, x, O.channel("lin", 1)) == 7.5  # mean of 3x over 0..5
    assert _value(model, x, O.neuron("lin", 0, x=2, y=1)) == 5.0
    assert _value(model, x, parse_unit("lin[1]@(1,0)").objective()) == 3.0
    with pytest.raises(IndexError, match="with 2 channels"):
        _value(model, x, O.channel("lin", 2))


def test_gradcam_and_layer_methods_on_nhwc_by_hand():
    model, x = _nhwc()
    before = snapshot(model)
    # ∂f_c/∂A[y, x, k] = W[c, k] / 6, so α = W[c] / 6 and the map is ReLU(Σ_k α_k A_k)
    a = torch.stack([x[0, 0], 3 * x[0, 0]])  # (2, 2, 3) features first
    for c in (0, 1):
        w = model.head.weight[c].detach()
        want = torch.relu((w.view(2, 1, 1) / 6 * a).sum(0))
        got = GradCAM(model).attribute(x, c, layer="lin")
        assert got.shape == (1, 1, 2, 3)
        torch.testing.assert_close(got[0, 0], want, rtol=0, atol=1e-6)
    r = LayerGradientXActivation(model).attribute(x, 0, layer="lin")
    torch.testing.assert_close(r[0], a * model.head.weight[0].detach().view(2, 1, 1) / 6)
    # linear above "lin": IG from the black baseline (A' = 0) equals gradient × activation
    ig, delta = LayerIntegratedGradients(model).attribute(
        x, 0, layer="lin", baselines=torch.zeros_like(x), steps=4, return_delta=True
    )
    torch.testing.assert_close(ig, r)
    assert delta.abs().max() < 1e-5
    per_feature = LayerGradientXActivation(model).attribute(x, 0, layer="lin", reduce="channel")
    torch.testing.assert_close(per_feature, r.sum((2, 3)))  # (1, 2): one value per feature
    assert_clean(model, before)


def test_gradcam_on_tokens_drops_the_class_token():
    model, x = _tokens()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    # the head reads the class token only: the patches' gradient at "mix" is 0, the map too
    assert GradCAM(model).attribute(x, 0, layer="mix").abs().max() == 0
    r = LayerGradientXActivation(model).attribute(x, 0, layer="mix")
    assert r.shape == (1, 3, 2, 2) and r.abs().max() == 0


def _zero_heads_to_random(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():  # torchvision ViT's head
                nn.init.normal_(m.weight, std=0.02)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "layer", "reshape"),
    [
        (
            "vit_b_16",
            "encoder.layers.encoder_layer_11.ln_1",
            # pytorch-grad-cam's documented ViT reshape_transform (tutorials/vision_transformers)
            lambda t: t[:, 1:, :].reshape(t.size(0), 14, 14, t.size(2)).permute(0, 3, 1, 2),
        ),
        ("swin_t", "features", lambda t: t.permute(0, 3, 1, 2)),  # its Swin example, NHWC
    ],
)
def test_gradcam_matches_pytorch_grad_cam_with_reshape_transform(name, layer, reshape):
    model = _zero_heads_to_random(getattr(torchvision.models, name)(weights=None))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    assert default_layer(model, x) == layer  # ViT: last block's input norm; Swin: last stage
    ours = GradCAM(model).attribute(x, 3, upsample=True)[0, 0]
    assert_clean(model, before)
    with PGCGradCAM(model, [model.get_submodule(layer)], reshape_transform=reshape) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(3)])[0])
    assert ours.std() > 0
    scaled = (ours - ours.min()) / (ours.max() - ours.min() + 1e-7)  # its scale_cam_image
    torch.testing.assert_close(scaled, ref, rtol=0, atol=2e-4)
