"""Random, differentiable image transforms applied each optimization step.

A transform is a callable ``t(images, generator) -> images`` on (B, C, H, W) tensors,
on the images' device. Random choices are drawn from the ``torch.Generator`` passed
in (a CPU generator: no device synchronization, and the same draws on every
device), one draw per step for the whole batch, so a seed reproduces a render.

``standard()`` is Lucid's ``standard_transforms``: pad 12 (constant 0.5), jitter 8,
random scale in {0.90, 0.92, …, 1.10}, random rotation in −10…10° (zero with extra
weight), jitter 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Transform",
    "compose",
    "gaussian_blur",
    "jitter",
    "pad",
    "random_rotate",
    "random_scale",
    "rotate",
    "scale",
    "standard",
]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(values: Sequence[float], g: torch.Generator) -> float:
    return values[int(torch.randint(len(values), (1,), generator=g))]


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad ``width`` pixels on every side; ``mode`` ``"constant"`` (with ``value``) or
    ``"reflect"``. (B, C, H, W) → (B, C, H + 2w, W + 2w)."""
    if mode not in ("constant", "reflect", "replicate"):
        raise ValueError(f"pad mode must be constant, reflect or replicate, not {mode!r}")

    def t(x, g):
        if mode == "constant":
            return F.pad(x, (width,) * 4, mode="constant", value=value)
        return F.pad(x, (width,) * 4, mode=mode)

    return t


def jitter(d: int) -> Transform:
    """Random crop of size (H − d, W − d) at an offset drawn uniformly in [0, d]²
    (Lucid's jitter: a translation by up to d pixels)."""

    def t(x, g):
        h, w = x.shape[-2:]
        if d >= min(h, w):
            raise ValueError(f"jitter {d} is too large for an image of {h}×{w}")
        oy, ox = (int(v) for v in torch.randint(d + 1, (2,), generator=g))
        return x[..., oy : oy + h - d, ox : ox + w - d]

    return t


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor``: (B, C, H, W) → (B, C, round(H·f), round(W·f))."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def random_scale(factors: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``factors`` (the image size changes, as in Lucid)."""
    factors = list(factors)
    return lambda x, g: scale(x, _choice(factors, g))


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate about the centre by ``degrees`` (counter-clockwise), bilinear, zeros outside
    (kornia; differentiable, on the image's device)."""
    if degrees == 0:
        return x
    import kornia.geometry.transform as KT

    angle = torch.full((x.shape[0],), float(degrees), device=x.device, dtype=x.dtype)
    return KT.rotate(x, angle, mode="bilinear", padding_mode="zeros", align_corners=True)


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate by an angle (degrees) drawn from ``angles``."""
    angles = list(angles)
    return lambda x, g: rotate(x, _choice(angles, g))


def gaussian_blur(x: torch.Tensor, sigma: float, border: str = "reflect") -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with std ``sigma`` px: separable kernel of radius
    ``max(1, ceil(3σ))``, edges ``"reflect"`` or ``"replicate"`` (kornia; differentiable)."""
    if sigma <= 0:
        return x.clone()
    from kornia.filters import gaussian_blur2d

    size = 2 * max(1, math.ceil(3 * sigma)) + 1
    return gaussian_blur2d(x, (size, size), (float(sigma), float(sigma)), border_type=border)


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""
    transforms = list(transforms)

    def t(x, g):
        for f in transforms:
            x = f(x, g)
        return x

    return t


def standard() -> Transform:
    """Lucid's standard transforms (see the module docstring)."""
    return compose(
        [
            pad(12, mode="constant", value=0.5),
            jitter(8),
            random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
            random_rotate(list(range(-10, 11)) + 5 * [0]),
            jitter(4),
        ]
    )


def identity() -> Transform:
    """No transform."""
    return lambda x, g: x


def model_input(model, images: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, H, W) in [0, 1] as the model takes them: fitted to a fixed-size
    model's one size (:func:`fit`), then normalized with its mean and std."""
    from fvis.models.metadata import info as model_info

    info = model_info(model)
    if info.fixed_size:
        images = fit(images, tuple(info.input_size[-2:]))
    return info.normalize(images)


def fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop or pad (with 0.5 grey) to ``size`` (H, W): for models that only take
    one input size. The image scale is kept, so what the model sees matches the image."""
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    if h < th or w < tw:
        py, px = max(0, th - h), max(0, tw - w)
        x = F.pad(x, (px // 2, px - px // 2, py // 2, py - py // 2), value=0.5)
        h, w = x.shape[-2:]
    oy, ox = (h - th) // 2, (w - tw) // 2
    return x[..., oy : oy + th, ox : ox + tw]


def resolve(spec) -> Transform:
    """A transform from ``None`` (identity), ``"standard"``, a callable or a list of them."""
    if spec is None or spec == "none":
        return identity()
    if spec == "standard":
        return standard()
    if callable(spec):
        return spec
    if isinstance(spec, list | tuple):
        return compose(spec)
    raise ValueError(f"transforms must be None, 'standard', a callable or a list, not {spec!r}")
