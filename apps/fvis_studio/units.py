"""The unit explorer: the layer list, the grid of every unit of a layer, a unit's page.

Everything shown comes from the gallery (:mod:`fvis_studio.gallery`), so browsing
renders nothing; a unit the gallery lacks is rendered on demand (a background job) and
added to it.
"""

from __future__ import annotations

import streamlit as st
from PIL import Image

from fvis.hooks import OUTPUT
from fvis_studio import gallery, jobs_ui, models, state, work
from fvis_studio.tiles import downloads, grid, image

PAGE = 64  # tiles per grid page


def layer_label(ctx, name: str) -> str:
    shape = next(r.shape for r in ctx.layers if r.name == name)
    dims = "×".join(map(str, shape)) if shape else "1"
    return f"{name} · {dims}"


def layer_list(ctx) -> str:
    """The layer radio (name and shape); returns the chosen layer."""
    names = [r.name for r in ctx.layers]
    ss = st.session_state
    if ss.get("grid_layer") not in names:
        ss.grid_layer = next((n for n in names if n.startswith("conv")), names[0])
    widget = st.radio if len(names) <= 40 else st.selectbox
    return widget("layer", names, key="grid_layer", format_func=lambda n: layer_label(ctx, n))


def unit_grid(ctx, layer: str) -> None:
    n = ctx.units_in(layer)
    pages = (n + PAGE - 1) // PAGE
    page = 0
    if pages > 1:
        page = st.number_input(f"page (of {pages})", 1, pages, 1, key=f"page-{layer}") - 1
    units = [state.Unit(layer, k) for k in range(page * PAGE, min(n, (page + 1) * PAGE))]
    have = sum(ctx.gallery.has(u) for u in units)
    st.subheader(f"{layer_label(ctx, layer)}: {n} units")
    st.caption(f"{have} of {len(units)} shown are in the gallery; click a unit for its page.")
    for start in range(0, len(units), 8):
        for col, u in zip(st.columns(8), units[start : start + 8]):
            with col:
                thumb = ctx.gallery.thumbnail(u)
                if thumb is not None:
                    image(thumb)
                else:
                    st.caption("not rendered yet")
                st.button(str(u), key=f"g-{u}", on_click=state.open_unit, args=(u,),
                          type="tertiary", help="open its page")  # fmt: skip


def unit_page(ctx, unit: state.Unit) -> None:
    n = ctx.units_in(unit.layer)
    c = st.columns([1, 1, 1, 5])
    c[0].button("← grid", on_click=state.open_grid, args=(unit.layer,), key="u-back")
    if unit.index > 0:
        prev = state.Unit(unit.layer, unit.index - 1)
        c[1].button("previous", on_click=state.open_unit, args=(prev,), key="u-prev")
    if unit.index < n - 1:
        nxt = state.Unit(unit.layer, unit.index + 1)
        c[2].button("next", on_click=state.open_unit, args=(nxt,), key="u-next")
    what = f"class {ctx.labels[unit.index]}" if unit.layer == OUTPUT else f"unit {unit.index}"
    st.header(f"{unit} — {what} of {layer_label(ctx, unit.layer)}")
    jobs_ui.messages()
    rec = ctx.gallery.record(unit)
    if rec is None:
        render_on_demand(ctx, unit)
    else:
        visualizations(ctx, rec)
    dataset_examples(ctx, unit, rec)


def render_on_demand(ctx, unit: state.Unit) -> None:
    st.info(f"{unit} is not in the gallery yet: render it as the gallery renders each unit.")
    job = st.session_state.job
    c = st.columns([1, 1, 4])
    steps = c[0].number_input("steps", 1, 100_000, ctx.gallery.recipe.render.steps, key="u-steps")
    if c[1].button("render it", type="primary", key="u-render", disabled=bool(job and job.running)):
        jobs_ui.start(
            work.unit_work(ctx.model, unit, ctx.gallery, steps=int(steps)),
            kind="unit", unit=unit, gallery=ctx.gallery, steps=int(steps),
            names=[str(unit)], model=ctx.spec,
        )  # fmt: skip
    jobs_ui.progress()


def visualizations(ctx, rec) -> None:
    obj = rec.objective
    cols = st.columns([1, 1, 4])
    image(rec.images["positive"], f"maximized · {obj['positive']:.3g}", cols[0])
    recipe, item = gallery.render_recipe(rec)
    if "negative" in rec.images:
        value = -obj["negative"]  # recorded as -unit's value: shown as the unit's
        image(rec.images["negative"], f"minimized · {value:.3g}", cols[1])
    if "diversity" in rec.images:
        with cols[2]:
            values = obj["diversity"]
            items = [
                (img, f"diverse · {v:.3g}", None)
                for img, v in zip(rec.tiles("diversity", len(values)), values)
            ]
            grid(items, len(values), "u-div")
    if "codespace" in rec.images:
        image(rec.images["codespace"], f"code space · {obj['codespace']:.3g}")
    with st.columns([1, 2])[0]:
        downloads(Image.open(rec.images["positive"]), recipe.to_json(), str(rec.unit), "u-pos")
    if rec.curve:
        st.line_chart(rec.curve, height=140, x_label="step", y_label="objective")
    else:
        st.caption("objective curve: not recorded by the gallery (its final value is above)")
    with st.expander(f"recipe (item {item} of its batch; fvis render --recipe reproduces it)"):
        st.code(recipe.to_json(), language="json")


def dataset_examples(ctx, unit: state.Unit, rec) -> None:
    """Top and bottom held-out digits with where the unit fires, ranked by max or mean."""
    if tuple(ctx.model.fvis_info.input_size) != (1, 28, 28):
        return
    st.subheader("Dataset examples (held-out digits)")
    rank = st.radio(
        "rank by", ["max", "mean"], horizontal=True, key="u-rank",
        format_func=lambda r: f"{r} over positions",
    )  # fmt: skip
    g = ctx.gallery.recipe
    if rec is not None and rec.examples and rank == rec.rank:
        sides = []
        for side in ("top", "bottom"):
            ex = rec.examples[side]
            images, maps = rec.tiles(side, len(ex)), rec.tiles(f"{side}_maps", len(ex))
            sides.append([(i, m, e["index"], e["value"]) for i, m, e in zip(images, maps, ex)])
    else:
        sides = models.dataset_examples(
            ctx.spec, ctx.weights, str(unit), rank, g.examples or 8, g.heatmap
        )
    for title, rows in zip(("excite it most", "inhibit it most"), sides):
        st.caption(f"{title} ({rank} over positions; below each, where it fires)")
        cols = st.columns(len(rows))
        for col, (img, heat, j, value) in zip(cols, rows):
            image(img, f"#{j}: {value:.3g}", col)
            image(heat, where=col)


def show(ctx) -> None:
    left, right = st.columns([1, 5])
    with left:
        layer = layer_list(ctx)
    with right:
        unit = st.session_state.unit
        if unit is not None:
            n = ctx.units_in(unit.layer) if unit.layer in {r.name for r in ctx.layers} else 0
            if not 0 <= unit.index < n:
                st.error(f"{unit} does not exist: {unit.layer} has units 0–{n - 1}")
                unit = None
        if unit is None:
            unit_grid(ctx, layer)
        else:
            unit_page(ctx, unit)
