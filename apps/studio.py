"""fvis studio: explore a model's units and explanations in the browser.

    streamlit run apps/studio.py            (or: make studio)

Pick a model, then
* **Visualize**: render channels, neurons or classes (one image per unit, in one batch),
  maximized or minimized, with a pixel/Fourier image or a generator prior;
* **Explain**: an attribution heatmap for a held-out digit or an uploaded image, and the
  building blocks — the channels that drove the decision and what they respond to;
* **Dataset**: the held-out digits that activate a channel most (bundled MNIST models).
"""

from __future__ import annotations

import streamlit as st
import torch

import fvis
from fvis import objectives as O

st.set_page_config(page_title="fvis studio", layout="wide")


@st.cache_resource
def load(spec: str, weights: str):
    return fvis.load_model(
        spec,
        weights=None if weights == "none" else weights,
        device=fvis.models.default_device(),
    )


@st.cache_data
def layer_table(spec: str, weights: str):
    return [(r.name, r.type, r.channels, r.shape) for r in fvis.layers(load(spec, weights))]


def sidebar():
    st.sidebar.title("fvis studio")
    spec = st.sidebar.text_input(
        "model",
        "fvis:mnist",
        help="fvis:mnist, fvis:mnist-mlp, torchvision:NAME, timm:NAME, hf:FOLDER or a "
        "checkpoint path",
    )
    weights = st.sidebar.selectbox("weights", ["DEFAULT", "none"])
    try:
        model = load(spec, weights)
    except Exception as e:  # shown to the user, who can fix the spec
        st.sidebar.error(str(e))
        st.stop()
    return spec, weights, model


def visualize_tab(spec, weights, model):
    rows = layer_table(spec, weights)
    names = [r[0] for r in rows if r[0] != "input"]
    kind = st.radio("unit", ["channel", "neuron", "class"], horizontal=True)
    cols = st.columns(4)
    if kind == "class":
        labels = model.fvis_info.labels or [str(i) for i in range(rows[-1][2])]
        chosen = cols[0].multiselect("classes", list(labels), default=list(labels)[:4])
        units = [
            O.class_logit(model.fvis_info.label_index(c) if model.fvis_info.labels else int(c))
            for c in chosen
        ]
    else:
        layer = cols[0].selectbox("layer", names, index=max(0, len(names) // 2))
        n = dict((r[0], r[2]) for r in rows)[layer]
        first, last = cols[1].slider("channels", 0, n - 1, (0, min(n - 1, 7)))
        make = O.channel if kind == "channel" else O.neuron
        units = [make(layer, k) for k in range(first, last + 1)]
    negative = cols[2].checkbox("minimize")
    steps = cols[3].number_input("steps", 8, 4096, 256, step=64)
    c2 = st.columns(4)
    tv = c2[0].number_input("total variation", 0.0, 10.0, 0.05, step=0.05)
    seed = c2[1].number_input("seed", 0, 10_000, 0)
    prior = c2[2].selectbox("prior", ["image", "generator:mnist"])
    param_kind = c2[3].selectbox("parameterization", list(fvis.param.KINDS))
    if not units:
        st.info("choose at least one unit")
        return
    if st.button("render", type="primary"):
        if negative:
            units = [-u for u in units]
        objective = O.one_per_item(units)
        if tv:
            objective = objective - tv * O.total_variation()
        if prior == "image":
            param = fvis.param.for_input(
                model.fvis_info.input_size, len(units), kind=param_kind, seed=int(seed)
            )
        else:
            from fvis.codespace import param_for

            param = param_for(prior, model, batch=len(units), seed=int(seed))
        bar = st.progress(0.0, text="rendering")
        result = fvis.render(
            model, objective, param, steps=int(steps), seed=int(seed), progress=False
        )
        bar.progress(1.0, text="done")
        st.image(
            result.grid(ncol=8, scale=max(1, 112 // model.fvis_info.input_size[2])),
            caption=" | ".join(u.name for u in units),
        )
        st.line_chart(result.history.numpy(), height=200)


def pick_input(model):
    meta = model.fvis_info
    up = st.file_uploader("image", type=["png", "jpg", "jpeg"])
    if up is not None:
        from fvis.image import load_image

        return load_image(up, size=tuple(meta.input_size[1:]), channels=meta.channels)
    if meta.input_size == (1, 28, 28):
        from fvis.data import mnist

        i = st.slider("held-out digit", 0, 999, 0)
        return mnist("test")[0][i : i + 1]
    st.info("upload an image")
    st.stop()


def explain_tab(model):
    from fvis.attribution import METHODS
    from fvis.explain import building_blocks

    img = pick_input(model)
    cols = st.columns(4)
    method = cols[0].selectbox(
        "method", sorted(METHODS), index=sorted(METHODS).index("integrated_gradients")
    )
    top = cols[1].number_input("channels / groups", 1, 16, 4)
    steps = cols[2].number_input("render steps", 8, 2048, 128, step=64)
    blocks = st.radio("blocks", ["top channels", "neuron groups"], horizontal=True)
    if cols[3].button("explain", type="primary"):
        with st.spinner("attributing and rendering"):
            if blocks == "neuron groups":
                from fvis.groups import neuron_groups

                groups = neuron_groups(model, img, k=int(top), steps=int(steps))
                caption = (f"class {groups.label}: {groups.layer} ≈ {int(top)} groups "
                           f"(relative error {groups.error:.1%})")  # fmt: skip
                st.image(groups.figure(), caption=caption)
                return
            report = building_blocks(model, img, method=method, top=int(top), steps=int(steps))
        st.image(report.figure(), caption=f"class {report.label}, p={report.probability:.3f}")


def dataset_tab(spec, weights, model):
    if model.fvis_info.input_size != (1, 28, 28):
        st.info("dataset examples are available for the bundled MNIST models")
        return
    from fvis.data import mnist
    from fvis.image import grid

    names = [r[0] for r in layer_table(spec, weights) if r[0] not in ("input",)]
    layer = st.selectbox("layer ", names, index=len(names) // 2)
    n = dict((r[0], r[2]) for r in layer_table(spec, weights))[layer]
    k = st.slider("channel", 0, n - 1, 0)
    images, _ = mnist("test")
    with torch.no_grad():
        a = fvis.capture(model, model.fvis_info.normalize(images), [layer])[layer][:, k]
    score = a.flatten(1).mean(1) if a.dim() > 1 else a
    st.image(
        grid(images[score.topk(16).indices], ncol=8, scale=3),
        caption=f"held-out digits with the largest mean activation of {layer}:{k}",
    )


def main():
    spec, weights, model = sidebar()
    vis, expl, data = st.tabs(["Visualize", "Explain", "Dataset"])
    with vis:
        visualize_tab(spec, weights, model)
    with expl:
        explain_tab(model)
    with data:
        dataset_tab(spec, weights, model)


main()
