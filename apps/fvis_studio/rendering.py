"""The render view: any units of any layer, rendered live in a background job.

The controls describe a :class:`fvis.recipes.RenderRecipe` (one control per setting,
its default and the default's source from the recipe itself); *render* fixes the
recipe and starts a job (:mod:`~fvis_studio.jobs_ui`). While it runs, the progress bar,
the latest intermediate images and the objective curve are redrawn a few times a
second and *cancel* stops it at the next step; the controls can change meanwhile (the
job keeps its recipe). A finished render goes to the session history. A recipe file
(the studio's download, or ``fvis render --save-recipe``) loads back into the controls
and renders.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

import fvis
from fvis.recipes import RenderRecipe
from fvis_studio import history, jobs_ui, work
from fvis_studio.uploads import UploadError, read_json

MAIN = ("steps", "seed", "param", "lr", "tv")  # settings shown first; the rest under "more"
CHOICES = {"param": fvis.param.KINDS, "transforms": ("standard", "none"),
           "prior": ("image", "generator:mnist")}  # fmt: skip
HIDDEN = ("units", "seeds", "diversity_layer", "size")  # set by the units box, a loaded recipe


def default_units(ctx) -> str:
    n = ctx.units_in("output")
    return "class[*]" if n <= 16 else "class[0-7]"


def put(recipe: RenderRecipe) -> None:
    """Show ``recipe`` in the controls (before they are drawn)."""
    ss = st.session_state
    ss.r_units = " ".join(recipe.units)
    for f in dataclasses.fields(RenderRecipe):
        if f.name not in HIDDEN:
            v = getattr(recipe, f.name)
            ss[f"r_{f.name}"] = 0.0 if f.name == "lr" and v is None else v
    ss.r_base = recipe  # keeps the settings without a control (per-item seeds, ...)


def control(col, name: str, default):
    """The widget of one recipe setting (its value lives in ``st.session_state``)."""
    help_ = RenderRecipe.SOURCES.get(name, "")
    key = f"r_{name}"
    st.session_state.setdefault(key, 0.0 if name == "lr" else default)
    if name in CHOICES:
        return col.selectbox(name, CHOICES[name], key=key, help=help_)
    if name == "lr":
        v = col.number_input("lr", 0.0, 10.0, step=0.01, format="%.4f", key=key, help=f"0: {help_}")
        return float(v) or None
    if isinstance(default, bool):
        return col.checkbox(name, key=key, help=help_)
    if isinstance(default, int):
        lo = 1 if name in ("steps", "repeat") else 0
        return int(col.number_input(name, lo, 2**31 - 1, key=key, help=help_))
    return float(col.number_input(name, step=0.05, key=key, help=help_))


def controls(ctx) -> RenderRecipe | None:
    """The recipe the controls describe, or None (with the reason in the page)."""
    ss = st.session_state
    base = ss.get("r_base") or RenderRecipe()
    ss.setdefault("r_units", default_units(ctx))
    units = st.text_input(
        "units", key="r_units",
        help="conv3[5], conv3[0-7], class[3], class[*], -conv3[5] (minimized), "
        "conv3[5]@(4,3) (a neuron), conv3{3:1,7:-0.5} (a direction); several separated by spaces",
    )  # fmt: skip
    values = {}
    cols = st.columns(len(MAIN))
    for col, name in zip(cols, MAIN):
        values[name] = control(col, name, getattr(RenderRecipe(), name))
    with st.expander("more settings"):
        rest = [f.name for f in dataclasses.fields(RenderRecipe) if f.name not in (*MAIN, *HIDDEN)]
        cols = st.columns(4)
        for i, name in enumerate(rest):
            values[name] = control(cols[i % 4], name, getattr(RenderRecipe(), name))
    try:
        recipe = base.replace(units=tuple(units.split()), **values)
        if len(recipe.seeds) != len(recipe.unit_list(ctx.model)):
            recipe = recipe.replace(seeds=())
    except (ValueError, LookupError) as e:  # a UnitError, an unknown layer, ...
        st.error(str(e))
        return None
    return recipe


def start(ctx, recipe: RenderRecipe) -> None:
    fn, steps = work.render_work(ctx.model, recipe)
    names = [str(u) for u in recipe.unit_list(ctx.model)]
    jobs_ui.start((fn, steps), kind="render", recipe=recipe, model=ctx.spec, names=names)


def load_recipe(ctx) -> None:
    """``on_change`` of the recipe uploader: the recipe into the controls, and render it."""
    up = st.session_state.get("recipe_file")
    if up is None:
        return
    try:
        data = read_json(up.getvalue(), up.name)
        recipe = RenderRecipe.from_dict(data)
        recipe.unit_list(ctx.model)
    except (UploadError, ValueError, TypeError, LookupError) as e:
        st.session_state.render_error = f"Cannot load {up.name}: {e}"
        return
    put(recipe)
    start(ctx, recipe)


def show(ctx) -> None:
    st.header("Render")
    recipe = controls(ctx)
    c = st.columns([1, 3])
    clicked = c[0].button("render", type="primary", disabled=recipe is None, key="render")
    c[1].file_uploader(
        "load a recipe", key="recipe_file", on_change=load_recipe, args=(ctx,),
        help="a recipe JSON downloaded here or saved by fvis render --save-recipe",
    )  # fmt: skip
    if clicked and recipe is not None:
        try:
            start(ctx, recipe)
        except ValueError as e:
            st.session_state.render_error = str(e)
    if msg := st.session_state.pop("render_error", None):
        st.error(msg)
    jobs_ui.messages()
    jobs_ui.progress()
    if st.session_state.history and st.session_state.job is None:
        st.subheader("Latest")
        history.entry(len(st.session_state.history) - 1)
