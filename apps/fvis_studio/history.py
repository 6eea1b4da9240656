"""The session history: every finished render, newest first, side by side for
comparing settings; each tile opens its unit page, each entry downloads its PNG and
recipe."""

from __future__ import annotations

import streamlit as st

from fvis.image import grid as image_grid
from fvis_studio import state
from fvis_studio.tiles import downloads, tile

MAX_ENTRIES = 24  # oldest results are dropped beyond this (images are kept in memory)


def add(model: str, recipe, result, units, scores: list[str], curve: list[float]) -> None:
    entries = st.session_state.history
    entries.append(state.Entry(model, recipe, units, result.images, scores, curve))
    del entries[:-MAX_ENTRIES]


def settings(model: str, recipe) -> str:
    """The recipe's settings that differ from the defaults, in one line."""
    default, skip = type(recipe)().to_dict(), ("units", "seeds", "recipe", "format")
    changed = [f"{k} {v}" for k, v in recipe.to_dict().items() if k not in skip and v != default[k]]
    return f"{model} · {recipe.steps} steps · seed {recipe.seed} · " + (
        " · ".join(changed) or "defaults"
    )


def entry(i: int, ncol: int = 8) -> None:
    """History entry ``i``: its settings, labelled tiles and downloads."""
    e = st.session_state.history[i]
    st.caption(f"#{i + 1}: {settings(e.model, e.recipe)}")
    for start in range(0, len(e.units), ncol):
        cols = st.columns(ncol)
        for j, col in enumerate(cols[: len(e.units) - start], start):
            with col:
                tile(
                    e.images[j],
                    f"{e.units[j]} · {e.scores[j]}",
                    state.page_of(e.units[j]),
                    f"h{i}-{j}",
                )
    downloads(image_grid(e.images, ncol=ncol), e.recipe.to_json(), f"render-{i + 1}", key=f"h{i}")


def show(ctx) -> None:
    st.header("History")
    entries = st.session_state.history
    if not entries:
        st.info("Nothing rendered yet in this session: renders from the Render view collect here.")
        return
    per_row = st.radio("side by side", [1, 2, 3], index=1, horizontal=True, key="h_cols")
    order = list(range(len(entries)))[::-1]
    for start in range(0, len(order), per_row):
        cols = st.columns(per_row)
        for col, i in zip(cols, order[start : start + per_row]):
            with col:
                entry(i, ncol=max(2, 8 // per_row))
