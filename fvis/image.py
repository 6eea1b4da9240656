"""Images in and out: tensors (B, C, H, W) in [0, 1] ↔ PIL images and files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) or (C, H, W) in [0, 1] → PIL images (``L`` for 1 channel, ``RGB`` for 3;
    other channel counts show their first three, or the first one)."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    arr = (images.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    out = []
    for a in arr:
        if a.shape[0] == 1 or a.shape[0] == 2:
            out.append(Image.fromarray(a[0], mode="L"))
        else:
            out.append(Image.fromarray(np.ascontiguousarray(a[:3].transpose(1, 2, 0)), "RGB"))
    return out


def grid(
    images: torch.Tensor,
    ncol: int | None = None,
    pad: int = 2,
    scale: int = 1,
    background: float = 1.0,
) -> Image.Image:
    """Tile a batch (B, C, H, W) into one PIL image, ``ncol`` per row, each enlarged
    ``scale``× with nearest-neighbour (pixels stay visible)."""
    b, c, h, w = images.shape
    ncol = ncol or min(b, 10)
    nrow = math.ceil(b / ncol)
    canvas = torch.full(
        (min(c, 3) if c >= 3 else 1, nrow * (h + pad) + pad, ncol * (w + pad) + pad), background
    )
    for i in range(b):
        r, k = divmod(i, ncol)
        img = images[i, :3] if c >= 3 else images[i, :1]
        canvas[
            :,
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + k * (w + pad) : pad + k * (w + pad) + w,
        ] = img.detach().float().cpu()
    pil = to_pil(canvas)[0]
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def load_image(path, size: tuple[int, int] | None = None, channels: int = 3) -> torch.Tensor:
    """Read an image file as (1, C, H, W) in [0, 1], converted to ``channels`` (1 or 3)
    and resized to ``size`` (H, W) when given."""
    return image_tensor(open_image(path, channels), size)


def open_image(path, channels: int = 3) -> Image.Image:
    """The image file at ``path`` as a PIL image with ``channels`` (1: "L", else "RGB");
    ``ValueError`` naming the file when it is not an image PIL can read."""
    try:
        return Image.open(path).convert("L" if channels == 1 else "RGB")
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"{path} is not an image fvis can read ({e})") from None


def image_tensor(img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A PIL image as (1, C, H, W) in [0, 1], resized (bilinear) to ``size`` (H, W) when
    given."""
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
    return t.unsqueeze(0).contiguous()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix: :data:`IMAGE_SUFFIXES`), sorted
    by name; refused when it is not a folder or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); point to a folder of them"
        )
    return files
