"""Heatmaps of attribution maps: colour, overlay, PIL / numpy. No matplotlib.

Signed maps use a diverging colour map symmetric around 0 (negative blue, 0 white,
positive red); unsigned maps (all ≥ 0) a sequential one (0 dark). Each map is scaled by
its own ``vmax``: by default the ``percentile``-th percentile of ``|map|`` (99.5, so a few
extreme pixels do not wash the rest out), clipped beyond.

>>> from fvis.attribution import GradCAM, IntegratedGradients
>>> rgb = colorize(IntegratedGradients(model).attribute(x, 3))   # (B, 3, H, W) in [0, 1]
>>> to_pil(overlay(image, GradCAM(model).attribute(x, 3, upsample=True)))[0].save("cam.png")
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CMAPS", "colorize", "normalize", "overlay", "reduce_channels", "to_array", "to_pil"]

# Colour maps as evenly spaced control points, linearly interpolated in sRGB.
CMAPS: dict[str, tuple[str, ...]] = {
    # ColorBrewer RdBu (11 classes), reversed: blue < 0 < red; centre #f7f7f7.
    "rdbu": (
        "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
        "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
    ),
    # Pure blue–white–red, as LRP papers draw relevance.
    "bwr": ("#0000ff", "#ffffff", "#ff0000"),
    # matplotlib's inferno and viridis sampled at 10 points (CC0, van der Walt & Smith).
    "inferno": (
        "#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60",
        "#cf4446", "#ed6925", "#fb9b06", "#f7d13d", "#fcffa4",
    ),
    "viridis": (
        "#440154", "#482878", "#3e4989", "#31688e", "#26828e",
        "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725",
    ),
    "hot": ("#000000", "#e60000", "#ffd200", "#ffffff"),  # black–red–yellow–white
    "gray": ("#000000", "#ffffff"),
}  # fmt: skip
DIVERGING = "rdbu"
SEQUENTIAL = "inferno"


def _table(name: str) -> torch.Tensor:
    if name not in CMAPS:
        raise ValueError(f"unknown colour map {name!r}; known: {', '.join(CMAPS)}")
    return torch.tensor(
        [[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in CMAPS[name]],
        dtype=torch.float32,
    )


def _apply(t: torch.Tensor, name: str) -> torch.Tensor:
    """Colour values ``t`` in [0, 1] (B, H, W) → RGB (B, 3, H, W) in [0, 1]."""
    table = _table(name).to(t.device)
    pos = t.clamp(0, 1) * (len(table) - 1)
    lo = pos.floor().long().clamp(max=len(table) - 2)
    frac = (pos - lo).unsqueeze(-1)
    rgb = table[lo] * (1 - frac) + table[lo + 1] * frac
    return rgb.permute(0, 3, 1, 2)


def reduce_channels(maps: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Maps ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` → ``(B, H, W)``: ``"sum"`` over
    channels (keeps relevance conservation), ``"abs"`` (sum of ``|R|``) or ``"max_abs"``
    (largest ``|R|``, Simonyan et al.'s saliency)."""
    m = maps.detach().float()
    if m.dim() == 2:
        m = m.unsqueeze(0).unsqueeze(0)
    elif m.dim() == 3:
        m = m.unsqueeze(0)
    if m.dim() != 4:
        raise ValueError(f"maps must be (H, W), (C, H, W) or (B, C, H, W), not {tuple(maps.shape)}")
    if reduce == "sum":
        return m.sum(1)
    if reduce == "abs":
        return m.abs().sum(1)
    if reduce == "max_abs":
        return m.abs().amax(1)
    raise ValueError(f"reduce must be 'sum', 'abs' or 'max_abs', not {reduce!r}")


def normalize(
    maps: torch.Tensor,
    *,
    signed: bool | None = None,
    vmax: float | torch.Tensor | None = None,
    percentile: float = 99.5,
) -> tuple[torch.Tensor, bool]:
    """``(B, H, W)`` maps → ``(values, signed)``: signed maps to ``m / vmax`` clipped to
    [−1, 1], unsigned ones to ``max(m, 0) / vmax`` clipped to [0, 1]. ``signed=None``:
    signed if any value is negative. ``vmax`` per map: given, else the ``percentile`` of
    ``|m|`` (0 maps stay 0)."""
    m = maps.float()
    if signed is None:
        signed = bool((m < 0).any())
    if vmax is None:
        flat = m.abs().flatten(1)
        k = max(1, min(flat.shape[1], round(percentile / 100 * flat.shape[1])))
        v = flat.kthvalue(k, dim=1).values
        v = torch.where(v > 0, v, flat.amax(1))  # a sparse map: fall back to its max
    else:
        v = torch.as_tensor(vmax, dtype=m.dtype, device=m.device).expand(m.shape[0])
    v = torch.where(v > 0, v, torch.ones_like(v)).view(-1, 1, 1)
    if signed:
        return (m / v).clamp(-1, 1), True
    return (m.clamp(min=0) / v).clamp(0, 1), False


def _colored(m: torch.Tensor, cmap, signed, vmax, percentile) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (B, H, W) → (RGB (B, 3, H, W), normalized values (B, H, W))."""
    t, signed = normalize(m, signed=signed, vmax=vmax, percentile=percentile)
    rgb = _apply((t + 1) / 2 if signed else t, cmap or (DIVERGING if signed else SEQUENTIAL))
    return rgb, t


def colorize(
    maps: torch.Tensor,
    cmap: str | None = None,
    *,
    signed: bool | None = None,
    vmax=None,
    percentile: float = 99.5,
    reduce: str = "sum",
) -> torch.Tensor:
    """Attribution maps → RGB ``(B, 3, H, W)`` in [0, 1] (``(3, H, W)`` for one map).
    Signed maps: ``cmap`` default ``"rdbu"``, 0 at the centre colour; unsigned: default
    ``"inferno"``, 0 at the first colour. See :func:`normalize`, :func:`reduce_channels`."""
    single = maps.dim() <= 3  # (H, W) or (C, H, W): one map
    rgb, _ = _colored(reduce_channels(maps, reduce), cmap, signed, vmax, percentile)
    return rgb[0] if single else rgb


def overlay(
    image: torch.Tensor,
    maps: torch.Tensor,
    *,
    alpha: float = 0.7,
    cmap: str | None = None,
    signed: bool | None = None,
    vmax=None,
    percentile: float = 99.5,
    reduce: str = "sum",
) -> torch.Tensor:
    """The heatmap of ``maps`` blended over ``image`` (in [0, 1]; ``(C, H, W)`` or
    ``(B, C, H, W)``, grey or RGB; for model inputs use ``model.fvis_info.denormalize``).
    Each pixel mixes ``(1 − a)·grey(image) + a·colour`` with ``a = alpha·|t|`` and ``t``
    the normalized map, so irrelevant pixels show the image. Maps of another size
    (unupsampled CAMs) are resized bilinearly. Returns RGB like :func:`colorize`."""
    single = image.dim() == 3
    img = image.detach().float()
    img = img.unsqueeze(0) if single else img
    if img.dim() != 4 or img.shape[1] not in (1, 3):
        raise ValueError(
            f"image must be (C, H, W) or (B, C, H, W) with 1 or 3 channels, not "
            f"{tuple(image.shape)}"
        )
    m = reduce_channels(maps, reduce)
    if m.shape[-2:] != img.shape[-2:]:
        m = F.interpolate(
            m.unsqueeze(1), size=img.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    if m.shape[0] != img.shape[0]:
        if img.shape[0] == 1:
            img = img.expand(m.shape[0], -1, -1, -1)
        else:
            raise ValueError(f"{m.shape[0]} maps for {img.shape[0]} images")
    rgb, t = _colored(m, cmap, signed, vmax, percentile)
    grey = img.clamp(0, 1).mean(1, keepdim=True).expand(-1, 3, -1, -1)
    a = alpha * t.abs().unsqueeze(1)
    out = (1 - a) * grey + a * rgb
    return out[0] if single else out


def to_array(rgb: torch.Tensor) -> np.ndarray:
    """RGB in [0, 1], ``(3, H, W)`` or ``(B, 3, H, W)`` → uint8 ``(H, W, 3)`` or
    ``(B, H, W, 3)``."""
    t = rgb.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return t.permute(1, 2, 0).numpy() if t.dim() == 3 else t.permute(0, 2, 3, 1).numpy()


def to_pil(rgb: torch.Tensor):
    """RGB in [0, 1] → a ``PIL.Image`` for ``(3, H, W)``, a list of them for a batch."""
    from fvis.image import to_pil as images_to_pil

    out = images_to_pil(rgb)
    return out[0] if rgb.dim() == 3 else out
