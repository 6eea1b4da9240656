"""Uploaded files, read defensively: anything that is not a small enough image, or not a
recipe, is refused with one line saying what was wrong."""

from __future__ import annotations

import io
import json
import warnings

import torch
from PIL import Image

from fvis.image import load_image

__all__ = ["MAX_PIXELS", "UploadError", "read_image", "read_json"]

MAX_PIXELS = 4096 * 4096  # 16 MP decoded (64 MiB as RGBA): larger images are refused unread


class UploadError(ValueError):
    """An uploaded file the studio cannot use."""


def read_image(data: bytes, name: str, size: tuple[int, int], channels: int) -> torch.Tensor:
    """The picture in ``data`` as (1, ``channels``, H, W) in [0, 1], resized to ``size``
    (:func:`fvis.image.load_image`).

    The header is read before any pixel is decoded: a file PIL cannot identify, or one of
    more than :data:`MAX_PIXELS` pixels (a decompression bomb), raises :class:`UploadError`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            w, h = Image.open(io.BytesIO(data)).size  # header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(f"{name} is refused as a decompression bomb ({e})") from None
    except Exception as e:  # PIL raises many types for foreign files
        raise UploadError(
            f"{name} is not an image PIL can read ({type(e).__name__}): upload a PNG or JPEG"
        ) from None
    if w * h > MAX_PIXELS:
        raise UploadError(
            f"{name} is {w}×{h} pixels; the studio takes at most "
            f"{MAX_PIXELS / 1e6:.0f} megapixels: downscale it first"
        )
    try:
        return load_image(io.BytesIO(data), size=size, channels=channels)
    except Exception as e:  # a truncated or corrupt body behind a valid header
        raise UploadError(f"{name} is a damaged image ({e}): upload it again") from None


def read_json(data: bytes, name: str) -> dict:
    """A JSON object from an uploaded file, or :class:`UploadError`."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UploadError(
            f"{name} is not a JSON recipe ({e}): upload a file the studio saved"
        ) from None
    if not isinstance(obj, dict):
        raise UploadError(f"{name} holds a JSON {type(obj).__name__}, not a recipe object")
    return obj
