"""Transforms: exact outputs on small tensors, reproducible randomness, sizes."""

from __future__ import annotations

import torch

from fvis import transforms as T

SQ2 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
SQ3 = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
G = torch.Generator


def test_pad_constant_and_reflect():
    out = T.pad(1, value=0.5)(SQ2, G())
    expected = torch.full((4, 4), 0.5)
    expected[1:3, 1:3] = SQ2[0, 0]
    assert torch.equal(out[0, 0], expected)
    refl = T.pad(1, mode="reflect")(SQ3, G())
    assert torch.equal(refl[0, 0, 0], torch.tensor([5.0, 4.0, 5.0, 6.0, 5.0]))


def test_rotate_90_degrees_is_exact():
    out = T.rotate(SQ3, 90.0)
    expected = torch.tensor([[3.0, 6.0, 9.0], [2.0, 5.0, 8.0], [1.0, 4.0, 7.0]])
    assert torch.allclose(out[0, 0], expected, atol=1e-5), out


def test_scale_by_two_is_bilinear():
    out = T.scale(SQ2, 2.0)
    expected = torch.tensor(
        [[1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3, 3.25, 3.75, 4]]
    )
    assert torch.allclose(out[0, 0], expected)
    assert T.scale(SQ3, 1.0) is SQ3


def test_jitter_crops_by_d_at_a_seeded_offset():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    a = T.jitter(2)(x, G().manual_seed(5))
    b = T.jitter(2)(x, G().manual_seed(5))
    assert a.shape == (1, 1, 4, 4) and torch.equal(a, b)
    oy, ox = divmod(int(a[0, 0, 0, 0]), 6)
    assert torch.equal(a, x[..., oy : oy + 4, ox : ox + 4]) and 0 <= oy <= 2 and 0 <= ox <= 2


def test_fit_crops_and_pads_centrally():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.equal(T.fit(x, (3, 3)), x[..., 1:4, 1:4])
    padded = T.fit(SQ2, (4, 4))
    assert torch.equal(padded[0, 0, 1:3, 1:3], SQ2[0, 0]) and padded[0, 0, 0, 0] == 0.5


def test_standard_recipe_is_lucids_and_reproducible():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    sizes = set()
    for seed in range(20):
        out = T.standard()(x, G().manual_seed(seed))
        sizes.add(out.shape[-1])
        assert out.shape[:2] == (2, 3) and out.shape[-1] == out.shape[-2]
    # 32 + 24 - 8 = 48 → scaled 0.9..1.1 → 43..53, then -4
    assert min(sizes) >= 39 and max(sizes) <= 49 and len(sizes) > 3
    a = T.standard()(x, G().manual_seed(1))
    b = T.standard()(x, G().manual_seed(1))
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
