"""The unit explorer: the layer list, the grid of every unit of a layer, a unit's page.

Everything shown comes from the gallery (:mod:`fvis_studio.gallery`), so browsing
renders nothing; a unit the gallery lacks is rendered on demand (a background job) and
added to it.
"""

from __future__ import annotations

import streamlit as st

from fvis.hooks import OUTPUT
from fvis_studio import jobs_ui, models, state, work
from fvis_studio.tiles import downloads, grid, picture

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
    items = []
    for u in units:
        thumb = ctx.gallery.thumbnail(u)
        items.append((thumb, f"{u}" if thumb else f"{u} (not rendered)", u))
    for start in range(0, len(items), 8):
        cols = st.columns(8)
        for col, (thumb, caption, u) in zip(cols, items[start : start + 8]):
            with col:
                if thumb is not None:
                    st.image(picture(thumb), caption=caption)
                else:
                    st.caption(caption)
                st.button(
                    str(u), key=f"g-{u}", on_click=state.open_unit, args=(u,),
                    use_container_width=True,
                )  # fmt: skip


def unit_page(ctx, unit: state.Unit) -> None:
    n = ctx.units_in(unit.layer)
    c = st.columns([1, 1, 1, 5])
    c[0].button("← grid", on_click=state.open_grid, args=(unit.layer,), key="u-back")
    if unit.index > 0:
        c[1].button("previous", on_click=state.open_unit,
                    args=(state.Unit(unit.layer, unit.index - 1),), key="u-prev")  # fmt: skip
    if unit.index < n - 1:
        c[2].button("next", on_click=state.open_unit,
                    args=(state.Unit(unit.layer, unit.index + 1),), key="u-next")  # fmt: skip
    kind = "class" if unit.layer == OUTPUT else "unit"
    st.header(f"{unit} — {kind} {unit.index} of {layer_label(ctx, unit.layer)}")
    jobs_ui.messages()
    rec = ctx.gallery.record(unit)
    if rec is None:
        st.info(f"{unit} is not in the gallery yet.")
        job = st.session_state.job
        c = st.columns([1, 1, 4])
        steps = c[0].number_input("steps", 1, 10_000, work.DEFAULTS["steps"], key="u-steps")
        if c[1].button(
            "render it", type="primary", key="u-render", disabled=bool(job and job.running)
        ):
            jobs_ui.start(
                work.unit_work(ctx.model, unit, steps=int(steps)),
                kind="unit", unit=unit, gallery=ctx.gallery, names=["positive", "negative"],
            )  # fmt: skip
        jobs_ui.progress()
    else:
        cols = st.columns([1, 1, 4])
        with cols[0]:
            st.image(picture(rec.positive), caption="maximized")
            downloads(picture(rec.positive), rec.recipe, f"{unit}", key="u-pos")
        with cols[1]:
            st.image(picture(rec.negative), caption="minimized (negative)")
        with cols[2]:
            st.caption("diversity")
            grid([(img, f"diverse {i}", None) for i, img in enumerate(rec.diversity)], 4, "u-div")
        if rec.curve:
            st.line_chart(rec.curve, height=140, x_label="step", y_label="objective")
        with st.expander("recipe"):
            st.json(rec.recipe)
    dataset_examples(ctx, unit)


def dataset_examples(ctx, unit: state.Unit) -> None:
    if tuple(ctx.model.fvis_info.input_size) != (1, 28, 28):
        return
    st.subheader("Dataset examples (held-out digits)")
    rank = st.radio("rank by", ["max", "mean"], horizontal=True, key="u-rank",
                    format_func=lambda r: f"{r} over positions")  # fmt: skip
    top, bottom = models.dataset_examples(ctx.spec, ctx.weights, unit.layer, unit.index, rank)
    for title, rows in (("excite it most", top), ("inhibit it most", bottom)):
        st.caption(title)
        cols = st.columns(len(rows))
        for col, (img, value, j) in zip(cols, rows):
            col.image(picture(img), caption=f"#{j}: {value:.3g}")


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
