"""Heatmaps: colour tables, symmetric scaling, overlay, conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvis.heatmap import CMAPS, colorize, normalize, overlay, reduce_channels, to_array, to_pil


def rgb(hex_colour: str) -> torch.Tensor:
    return torch.tensor([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def test_diverging_is_symmetric_around_zero():
    m = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 2.0]]])  # (1, 1, 5)
    out = colorize(m, vmax=2.0)
    assert out.shape == (3, 1, 5)
    assert torch.allclose(out[:, 0, 0], rgb(CMAPS["rdbu"][0]), atol=1e-6)
    assert torch.allclose(out[:, 0, 2], rgb("#f7f7f7"), atol=1e-6)  # 0 → centre colour
    assert torch.allclose(out[:, 0, 4], rgb(CMAPS["rdbu"][-1]), atol=1e-6)
    # ± the same value sit at mirrored table positions
    table = torch.stack([rgb(c) for c in CMAPS["rdbu"]])
    flipped = colorize(-m, vmax=2.0)
    assert torch.allclose(flipped[:, 0, 1], out[:, 0, 3])  # −(−1) is coloured as +1
    assert torch.allclose(flipped.flip(-1), out)
    mid_pos = (table[7] + table[8]) / 2  # +1 of 2 → t = 0.75 → position 7.5
    mid_neg = (table[2] + table[3]) / 2  # −1 of 2 → t = 0.25 → position 2.5
    assert torch.allclose(out[:, 0, 3], mid_pos, atol=1e-6)
    assert torch.allclose(out[:, 0, 1], mid_neg, atol=1e-6)


def test_sequential_for_unsigned_and_inference():
    m = torch.tensor([[[0.0, 0.5, 1.0]]])
    out = colorize(m, vmax=1.0)
    assert torch.allclose(out[:, 0, 0], rgb(CMAPS["inferno"][0]), atol=1e-6)
    assert torch.allclose(out[:, 0, 2], rgb(CMAPS["inferno"][-1]), atol=1e-6)
    t, signed = normalize(torch.tensor([[[0.0, -1.0]]]))
    assert signed and t.min() == -1
    t, signed = normalize(torch.tensor([[[0.0, 3.0]]]))
    assert not signed and t.max() == 1
    assert torch.allclose(colorize(m, "gray", vmax=1.0)[:, 0, 1], torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="known"):
        colorize(m, "jet")


def test_percentile_scaling_resists_outliers():
    m = torch.ones(1, 20, 20)
    m[0, 0, 0] = 1000.0
    t, _ = normalize(m)  # 99.5th percentile of 400 values ignores the outlier
    assert t[0, 5, 5] == 1.0 and t[0, 0, 0] == 1.0
    t, _ = normalize(m, percentile=100)
    assert t[0, 5, 5] == pytest.approx(0.001)
    t, _ = normalize(torch.zeros(2, 3, 3))
    assert torch.equal(t, torch.zeros(2, 3, 3))
    sparse = torch.zeros(1, 10, 10)
    sparse[0, 1, 1] = 5.0  # 99.5th percentile is 0: falls back to the max
    assert normalize(sparse)[0].max() == 1.0


def test_reduce_channels_and_batches():
    m = torch.tensor([[[1.0]], [[-3.0]], [[2.0]]])  # (C=3, 1, 1)
    assert reduce_channels(m).item() == 0.0
    assert reduce_channels(m, "abs").item() == 6.0
    assert reduce_channels(m, "max_abs").item() == 3.0
    assert colorize(torch.randn(4, 3, 5, 6)).shape == (4, 3, 5, 6)
    with pytest.raises(ValueError):
        reduce_channels(m, "mean")


def test_overlay():
    image = torch.rand(2, 1, 8, 8)
    zero = overlay(image, torch.zeros(2, 1, 8, 8))
    assert torch.allclose(zero, image.expand(-1, 3, -1, -1))  # no relevance: just the image
    cam = torch.rand(2, 1, 2, 2)  # unupsampled map
    out = overlay(image, cam, alpha=1.0)
    assert out.shape == (2, 3, 8, 8) and out.min() >= 0 and out.max() <= 1
    single = overlay(torch.rand(3, 8, 8), torch.randn(8, 8))
    assert single.shape == (3, 8, 8)
    # full relevance at alpha 1: the colour alone
    m = torch.zeros(1, 1, 2, 2)
    m[0, 0, 0, 0] = 1.0
    full = overlay(torch.zeros(1, 3, 2, 2), m, alpha=1.0, vmax=1.0)
    assert torch.allclose(full[0, :, 0, 0], rgb(CMAPS["inferno"][-1]), atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        overlay(torch.rand(1, 2, 8, 8), cam)


def test_to_array_and_pil():
    x = torch.rand(3, 5, 7)
    a = to_array(x)
    assert a.shape == (5, 7, 3) and a.dtype == np.uint8
    assert a[0, 0, 0] == round(x[0, 0, 0].item() * 255)
    img = to_pil(x)
    assert img.size == (7, 5) and img.mode == "RGB"
    imgs = to_pil(torch.rand(2, 3, 4, 4))
    assert len(imgs) == 2 and imgs[1].size == (4, 4)
