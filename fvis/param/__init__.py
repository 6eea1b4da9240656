"""Parameterizations: ``nn.Module``\\s whose ``forward()`` returns images (B, C, H, W) in [0, 1].

Their parameters are what :func:`fvis.render` optimizes. Anything with that contract
plugs in, e.g. a generator's code space (:mod:`fvis.codespace`). :func:`image` builds
the usual one: a pixel or Fourier (1/f^p) image, colour-decorrelated for RGB, squashed
to [0, 1] by a sigmoid:

    image = sigmoid(C · spatial(θ))          (C: colour correlation, RGB only)
"""

from __future__ import annotations

import torch
from torch import nn

from fvis.param.color import COLOR_CORRELATION, correlate_inverse, decorrelate
from fvis.param.spatial import FourierImage, PixelImage

__all__ = ["Image", "image", "COLOR_CORRELATION", "decorrelate", "FourierImage", "PixelImage"]

_EPS = 1e-4  # keeps logit(init) finite for pixels at exactly 0 or 1


class Image(nn.Module):
    """A spatial parameterization followed by colour decorrelation and a sigmoid."""

    def __init__(self, spatial: nn.Module, decorrelate: bool):
        super().__init__()
        self.spatial = spatial
        self.decorrelate = decorrelate

    def forward(self) -> torch.Tensor:
        t = self.spatial()
        if self.decorrelate:
            t = decorrelate(t)
        return torch.sigmoid(t)


def image(
    width: int,
    height: int | None = None,
    *,
    channels: int = 3,
    batch: int = 1,
    fft: bool = True,
    decorrelate: bool | None = None,
    decay_power: float = 1.0,
    sd: float = 0.01,
    init: torch.Tensor | None = None,
    seed: int = 0,
) -> Image:
    """An image parameterization of shape (batch, channels, height, width).

    ``fft``: Fourier parameterization with 1/f^``decay_power`` scaling (else pixels).
    ``decorrelate``: ImageNet colour decorrelation (default: on for 3 channels; only
    valid for 3). ``init``: start from this image (C, H, W) or (B, C, H, W) in [0, 1]
    instead of noise (adversarial examples, caricatures). ``seed`` fixes the noise.
    """
    height = width if height is None else height
    if decorrelate is None:
        decorrelate = channels == 3
    if decorrelate and channels != 3:
        raise ValueError(f"colour decorrelation needs 3 channels, not {channels}")
    shape = (batch, channels, height, width)
    raw = None
    if init is not None:
        img = torch.as_tensor(init, dtype=torch.float32).detach().cpu()
        img = img.expand(shape) if img.dim() == 4 else img.unsqueeze(0).expand(shape)
        raw = torch.logit(img.clamp(_EPS, 1 - _EPS)).double()
        if decorrelate:
            raw = correlate_inverse(raw)
        raw = raw.float()
    g = torch.Generator().manual_seed(seed)
    spatial = (
        FourierImage(shape, sd=sd, decay_power=decay_power, generator=g, init=raw)
        if fft
        else PixelImage(shape, sd=sd, generator=g, init=raw)
    )
    return Image(spatial, decorrelate)
