"""The studio page: the model in the sidebar, then the chosen view."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from fvis_studio import explaining, history, jobs_ui, models, rendering, state, units
from fvis_studio.gallery import Gallery, store_base
from fvis_studio.models import layer_list, load

WEIGHTS = {"trained": "DEFAULT", "random init": None}


@dataclass
class Context:
    """What every view needs: the model and where its units are drawn from."""

    spec: str
    weights: str | None
    model: object
    layers: list  # fvis.hooks.LayerInfo, without "input"
    gallery: Gallery

    def units_in(self, layer: str) -> int:
        """Number of units (channels, or neurons of a flat layer) of ``layer``."""
        shape = next(r.shape for r in self.layers if r.name == layer)
        return shape[0] if shape else 1

    @property
    def labels(self) -> list[str]:
        info = self.model.fvis_info
        n = self.units_in("output")
        return list(info.labels) if info.labels else [str(k) for k in range(n)]


def sidebar() -> Context | None:
    sb = st.sidebar
    sb.title("fvis studio")
    spec = sb.text_input(
        "model",
        "fvis:mnist",
        key="model_spec",
        help="fvis:mnist, fvis:mnist-mlp, torchvision:NAME, timm:NAME, hf:FOLDER or a "
        "checkpoint written by fvis.models.save",
    ).strip()
    choice = sb.radio("weights", [*WEIGHTS, "file"], horizontal=True, key="weights_choice")
    if choice == "file":
        weights = sb.text_input("weights file", key="weights_file").strip() or "DEFAULT"
    else:
        weights = WEIGHTS[choice]
    if weights is None:
        sb.caption("random init: the model is untrained")
    sb.radio("view", state.VIEWS, key="view")
    try:
        model = load(spec, weights)
        layers = layer_list(spec, weights)
    except Exception as e:  # any loading failure is the user's to fix: say it, load nothing
        st.error(f"Cannot load model {spec!r} (weights: {choice}): {e}")
        st.caption("Fix the model or weights in the sidebar; no other model was loaded.")
        return None
    gallery = models.gallery(spec, weights, str(store_base()))
    sb.caption(f"{model.fvis_info.name or spec}: {len(layers)} layers. {gallery.describe()}")
    return Context(spec, weights, model, layers, gallery)


def main() -> None:
    st.set_page_config(page_title="fvis studio", layout="wide")
    state.init()
    models.warm_up()
    ctx = sidebar()
    if ctx is None:
        return
    jobs_ui.collect(ctx)
    view = st.session_state.view
    {
        "Units": units.show,
        "Render": rendering.show,
        "Explain": explaining.show,
        "History": history.show,
    }[view](ctx)
