"""Building blocks (Olah et al. 2018): which channels drove a decision, and what they see.

For one input and a target, the report holds the input, its attribution heatmap, the
top-``k`` channels of a hidden layer ranked by their attribution ``Σ_{y,x} A ⊙ ∂f/∂A``
(gradient × activation), each channel's spatial attribution map, and each channel's
feature visualization — all channels rendered together in one batch.

>>> report = building_blocks(model, image, method="integrated_gradients", layer="conv3",
...                          steps=8)
>>> path = report.save("report.png")          # or "report.html"
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

import torch
from PIL import Image

from fvis import heatmap
from fvis import objectives as O
from fvis.attribution import get as get_method
from fvis.attribution.base import upsample
from fvis.attribution.layer import LayerGradientXActivation, default_layer, top_channels
from fvis.errors import check_int
from fvis.image import to_pil
from fvis.io import IMAGE_FORMATS, atomic_write_text, check_output, save_image
from fvis.models.metadata import info as model_info
from fvis.outputs import probabilities

__all__ = ["BuildingBlocks", "building_blocks"]

REPORT_FORMATS = {**IMAGE_FORMATS, ".html": "HTML", ".htm": "HTML"}


@dataclass
class BuildingBlocks:
    """A building-blocks report for one input (tensors on the CPU, images in [0, 1])."""

    image: torch.Tensor  # (C, H, W)
    target: int
    label: str
    probability: float
    method: str
    attribution: torch.Tensor  # (H, W), the method's input attribution
    layer: str
    channels: list[int]
    channel_scores: torch.Tensor  # (k,) Σ over positions of gradient × activation
    channel_maps: torch.Tensor | None  # (k, H, W) spatial attribution per channel, upsampled;
    # None for a layer without positions (a Linear layer's neurons)
    visualizations: torch.Tensor  # (k, C, h, w) feature visualization per channel

    def tiles(self) -> list[tuple[str, Image.Image]]:
        """(caption, picture) for the input, its heatmap, and each channel's pair."""
        rgb_img = self.image.expand(3, -1, -1) if self.image.shape[0] == 1 else self.image
        tiles = [
            (f"input: {self.label} (p={self.probability:.3f})", to_pil(self.image)[0]),
            (self.method, heatmap.to_pil(heatmap.overlay(rgb_img, self.attribution[None]))),
        ]
        maps = [None] * len(self.channels) if self.channel_maps is None else self.channel_maps
        for c, s, m, v in zip(self.channels, self.channel_scores, maps, self.visualizations):
            tiles.append((f"{self.layer}:{c} ({s:+.3g})", to_pil(v)[0]))
            if m is not None:
                overlay = heatmap.overlay(rgb_img, m[None])
                tiles.append((f"where {c} counts", heatmap.to_pil(overlay)))
        return tiles

    def figure(self, size: int = 112) -> Image.Image:
        """The report as one picture: input and heatmap, then per channel its feature
        visualization beside its spatial attribution (four tiles a row)."""
        from fvis.figures import sheet

        cells = [(i // 4, i % 4, caption, img) for i, (caption, img) in enumerate(self.tiles())]
        title = f"building blocks of layer {self.layer} for class {self.label}"
        return sheet(cells, size, title)

    def html(self) -> str:
        """A self-contained HTML page (pictures embedded)."""
        from fvis.figures import data_uri

        figs = "".join(
            f'<figure><img src="{data_uri(t)}"><figcaption>{escape(c)}</figcaption></figure>'
            for c, t in self.tiles()
        )
        return (
            f"<!doctype html><meta charset='utf-8'><title>fvis explain</title>"
            f"<style>figure{{display:inline-block;margin:6px;font:12px sans-serif}}"
            f"img{{image-rendering:pixelated;width:112px}}</style>"
            f"<h1>Building blocks: layer {escape(self.layer)}, class {escape(self.label)}</h1>"
            f"{figs}"
        )

    def _repr_png_(self) -> bytes:  # notebooks show the report inline
        from fvis.figures import png_bytes

        return png_bytes(self.figure())

    def _repr_html_(self) -> str:
        return self.html()

    def save(self, path) -> Path:
        """Write the report as PNG (or HTML for a ``.html`` path), atomically."""
        path = check_output(path, REPORT_FORMATS)
        if path.suffix.lower() in (".html", ".htm"):
            atomic_write_text(self.html(), path)
        else:
            save_image(self.figure(), path)
        return path


def building_blocks(
    model,
    image: torch.Tensor,
    target: int | str | None = None,
    *,
    method: str = "integrated_gradients",
    layer: str | None = None,
    top: int = 6,
    steps: int = 256,
    tv: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> BuildingBlocks:
    """Build the report for one image (1, C, H, W) or (C, H, W) in [0, 1].

    ``target``: class index or label (default: the predicted class). ``method``: the
    input attribution (any name of :func:`fvis.attribution.get`). ``layer``: default the
    last convolutional layer. ``steps``, ``tv`` (total-variation weight), ``seed``: the
    channel renders (:class:`fvis.recipes.ExplainRecipe` holds these settings as data).
    """
    import fvis

    check_int("top (channels to show)", top)
    check_int("steps", steps)
    info = model_info(model)
    img = image if image.dim() == 4 else image.unsqueeze(0)
    x = info.normalize(img.to(fvis.hooks.model_device(model)))
    probs, k = _explained_class(model, info, x, target)
    label = info.labels[k] if info.labels else str(k)
    layer = layer or default_layer(model, x)
    attr = _input_attribution(model, method, x, k)
    ranked, channels, maps = _channel_attribution(model, x, k, layer, top)
    units = [O.channel(layer, c) for c in channels]
    vis = fvis.render(model, O.one_per_item(units) - tv * O.total_variation(), batch=len(units),
                      steps=steps, seed=seed, progress=progress)  # fmt: skip
    return BuildingBlocks(
        image=img[0].detach().cpu(),
        target=k,
        label=label,
        probability=float(probs[k]),
        method=method,
        attribution=attr[0].detach().cpu(),
        layer=layer,
        channels=channels,
        channel_scores=ranked.values[0].detach().cpu(),
        channel_maps=None if maps is None else maps.detach().cpu(),
        visualizations=vis.images,
    )


def _explained_class(model, info, x: torch.Tensor, target) -> tuple[torch.Tensor, int]:
    """``(probs, k)``: the model's class probabilities for the one input ``x`` (K,) and
    the class to explain, ``target`` (index or label) or else the predicted one."""
    probs = probabilities(model, x)[0]
    k = int(probs.argmax()) if target is None else info.label_index(target)
    if not 0 <= k < probs.numel():
        raise IndexError(f"target class {k} is out of range (valid: 0..{probs.numel() - 1})")
    return probs, k


def _input_attribution(model, method: str, x: torch.Tensor, k: int) -> torch.Tensor:
    """``method``'s attribution of class ``k`` at the input, channels summed and at the
    input's size: (B, H, W)."""
    attr = get_method(method)(model).attribute(x, k)
    attr = attr if attr.dim() == 3 else attr.sum(1)
    return upsample(attr, x.shape[-2:]) if attr.shape[-2:] != x.shape[-2:] else attr


def _channel_attribution(model, x: torch.Tensor, k: int, layer: str, top: int):
    """``(ranked, channels, maps)``: the ``top`` channels of ``layer`` by
    ``Σ_{y,x} A ⊙ ∂f_k/∂A`` (:func:`top_channels`), their indices, and their gradient ×
    activation maps at the input's size (top, H, W) — ``None`` for a layer without
    positions (a vector: its neurons' scores are all there is)."""
    ranked = top_channels(model, x, k, layer, top)
    channels = ranked.indices[0].tolist()
    maps = LayerGradientXActivation(model).attribute(x, k, layer=layer)[0, channels]
    if maps.dim() < 2:
        return ranked, channels, None
    return ranked, channels, upsample(maps, x.shape[-2:]) if maps.dim() == 3 else maps
