"""Every propagation-rule method on the bundled CNN and MLP and five torchvision
architectures (random init, BatchNorm statistics randomized so folding matters, batch of
2, 64 px; VGG16 32 px): a finite attribution shaped like the input, no hooks left, weights
and buffers unchanged, and DeepLIFT's summation-to-delta on every architecture.

Architectures exercise: VGG (sequential, max-pool), ResNet (``BasicBlock`` reuses its
ReLU, ``out += identity``), GoogLeNet (functional ``F.relu``, concatenation, ceil-mode
max-pool), MobileNetV2 (ReLU6, ``x + conv(x)``, depthwise convs), DenseNet (functional
in-place ReLU, BatchNorm after concatenation, average pooling). Inputs are random images in
[0, 1], normalized (deep Taylor's zᴮ box). Deep Taylor refuses MobileNetV2: a block's
first conv takes the residual sum ``x + conv(x)``, which is negative in places, outside
the z⁺ rule's domain.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

from fvis.attribution import LRP, Deconvnet, DeepLift, DeepTaylor, GuidedBackprop, SimpleTaylor
from fvis.attribution.composites import EpsilonAlpha2Beta1, EpsilonGammaBox
from fvis.hooks import UnsupportedOperation
from fvis.models import load_model

torch.set_num_threads(1)

METHODS = {
    "deconvnet": lambda m: Deconvnet(m),
    "guided_backprop": lambda m: GuidedBackprop(m),
    "deeplift_rescale": lambda m: DeepLift(m, "rescale"),
    "deeplift_revealcancel": lambda m: DeepLift(m, "reveal_cancel"),
    "lrp_epsilon_plus": lambda m: LRP(m),
    "lrp_alpha2beta1": lambda m: LRP(m, EpsilonAlpha2Beta1()),
    "lrp_gamma_box": lambda m: LRP(m, EpsilonGammaBox()),
    "deep_taylor": lambda m: DeepTaylor(m),
    "simple_taylor": lambda m: SimpleTaylor(m),
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


@pytest.mark.parametrize("spec", MODELS)
def test_every_method_on_architecture(spec):
    model = build(spec)
    images = torch.rand(2, *MODELS[spec], generator=torch.Generator().manual_seed(1))
    x = model.fvis_info.normalize(images)
    target = torch.tensor([1, 2])
    before = snapshot(model)
    for name, make in METHODS.items():
        method = make(model)
        if name == "deep_taylor" and spec in DEEP_TAYLOR_REFUSED:
            with pytest.raises(UnsupportedOperation, match="z⁺ rule .* non-negative"):
                method.attribute(x, target)
            assert_clean(model, before)
            continue
        if name.startswith("deeplift"):
            attr, delta = method.attribute(x, target, return_delta=True)
            assert delta.abs().max() < 1e-4, (spec, name, delta)
        else:
            attr = method.attribute(x, target)
        assert attr.shape == x.shape, (spec, name)
        assert torch.isfinite(attr).all(), (spec, name)
        assert attr.abs().sum() > 0, (spec, name)
        assert_clean(model, before)
