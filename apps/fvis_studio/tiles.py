"""Labelled, clickable image tiles and the downloads that go with them."""

from __future__ import annotations

import streamlit as st
import torch
from PIL import Image

from fvis.figures import png_bytes
from fvis.image import to_pil
from fvis_studio import state

TILE_PX = 112  # tiles are enlarged to about this many pixels, without smoothing


def picture(img) -> Image.Image:
    """A (C, H, W) tensor in [0, 1], a PIL image or a path, enlarged to about
    :data:`TILE_PX` by whole-pixel repetition (small images stay crisp)."""
    if isinstance(img, torch.Tensor):
        img = to_pil(img)[0]
    elif not isinstance(img, Image.Image):
        img = Image.open(img)
    s = max(1, TILE_PX // max(img.size))
    return img.resize((img.width * s, img.height * s), Image.NEAREST) if s > 1 else img


def image(img, caption: str | None = None, where=None) -> None:
    """``img`` (as :func:`picture` takes it) shown in ``where`` (a column; default the
    page) as a PNG: Streamlit's default sends an RGB picture as a JPEG, whose artifacts
    blur the enlarged pixels."""
    (where or st).image(picture(img), caption=caption, output_format="PNG")


def tile(img, caption: str, unit: state.Unit | None, key: str) -> None:
    """The image with its caption and, for a unit, a button opening its page."""
    image(img, caption)
    if unit is not None:
        st.button(
            str(unit), key=f"open-{key}", on_click=state.open_unit, args=(unit,),
            help="open its page", type="tertiary",
        )  # fmt: skip


def downloads(img, recipe: str | None, name: str, key: str) -> None:
    """Download buttons for the PNG of ``img`` and the ``recipe`` (JSON text) that made it."""
    cols = st.columns(2)
    img = to_pil(img)[0] if isinstance(img, torch.Tensor) else img
    cols[0].download_button("⬇ PNG", png_bytes(img), f"{name}.png", "image/png", key=f"png-{key}")
    if recipe is not None:
        cols[1].download_button(
            "⬇ recipe", recipe, f"{name}.json", "application/json",
            key=f"recipe-{key}",
        )  # fmt: skip


def grid(items, ncol: int, key: str) -> None:
    """``items``: (image, caption, unit) triples, ``ncol`` per row."""
    for start in range(0, len(items), ncol):
        cols = st.columns(ncol)
        for col, (i, (img, caption, unit)) in zip(cols, enumerate(items[start:], start)):
            with col:
                tile(img, caption, unit, f"{key}-{i}")
