"""Session state and navigation: which view, which unit, the running job, the history.

Buttons navigate through ``on_click`` callbacks, which run before the next script run,
so the widgets they move (the view radio) are set before they are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

VIEWS = ("Units", "Render", "Explain", "History")


@dataclass(frozen=True)
class Unit:
    """One unit: channel (or neuron) ``index`` of ``layer``."""

    layer: str
    index: int

    def __str__(self) -> str:  # the unit-spec spelling of fvis.recipes
        return f"class[{self.index}]" if self.layer == "output" else f"{self.layer}[{self.index}]"


@dataclass
class Entry:
    """One finished render in the session history."""

    model: str
    recipe: object  # fvis.recipes.RenderRecipe
    units: list  # fvis.recipes.Unit, one per image
    images: object  # (B, C, H, W) tensor in [0, 1]
    scores: list[str]  # one label per tile: final objective value or p(class)
    curve: list[float] = field(default_factory=list)


def page_of(unit) -> Unit | None:
    """The unit page of a render's unit (:class:`fvis.recipes.Unit`): its channel or
    class, or None (a direction or a whole layer has no page)."""
    if unit.kind in ("channel", "neuron", "class") and isinstance(unit.index, int):
        return Unit(unit.layer, unit.index)
    return None


def init() -> None:
    ss = st.session_state
    ss.setdefault("view", VIEWS[0])
    ss.setdefault("unit", None)
    ss.setdefault("job", None)
    ss.setdefault("history", [])


def open_unit(unit: Unit) -> None:
    """``on_click`` callback: show ``unit``'s page."""
    st.session_state.view = "Units"
    st.session_state.unit = unit
    st.session_state.grid_layer = unit.layer


def open_grid(layer: str | None = None) -> None:
    """``on_click`` callback: back to the grid (of ``layer``)."""
    st.session_state.view = "Units"
    st.session_state.unit = None
    if layer is not None:
        st.session_state.grid_layer = layer


def go(view: str) -> None:
    st.session_state.view = view
