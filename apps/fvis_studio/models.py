"""Models shared by every browser session (``st.cache_resource``: one object per spec and
weights) and what is cached about them."""

from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st
import torch

import fvis
from fvis_studio.gallery import Gallery


@st.cache_resource(show_spinner="loading the model", max_entries=4)
def load(spec: str, weights: str | None):
    """One model object per (spec, weights); concurrent sessions share it (fvis's calls are
    safe for that)."""
    return fvis.load_model(spec, weights=weights, device=fvis.models.default_device())


@st.cache_resource
def warm_up() -> threading.Thread:
    """Pay, once per server and beside the first page, what the first render would:
    building a torch optimizer imports ``torch._dynamo`` (seconds on a slow machine)."""

    def work():
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    thread = threading.Thread(target=work, name="fvis-studio-warm-up", daemon=True)
    thread.start()
    return thread


@st.cache_resource(max_entries=4)
def layer_list(spec: str, weights: str | None) -> list:
    """``fvis.layers`` of the model, without ``input``."""
    return [r for r in fvis.layers(load(spec, weights)) if r.name != "input"]


@st.cache_resource(max_entries=8)
def gallery(spec: str, weights: str | None, base: str) -> Gallery:
    """The model's :class:`~fvis_studio.gallery.Gallery` (found by hashing its weights,
    once), adding units under ``base``."""
    return Gallery.for_model(spec, weights, load(spec, weights), Path(base))


@st.cache_data(max_entries=256, show_spinner="ranking the held-out digits")
def dataset_examples(spec: str, weights: str | None, unit: str, rank: str, k: int, method: str):
    """``(top, bottom)`` of :func:`fvis.examples.dataset_examples` on the bundled held-out
    digits for a unit spec: each a list of ``(image, heatmap, index, value)`` (images as
    (C, H, W) tensors in [0, 1]); computed once per unit, rank and method."""
    from fvis.examples import dataset_examples
    from fvis.heatmap import overlay

    (ex,) = dataset_examples(load(spec, weights), None, [unit], k=k, rank=rank, method=method)
    out = []
    for side in ("top", "bottom"):
        images = getattr(ex, f"{side}_images")
        heat = overlay(images, getattr(ex, f"{side}_maps").unsqueeze(1))
        index, value = getattr(ex, f"{side}_index").tolist(), getattr(ex, f"{side}_value").tolist()
        out.append(list(zip(images, heat, index, value)))
    return tuple(out)
