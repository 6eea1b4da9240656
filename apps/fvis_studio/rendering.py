"""The render view: any units of any layer, rendered live in a background job.

Controls describe a recipe; *render* fixes it and starts a :class:`~fvis_studio.jobs.Job`
(one at a time per session). While it runs, a fragment redraws the progress bar, the
latest intermediate images and the objective curve a few times a second; *cancel* stops
it at the next step. Controls can change meanwhile: the job keeps the recipe it started
with. A finished render goes to the session history (:mod:`~fvis_studio.history`).
"""

from __future__ import annotations

import streamlit as st

import fvis
from fvis.errors import check_finite
from fvis.hooks import OUTPUT
from fvis_studio import history, jobs_ui, work
from fvis_studio.uploads import UploadError, read_json


def parse_units(text: str, n: int, layer: str) -> list[int]:
    """``"3"``, ``"0-7"``, ``"1,4,9"`` or a mix → unit indices, each checked against ``n``."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        a, dash, b = part.partition("-")
        try:
            lo, hi = int(a), int(b) if dash else int(a)
        except ValueError:
            raise ValueError(
                f"cannot read units {text!r}: write indices and ranges such as 0-7 or 1,4,9"
            ) from None
        if hi < lo:
            raise ValueError(f"range {part} runs backwards: write {hi}-{lo}")
        work.check_units(layer, [lo, min(hi, n)], n)  # before a range of 10¹¹ units is built
        out += range(lo, hi + 1)
    work.check_units(layer, out, n)
    return out


def start(ctx, recipe: dict) -> None:
    names = [str(u) for u in work.units_of(recipe)]
    jobs_ui.start(work.render_work(ctx.model, recipe), kind="render", recipe=recipe, names=names)


def load_recipe(ctx) -> None:
    """``on_change`` of the recipe uploader: put the recipe in the controls and render it."""
    up = st.session_state.get("recipe_file")
    if up is None:
        return
    try:
        recipe = {**work.DEFAULTS, **read_json(up.getvalue(), up.name)}
        if recipe.get("model", ctx.spec) != ctx.spec:
            raise UploadError(
                f"{up.name} is a recipe for {recipe['model']!r}; load that model first"
            )
        layer, units = recipe["layer"], [int(k) for k in recipe["units"]]
        if layer not in {r.name for r in ctx.layers}:
            raise UploadError(f"{up.name} names layer {layer!r}, which {ctx.spec} does not have")
        work.check_units(layer, units, ctx.units_in(layer))
        steps, seed = int(recipe["steps"]), int(recipe["seed"])  # every value read and
        tv = check_finite("tv", recipe["tv"])  # checked before the controls change
        lr = 0.0 if recipe["lr"] is None else check_finite("lr", recipe["lr"])
    except (UploadError, KeyError, TypeError, ValueError, IndexError) as e:
        st.session_state.render_error = f"Cannot load the recipe: {e}"
        return
    ss = st.session_state
    ss.r_layer, ss.r_units = layer, ",".join(map(str, units))
    ss.r_negative, ss.r_param, ss.r_prior = (
        bool(recipe["negative"]),
        recipe["param"],
        recipe["prior"],
    )
    ss.r_steps, ss.r_tv, ss.r_seed, ss.r_lr = steps, tv, seed, lr
    start(ctx, {**recipe, "units": units})


def controls(ctx) -> dict | None:
    """The recipe the controls describe, or None (with a message) if they are invalid."""
    names = [r.name for r in ctx.layers]
    default = names.index(OUTPUT) if OUTPUT in names else len(names) // 2
    c = st.columns([2, 2, 1, 1])
    layer = c[0].selectbox(
        "layer", names, index=default, key="r_layer",
        format_func=lambda n: "output (classes)" if n == OUTPUT else n,
    )  # fmt: skip
    n = ctx.units_in(layer)
    text = c[1].text_input("units", "0-7", key="r_units", help=f"{layer} has units 0–{n - 1}")
    negative = c[2].checkbox("minimize", key="r_negative")
    steps = c[3].number_input("steps", 1, 100_000, 256, key="r_steps")
    c = st.columns(5)
    param = c[0].selectbox("parameterization", fvis.param.KINDS, key="r_param")
    prior = c[1].selectbox("prior", ["image", "generator:mnist"], key="r_prior")
    lr = c[2].number_input(
        "learning rate", 0.0, 10.0, 0.0, step=0.01, format="%.4f", key="r_lr",
        help="0: the parameterization's own (0.05 Fourier/pixel, 0.1 MACO, 0.001 CPPN)",
    )  # fmt: skip
    tv = c[3].number_input("total variation", 0.0, 100.0, 0.05, step=0.05, key="r_tv")
    seed = c[4].number_input("seed", 0, 2**31 - 1, 0, key="r_seed")
    try:
        units = parse_units(text, n, layer)
    except (ValueError, IndexError) as e:
        st.error(str(e))
        return None
    return {
        "kind": "render", "model": ctx.spec, "weights": ctx.weights, "layer": layer,
        "units": units, "negative": negative, "param": param, "prior": prior,
        "steps": int(steps), "lr": float(lr) or None, "tv": float(tv), "seed": int(seed),
    }  # fmt: skip


def show(ctx) -> None:
    st.header("Render")
    recipe = controls(ctx)
    c = st.columns([1, 3])
    clicked = c[0].button("render", type="primary", disabled=recipe is None, key="render")
    c[1].file_uploader(
        "load a recipe", type=["json"], key="recipe_file", on_change=load_recipe, args=(ctx,),
        label_visibility="collapsed",
    )  # fmt: skip
    if clicked and recipe is not None:
        try:
            start(ctx, recipe)
        except (ValueError, IndexError) as e:
            st.session_state.render_error = str(e)
    if msg := st.session_state.pop("render_error", None):
        st.error(msg)
    jobs_ui.messages()
    jobs_ui.progress()
    if st.session_state.history and st.session_state.job is None:
        st.subheader("Latest")
        history.entry(len(st.session_state.history) - 1)
