"""A reduced coverage matrix (scripts/coverage_matrix.py at tiny sizes): on transformer
architectures, ``fvis.layers`` reports features and a grid, a middle unit renders with the
standard recipe, and Grad-CAM's default layer gives a finite, non-constant map."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
import transformers
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis import objectives as O
from fvis.attribution import GradCAM
from fvis.attribution.layer import default_layer
from fvis.models.metadata import ModelInfo, attach


def _torchvision_vit():
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=10,
    )  # fmt: skip


def _torchvision_swin():
    model = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
        num_classes=10,
    )  # fmt: skip
    return attach(model, ModelInfo(input_size=(3, 32, 32), name="swin"))


def _timm_vit():
    return timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, num_classes=10)


def _hf_vit():
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
        intermediate_size=32, num_labels=10,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


CASES = {  # builder, default Grad-CAM layer (its last part), layout of that layer
    "torchvision-vit": (_torchvision_vit, "encoder_layer_1.ln_1", "tokens 1+4×4"),
    "torchvision-swin": (_torchvision_swin, "features", "NHWC"),
    "timm-vit": (_timm_vit, "blocks.1.norm1", "tokens 1+4×4"),
    "hf-vit": (_hf_vit, "layers.1.layernorm_before", "tokens 1+4×4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layers_render_and_default_gradcam(case):
    build, want_layer, want_layout = CASES[case]
    torch.manual_seed(0)
    model = fvis.load_model(build())
    with torch.no_grad():  # torchvision's ViT head starts at 0: every gradient would be 0
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                nn.init.normal_(m.weight, std=0.02)
    before = snapshot(model)
    meta = model.fvis_info
    rows = [r for r in fvis.layers(model) if r.name not in ("input", "output")]
    assert all(r.features == r.layout.features(r.shape) for r in rows)
    middle = [r for r in rows if len(r.grid) == 2][len(rows) // 3]
    assert middle.grid[0] * middle.grid[1] > 1 and 0 < middle.features < 1000

    result = fvis.render(
        model, O.channel(middle.name, middle.features // 2), steps=3, progress=False
    )
    assert torch.isfinite(result.images).all()

    x = meta.normalize(torch.rand(1, *meta.input_size, generator=torch.Generator().manual_seed(0)))
    layer = default_layer(model, x)
    assert layer.endswith(want_layer)
    row = {r.name: r for r in rows}[layer]
    assert str(row.layout) == want_layout
    cam = GradCAM(model).attribute(x, 0, relu=False)
    assert cam.shape == (1, 1, *row.grid)
    assert torch.isfinite(cam).all() and cam.std() > 0
    assert_clean(model, before)
