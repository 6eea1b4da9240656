"""The explain view: an input, its heatmap for any method, and the chosen layer's top
channels with their visualizations, each opening its unit page — the building-blocks
loop: decision → units → what they respond to → dataset evidence."""

from __future__ import annotations

import streamlit as st
import torch

import fvis
from fvis import heatmap
from fvis.attribution import METHODS, get
from fvis.attribution.base import upsample
from fvis.attribution.layer import LayerGradientXActivation, conv_layer, top_channels
from fvis.recipes import ExplainRecipe
from fvis_studio import state
from fvis_studio.tiles import downloads, image
from fvis_studio.uploads import UploadError, read_image


def pick_input(ctx) -> tuple[torch.Tensor, str] | None:
    """(image (1, C, H, W) in [0, 1], description) or None (with a message)."""
    info = ctx.model.fvis_info
    digits = tuple(info.input_size) == (1, 28, 28)
    sources = ["held-out digit", "upload"] if digits else ["upload"]
    source = st.radio("input", sources, horizontal=True, key="e_source")
    if source == "upload":
        up = st.file_uploader("image", key="e_upload", help="PNG, JPEG or any image PIL reads")
        if up is None:
            st.info("Upload an image to explain.")
            return None
        try:
            img = read_image(up.getvalue(), up.name, tuple(info.input_size[1:]), info.channels)
        except UploadError as e:
            st.error(str(e))
            return None
        return img, up.name
    from fvis.data import mnist

    images, labels = mnist("test")
    i = st.number_input("digit (0–999)", 0, len(images) - 1, 0, key="e_digit")
    return images[i : i + 1], f"held-out digit #{i}, true label {ctx.labels[int(labels[i])]}"


def show(ctx) -> None:
    st.header("Explain")
    model, info = ctx.model, ctx.model.fvis_info
    picked = pick_input(ctx)
    if picked is None:
        return
    img, what = picked
    x = info.normalize(img.to(fvis.hooks.model_device(model)))
    with torch.no_grad():
        probs = model(x).float().softmax(1)[0].cpu()
    pred = int(probs.argmax())
    c = st.columns(4)
    targets = list(range(len(ctx.labels)))
    target = c[0].selectbox(
        "target class", targets, index=pred, key=f"e_target-{what}",  # a new input: its prediction
        format_func=lambda k: f"{ctx.labels[k]} (p={probs[k]:.3f})",
    )  # fmt: skip
    names = sorted(METHODS)
    method = c[1].selectbox(
        "method", names, index=names.index("integrated_gradients"), key="e_method"
    )
    spatial = [r.name for r in ctx.layers if len(r.shape) == 3]
    try:
        default = spatial.index(conv_layer(model, x))
    except (fvis.LayerError, ValueError):
        default = 0
    layer = c[2].selectbox("layer", spatial, index=default, key="e_layer") if spatial else None
    top = c[3].number_input("top channels", 1, 32, 6, key="e_top")
    st.caption(f"{what} · predicted {ctx.labels[pred]} (p={probs[pred]:.3f})")
    try:
        attr = get(method)(model).attribute(x, target)
        attr = attr if attr.dim() == 3 else attr.sum(1)
        if attr.shape[-2:] != x.shape[-2:]:
            attr = upsample(attr, x.shape[-2:])
    except Exception as e:  # a method that refuses this model or layer says why
        st.error(f"{method} cannot explain this: {e}")
        return
    base = img[0] if img.shape[1] == 3 else img[0].expand(3, -1, -1)
    over = heatmap.overlay(base, attr.detach().cpu())
    c = st.columns([1, 1, 4])
    image(img[0], "input", c[0])
    image(over[0] if over.dim() == 4 else over, f"{method} for {ctx.labels[target]}", c[1])
    with c[0]:
        recipe = ExplainRecipe(method=method, layer=layer, target=target, top=int(top))
        downloads(over[0] if over.dim() == 4 else over, recipe.to_json(), "explanation", "e-dl")
    if layer is None:
        return
    blocks(ctx, x, base, target, layer, int(top))


def blocks(ctx, x, base, target: int, layer: str, top: int) -> None:
    """The layer's top channels by gradient × activation, each with its visualization
    (from the gallery), where in the input it counted, and a button to its page."""
    try:
        ranked = top_channels(ctx.model, x, target, layer, min(top, ctx.units_in(layer)))
        maps = LayerGradientXActivation(ctx.model).attribute(x, target, layer=layer)[0]
    except Exception as e:
        st.error(f"Cannot rank the channels of {layer}: {e}")
        return
    channels = ranked.indices[0].tolist()
    maps = upsample(maps[channels], x.shape[-2:]).cpu()
    st.subheader(f"Top channels of {layer} for {ctx.labels[target]}")
    cols = st.columns(len(channels))
    for col, c, s, m in zip(cols, channels, ranked.values[0].tolist(), maps):
        u = state.Unit(layer, c)
        with col:
            thumb = ctx.gallery.thumbnail(u)
            if thumb is not None:
                image(thumb, f"{u} ({s:+.3g})")
            else:
                st.caption(f"{u} ({s:+.3g}), not rendered yet")
            image(heatmap.overlay(base, m[None]), "where it counted")
            st.button(str(u), key=f"e-open-{c}", on_click=state.open_unit, args=(u,),
                      type="tertiary", help="open its page")  # fmt: skip
