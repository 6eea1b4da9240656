"""Parameterizations: ``nn.Module``\\s whose ``forward()`` returns images (B, C, H, W) in [0, 1].

Their parameters are what :func:`fvis.render` optimizes. Anything with that contract
plugs in, e.g. a generator's code space (:mod:`fvis.codespace`) or a :class:`CPPN`.
:func:`image` builds the usual one: a pixel, Fourier (1/f^p) or MACO (natural magnitude,
learned phase) image, colour-decorrelated for RGB, squashed to [0, 1] by a sigmoid:

    image = sigmoid(C · spatial(θ))          (C: colour correlation, RGB only)

A parameterization may carry ``lr``, the Adam learning rate :func:`fvis.render` uses
when it is given none.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from fvis.errors import NonFiniteError, check_finite
from fvis.param.ball import Ball
from fvis.param.color import COLOR_CORRELATION, correlate_inverse, decorrelate
from fvis.param.cppn import CPPN
from fvis.param.maco import MacoImage
from fvis.param.spatial import FourierImage, PixelImage

__all__ = [
    "Image", "image", "for_input", "KINDS", "DEFAULT_LR", "MAX_BATCH", "MAX_SIDE",
    "COLOR_CORRELATION", "decorrelate", "FourierImage", "PixelImage", "MacoImage", "CPPN",
    "Ball",
]  # fmt: skip

KINDS = ("fft", "pixel", "maco", "cppn")
DEFAULT_LR = 0.05  # Adam's learning rate for a parameterization that names none

MAX_BATCH = 4096  # images per parameterization; more is a mistake (several renders)
MAX_SIDE = 4096  # pixels per side; larger images do not fit memory with gradients
_EPS = 1e-4  # keeps logit(init) finite for pixels at exactly 0 or 1


class Image(nn.Module):
    """A spatial parameterization followed by colour decorrelation and a sigmoid."""

    def __init__(self, spatial: nn.Module, decorrelate: bool):
        super().__init__()
        self.spatial = spatial
        self.decorrelate = decorrelate
        self.lr = getattr(spatial, "lr", DEFAULT_LR)

    def forward(self) -> torch.Tensor:
        t = self.spatial()
        if self.decorrelate:
            t = decorrelate(t)
        return torch.sigmoid(t)

    @property
    def assignable(self) -> bool:
        """Whether :meth:`assign` works: pixel and Fourier images, not MACO (fixed
        magnitude)."""
        return hasattr(self.spatial, "assign")

    @torch.no_grad()
    def assign(self, images: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` returns ``images`` (B, C, H, W) in
        [0, 1] (clamped to [1e-4, 1 − 1e-4], up to float rounding); a
        :class:`~fvis.param.ball.Ball` projects this way."""
        if not self.assignable:
            raise TypeError(f"{type(self.spatial).__name__} cannot be set to an image")
        self.spatial.assign(_raw(images, self.decorrelate))


def image(
    width: int,
    height: int | None = None,
    *,
    channels: int = 3,
    batch: int = 1,
    kind: str = "fft",
    decorrelate: bool | None = None,
    decay_power: float = 1.0,
    sd: float = 0.01,
    init: torch.Tensor | None = None,
    seed: int = 0,
) -> nn.Module:
    """An image parameterization of shape (batch, channels, height, width).

    ``kind``: ``"fft"`` Fourier with 1/f^``decay_power`` scaling, ``"pixel"``, ``"maco"``
    (:class:`MacoImage`: natural-image magnitude, only the phase is learned; ``sd`` and
    ``decay_power`` do not apply) or ``"cppn"`` (:class:`CPPN`, resolution-free; only
    ``seed`` applies). ``decorrelate``: ImageNet colour decorrelation (default: on for 3
    channels; only valid for 3). ``init``: start from this image (C, H, W) or (B, C, H, W) in [0, 1]
    instead of noise (adversarial examples, caricatures). ``seed`` fixes the noise.
    """
    height = width if height is None else height
    for name, value, top in (("width", width, MAX_SIDE), ("height", height, MAX_SIDE),
                             ("channels", channels, 64), ("batch", batch, MAX_BATCH)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 1 <= value <= top:
            raise ValueError(f"{name} {value} is out of range (valid: 1..{top})")
    check_finite("decay_power", decay_power)
    check_finite("sd", sd, minimum=0)
    if kind not in KINDS:
        raise ValueError(f"unknown parameterization {kind!r}; known: {', '.join(KINDS)}")
    if kind == "cppn":
        if init is not None:
            raise ValueError("a CPPN cannot start from an image (init); use kind='fft' or 'pixel'")
        return CPPN(width, height, channels=channels, batch=batch, seed=seed)
    if decorrelate is None:
        decorrelate = channels == 3
    if decorrelate and channels != 3:
        raise ValueError(f"colour decorrelation needs 3 channels, not {channels}")
    shape = (batch, channels, height, width)
    raw = None
    if init is not None:
        img = torch.as_tensor(init, dtype=torch.float32).detach().cpu()
        if not torch.isfinite(img).all():
            raise NonFiniteError("init contains NaN or infinite values; give an image in [0, 1]")
        img = img.expand(shape) if img.dim() == 4 else img.unsqueeze(0).expand(shape)
        raw = _raw(img, decorrelate)
    g = torch.Generator().manual_seed(seed)
    if kind == "fft":
        spatial = FourierImage(shape, sd=sd, decay_power=decay_power, generator=g, init=raw)
    elif kind == "maco":
        spatial = MacoImage(shape, generator=g, init=raw)
    else:
        spatial = PixelImage(shape, sd=sd, generator=g, init=raw)
    return Image(spatial, decorrelate)


def _raw(images: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    """The unconstrained image whose colour-correlated sigmoid is ``images``."""
    raw = torch.logit(images.clamp(_EPS, 1 - _EPS)).double()
    return (correlate_inverse(raw) if decorrelate else raw).float()


def for_input(input_size, batch: int = 1, **options) -> nn.Module:
    """:func:`image` for a model input of size ``(C, H, W)``; ``options`` as for
    :func:`image`."""
    c, h, w = input_size
    return image(w, h, channels=c, batch=batch, **options)
