"""Models shared by every browser session (``st.cache_resource``: one object per spec and
weights) and what is cached about them."""

from __future__ import annotations

import streamlit as st

import fvis
from fvis_studio import examples


@st.cache_resource(show_spinner="loading the model", max_entries=4)
def load(spec: str, weights: str | None):
    """One model object per (spec, weights); concurrent sessions share it (fvis's calls are
    safe for that)."""
    return fvis.load_model(spec, weights=weights, device=fvis.models.default_device())


@st.cache_resource(max_entries=4)
def layer_list(spec: str, weights: str | None) -> list:
    """``fvis.layers`` of the model, without ``input``."""
    return [r for r in fvis.layers(load(spec, weights)) if r.name != "input"]


@st.cache_data(max_entries=256, show_spinner="ranking the held-out digits")
def dataset_examples(spec: str, weights: str | None, layer: str, index: int, rank: str):
    """:func:`fvis_studio.examples.examples` for a unit, computed once per unit and rank."""
    return examples.examples(load(spec, weights), layer, index, rank=rank)
