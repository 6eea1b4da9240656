"""Parameterizations: shapes, ranges, channels, start images, and fitting a photograph."""

from __future__ import annotations

import pytest
import torch

from fvis.param import COLOR_CORRELATION, decorrelate, image
from fvis.param.color import correlate_inverse


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_shapes_and_range(fft, channels):
    p = image(17, 12, channels=channels, batch=2, fft=fft, sd=1.0)
    x = p()
    assert x.shape == (2, channels, 12, 17)
    assert x.min() >= 0 and x.max() <= 1
    assert x.std() > 0.01


def test_decorrelation_matrix_and_inverse():
    assert COLOR_CORRELATION.norm(dim=0).max().item() == pytest.approx(1.0)
    z = torch.randn(2, 3, 4, 5)
    assert torch.allclose(correlate_inverse(decorrelate(z)), z, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        image(8, channels=1, decorrelate=True)


@pytest.mark.parametrize("fft", [True, False])
def test_start_from_an_image_reproduces_it(fft):
    target = torch.rand(3, 10, 13) * 0.98 + 0.01
    p = image(13, 10, init=target, fft=fft, batch=2)
    assert torch.allclose(p()[1], target, atol=1e-5)


def test_same_seed_same_start_different_seed_different_start():
    assert torch.equal(image(16, seed=3)(), image(16, seed=3)())
    assert not torch.equal(image(16, seed=3)(), image(16, seed=4)())


def test_fourier_fits_a_photograph_within_1000_steps():
    """Lucid's parameterization test: fit a real photo to mean |error| < 0.01."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()[::8, ::8].copy()).permute(2, 0, 1).float() / 255
    target = photo.unsqueeze(0)  # (1, 3, 64, 64)
    p = image(64, fft=True, decorrelate=True, seed=0)
    opt = torch.optim.Adam(p.parameters(), lr=0.05)
    for _ in range(1000):
        opt.zero_grad()
        loss = (p() - target).abs().mean()
        loss.backward()
        opt.step()
    err = (p() - target).abs().mean().item()
    assert err < 0.01, err
