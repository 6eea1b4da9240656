"""Every method of :data:`fvis.attribution.METHODS` (and the LRP composites) on the
bundled CNN and MLP and five torchvision architectures (random init, BatchNorm
statistics randomized so folding matters, batch of 2, 64 px; VGG16 32 px): a finite,
non-zero attribution shaped like the input (the CAM family: a (B, 1, h, w) map), or a
refusal that names why; no hooks left; weights and buffers unchanged; DeepLIFT's
summation-to-delta on every architecture. The sweep reads the registry, so a method
added to it is swept without editing this file.

Architectures exercise: VGG (sequential, max-pool), ResNet (``BasicBlock`` reuses its
ReLU, ``out += identity``), GoogLeNet (functional ``F.relu``, concatenation, ceil-mode
max-pool), MobileNetV2 (ReLU6, ``x + conv(x)``, depthwise convs), DenseNet (functional
in-place ReLU, BatchNorm after concatenation, average pooling). Inputs are random images in
[0, 1], normalized (deep Taylor's zᴮ box). Expected refusals: deep Taylor on MobileNetV2
(a block's first conv takes the residual sum ``x + conv(x)``, negative in places, outside
the z⁺ rule's domain); CAM wherever the output is not one linear layer after a global
average pool; the CAM family on the MLP (no spatial layer); attention rollout on all of
them (no attention; it is tested on ViTs in ``test_rollout.py``).
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

from fvis.attribution import LRP, METHODS
from fvis.attribution.composites import EpsilonAlpha2Beta1, EpsilonGammaBox
from fvis.hooks import LayerError, UnsupportedOperation
from fvis.models import load_model

torch.set_num_threads(1)

# the registry, plus the LRP composites beyond its default
SWEEP = {
    **METHODS,
    "lrp_alpha2beta1": lambda m: LRP(m, EpsilonAlpha2Beta1()),
    "lrp_gamma_box": lambda m: LRP(m, EpsilonGammaBox()),
}
# fewer integration steps and noise samples than the defaults: the sweep checks that each
# method runs on each architecture; the axioms are tested at full settings elsewhere
FAST = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"n": 4},
        "smoothgrad_squared": {"n": 4}, "vargrad": {"n": 4}}  # fmt: skip
CAMS = ("cam", "gradcam", "gradcam_plus_plus")  # a map at the layer's resolution
NO_GAP_LINEAR = (ValueError, "CAM needs a network whose output is W · \\(global average pool")
NO_SPATIAL = (LayerError, "has no layer with a spatial grid")
NO_ATTENTION = (UnsupportedOperation, "attention rollout needs attention layers")
REFUSED = {
    ("mobilenet_v2", "deep_taylor"): (UnsupportedOperation, "z⁺ rule .* non-negative"),
    ("fvis:mnist", "cam"): NO_GAP_LINEAR,
    ("vgg16", "cam"): NO_GAP_LINEAR,
    ("densenet121", "cam"): NO_GAP_LINEAR,
    **{("fvis:mnist-mlp", name): NO_SPATIAL for name in (*CAMS, "guided_gradcam")},
}
# model -> input size; VGG16 at 32 px (its cost is the 10⁸-weight classifier, not the size)
MODELS = {
    "fvis:mnist": (1, 28, 28),
    "fvis:mnist-mlp": (1, 28, 28),
    "vgg16": (3, 32, 32),
    "resnet18": (3, 64, 64),
    "googlenet": (3, 64, 64),
    "mobilenet_v2": (3, 64, 64),
    "densenet121": (3, 64, 64),
}
REFUSED.update({(spec, "attention_rollout"): NO_ATTENTION for spec in MODELS})
DEEP_TAYLOR_REFUSED = {"mobilenet_v2"}


def build(spec: str) -> nn.Module:
    torch.manual_seed(0)
    if spec.startswith("fvis:"):
        return load_model(spec)
    model = load_model(f"torchvision:{spec}", weights=None)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def test_the_sweep_covers_the_registry():
    assert set(METHODS) <= set(SWEEP)
    assert {name for _, name in REFUSED} <= set(SWEEP)


@pytest.mark.parametrize("spec", MODELS)
def test_every_method_on_architecture(spec):
    model = build(spec)
    images = torch.rand(2, *MODELS[spec], generator=torch.Generator().manual_seed(1))
    x = model.fvis_info.normalize(images)
    target = torch.tensor([1, 2])
    before = snapshot(model)
    for name, make in SWEEP.items():
        method = make(model)
        kwargs = FAST.get(name, {})
        if (spec, name) in REFUSED:
            error, message = REFUSED[spec, name]
            with pytest.raises(error, match=message):
                method.attribute(x, target, **kwargs)
            assert_clean(model, before)
            continue
        if name.startswith("deeplift"):
            attr, delta = method.attribute(x, target, return_delta=True)
            assert delta.abs().max() < 1e-4, (spec, name, delta)
        else:
            attr = method.attribute(x, target, **kwargs)
        if name in CAMS:
            assert attr.shape[:2] == (2, 1) and attr.dim() == 4, (spec, name, attr.shape)
        else:
            assert attr.shape == x.shape, (spec, name)
        assert torch.isfinite(attr).all(), (spec, name)
        assert attr.abs().sum() > 0, (spec, name)
        assert_clean(model, before)
