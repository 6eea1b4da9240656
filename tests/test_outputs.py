"""Model outputs that are not one tensor (dict, named tuple), targets naming an entry,
and the segmentation region objective — exact numbers on a hand-set linear "segmenter"."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis import objectives as O
from fvis.attribution import Gradient, IntegratedGradients
from fvis.hooks import capture
from fvis.models import load_model
from fvis.models.segmentation import predicted_mask
from fvis.outputs import rows, select

torch.set_num_threads(1)


class Segmenter(nn.Module):
    """``out[:, c] = (c + 1) · x`` on every ``stride``-th pixel; ``aux = −out``."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.head = nn.Conv2d(1, 3, 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1))
        self.stride = stride

    def forward(self, x):
        y = self.head(x[..., :: self.stride, :: self.stride])
        return {"out": y, "aux": -y}


Pair = namedtuple("Pair", ["logits", "aux"])


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(12.0).view(3, 4))

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return Pair(y, 2 * y)


def test_select_and_rows():
    t = torch.arange(6.0).view(3, 2)
    assert select(t) is t
    assert select({"aux": t + 1, "out": t}) is t  # "out" is the main entry
    assert select({"only": t}) is t
    assert select(Pair(t, t + 1), "aux").equal(t + 1) and select((t, t + 1)) is t
    with pytest.raises(ValueError, match=r"keys \['a', 'b'\].*target=\('out', 15\)"):
        select({"a": t, "b": t})
    with pytest.raises(ValueError, match="no entry 'logits'"):
        select({"out": t}, "logits")
    picked = rows({"out": t, "n": 3}, slice(1, 3))
    assert picked["out"].equal(t[1:3]) and picked["n"] == 3
    assert rows(Pair(t, t), torch.tensor([2])).aux.equal(t[2:3])


def test_dict_output_is_addressable():
    model = Segmenter()
    out = [li for li in fvis.layers(model, (1, 8, 8)) if li.name == "output"]
    assert out[0].shape == (3, 8, 8)  # the main entry's shape
    acts = capture(model, torch.ones(1, 1, 8, 8), ["output"])
    assert set(acts["output"]) == {"out", "aux"}


def test_keyed_and_main_class_targets_exact():
    model = Segmenter()
    before = snapshot(model)
    x = torch.randn(2, 1, 8, 8)
    g = Gradient(model).attribute(x, target=("out", 2))  # d mean(3x) / dx = 3 / 64
    torch.testing.assert_close(g, torch.full_like(x, 3 / 64), rtol=0, atol=1e-7)
    g_aux = Gradient(model).attribute(x, target=("aux", 1))
    torch.testing.assert_close(g_aux, torch.full_like(x, -2 / 64), rtol=0, atol=1e-7)
    assert torch.equal(Gradient(model).attribute(x, target=2), g)  # main entry: "out"
    # a linear model: IG is exact, Σ attr = f(x) − f(0) = 3 · mean(x)
    attr = IntegratedGradients(model).attribute(x, target=("out", 2), steps=4)
    torch.testing.assert_close(attr.sum((1, 2, 3)), 3 * x.mean((1, 2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Pass a class or an Objective"):
        Gradient(model).attribute(x)  # predicted class of a segmentation map: undefined
    with pytest.raises(ValueError, match="no entry 'logits'"):
        Gradient(model).attribute(x, target=("logits", 0))
    assert_clean(model, before)


def test_named_tuple_output_targets():
    model = TwoHeads()
    x = torch.randn(2, 1, 2, 2)
    g = Gradient(model).attribute(x, target=1)  # first entry: logits = W x
    torch.testing.assert_close(g.flatten(1), torch.tensor([[4.0, 5, 6, 7]] * 2))
    g2 = Gradient(model).attribute(x, target=("aux", 1))
    torch.testing.assert_close(g2, 2 * g)
    predicted = Gradient(model).attribute(x)  # target=None: argmax of the logits
    assert predicted.shape == x.shape


def test_class_region_exact_value_and_gradient():
    model = Segmenter()
    x = torch.randn(1, 1, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 1:7] = True  # 18 pixels
    objective = O.class_region(2, mask)
    value = objective(capture(model, x, objective.layers))
    torch.testing.assert_close(value, 3 * x[0, 0][mask].mean().view(1))
    g = Gradient(model).attribute(x, target=objective)
    torch.testing.assert_close(g[0, 0], 3 * mask.float() / 18, rtol=0, atol=1e-7)
    # soft weights: Σ w · logit / Σ w
    w = torch.rand(8, 8)
    soft = O.class_region(0, w)(capture(model, x, ["output"]))
    torch.testing.assert_close(soft, ((w * x[0, 0]).sum() / w.sum()).view(1))
    with pytest.raises(ValueError, match="empty"):
        O.class_region(0, torch.zeros(8, 8))


def test_class_region_at_full_resolution_of_coarse_logits():
    model = Segmenter(stride=2)  # logits at 4×4 for an 8×8 input
    x = torch.randn(2, 1, 8, 8)
    mask = torch.zeros(2, 8, 8)
    mask[0, :4], mask[1, :, 4:] = 1, 1  # a different region per item
    value = O.class_region(1, mask)(capture(model, x, ["output"]))
    full = F.interpolate(2 * x[..., ::2, ::2], size=(8, 8), mode="bilinear", align_corners=False)
    expected = (full[:, 0] * mask).sum((1, 2)) / mask.sum((1, 2))
    torch.testing.assert_close(value, expected)
    # IG over an expanded batch slices the dict output per block of items
    attr = IntegratedGradients(model).attribute(x, O.class_region(1, mask), steps=3)
    torch.testing.assert_close(attr.sum((1, 2, 3)), expected, rtol=1e-5, atol=1e-6)
    assert predicted_mask(model, x, 2).shape == (2, 8, 8)


def test_torchvision_segmentation_offline(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = load_model("torchvision:lraspp_mobilenet_v3_large", weights=None, num_classes=4)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model(x)["out"]
    assert out.shape == (1, 4, 32, 32)
    mask = predicted_mask(model, x, 1)
    assert torch.equal(mask, out.argmax(1) == 1)
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[:, :16] = True  # the left half
    g = Gradient(model).attribute(x, target=O.class_region(1, region))
    value = O.class_region(1, region)(capture(model, x, ["output"]))
    torch.testing.assert_close(value, out[0, 1][region].mean().view(1), rtol=1e-5, atol=1e-6)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    keyed = Gradient(model).attribute(x, target=("out", 1))  # the whole map's mean
    assert keyed.shape == x.shape and not torch.allclose(keyed, g)
