"""Labelled figures that notebooks show inline: several attribution methods on several
images, side by side.

Results with a picture (:class:`fvis.RenderResult`, :class:`Comparison`, the
building-blocks report) define ``_repr_png_`` and ``_repr_html_``, so Jupyter shows them
when they are the last value of a cell.

>>> fig = compare(model, x, ["saliency", "integrated_gradients", "gradcam"])
>>> fig                       # in a notebook: the picture
Comparison(...)
>>> path = fig.save("methods.png"); fig.maps["gradcam"].shape      # (B, H, W)
torch.Size([2, 28, 28])
"""

from __future__ import annotations

import base64
import html
import inspect
import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from fvis import heatmap
from fvis.image import to_pil
from fvis.models.metadata import info as model_info

__all__ = ["SCALES", "Comparison", "compare", "data_uri", "png_bytes"]

SCALES = ("map", "method", "shared")


def png_bytes(image: Image.Image) -> bytes:
    """The PNG file of a PIL image, as bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(image: Image.Image) -> str:
    """A ``data:`` URI of the image as PNG, for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def html_figure(image: Image.Image, caption: str) -> str:
    """``<figure>`` with the picture embedded and an escaped caption."""
    return (
        f'<figure style="display:inline-block;margin:4px;font:12px sans-serif">'
        f'<img src="{data_uri(image)}" style="image-rendering:pixelated">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def tile(img: Image.Image, size: int) -> Image.Image:
    """``img`` as an RGB square of ``size`` px (nearest neighbour: pixels stay sharp)."""
    return img.convert("RGB").resize((size, size), Image.NEAREST)


def sheet(
    cells: Sequence[tuple[int, int, str, Image.Image]], size: int = 112, title: str = ""
) -> Image.Image:
    """A white sheet of captioned tiles: ``cells`` are ``(row, column, caption, image)``;
    each image becomes a ``size`` px tile under its caption (22 characters at most), with
    ``title`` above them all."""
    font = ImageFont.load_default()
    pad, text, top = 6, 14, 20 if title else 0
    rows = 1 + max(r for r, *_ in cells)
    cols = 1 + max(c for _, c, *_ in cells)
    w = cols * (size + pad) + pad
    canvas = Image.new("RGB", (w, top + rows * (size + text + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    for r, c, caption, img in cells:
        x, y = pad + c * (size + pad), top + pad + r * (size + text + pad)
        draw.text((x, y), caption[:22], fill="black", font=font)
        canvas.paste(tile(img, size), (x, y + text))
    return canvas


@dataclass
class Comparison:
    """Maps of several methods for a batch of images (tensors on the CPU).

    ``images``: (B, C, H, W) in [0, 1]; ``maps[method]``: (B, H, W), channels summed;
    ``targets``: (B,) explained classes; ``labels``: their names; ``scale``: how colours
    are scaled (``"map"``: each map by its own 99.5th percentile of ``|R|``; ``"method"``:
    one scale per method, over its maps; ``"shared"``: one over every map).
    """

    images: torch.Tensor
    maps: dict[str, torch.Tensor]
    targets: torch.Tensor
    labels: list[str]
    scale: str = "map"
    percentile: float = 99.5
    probabilities: torch.Tensor | None = field(default=None)

    def _vmax(self, m: torch.Tensor, everything: torch.Tensor) -> torch.Tensor | None:
        if self.scale == "map":
            return None
        pool = m if self.scale == "method" else everything
        return torch.quantile(pool.abs().flatten().float(), self.percentile / 100)

    def figure(self, size: int = 96, *, over_image: bool = True) -> Image.Image:
        """Rows: images; columns: the input, then each method's heatmap (blended over
        the image, or alone with ``over_image=False``; signed maps red/blue, unsigned
        inferno). Method names head the columns (two lines at most); each row says the
        explained class."""
        font = ImageFont.load_default()
        pad, head = 4, 16
        names = list(self.maps)
        chars = max(4, size // 6)
        titles = [textwrap.wrap(t, chars)[:2] or [""] for t in ["input", *names]]
        top = 4 + 12 * max(len(t) for t in titles)
        everything = torch.cat([m.flatten() for m in self.maps.values()])
        tiles = [[tile(to_pil(img)[0], size) for img in self.images]]
        for name in names:
            m = self.maps[name][:, None]
            style = dict(signed=bool((m < 0).any()), percentile=self.percentile)
            style["vmax"] = self._vmax(m, everything)
            rgb = (
                heatmap.overlay(self.images, m, **style)
                if over_image
                else heatmap.colorize(m, **style)
            )
            tiles.append([tile(p, size) for p in heatmap.to_pil(rgb)])
        w = pad + (len(names) + 1) * (size + pad)
        h = top + len(self.images) * (size + head + pad)
        canvas = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(canvas)
        for c, lines in enumerate(titles):
            for k, line in enumerate(lines):
                draw.text((pad + c * (size + pad), 2 + 12 * k), line, fill="black", font=font)
        for r in range(len(self.images)):
            y = top + r * (size + head + pad)
            caption = self.labels[r]
            if self.probabilities is not None:
                caption += f" p={self.probabilities[r]:.2f}"
            draw.text((pad, y), caption[: (w - pad) // 6], fill="black", font=font)
            for c, column in enumerate(tiles):
                canvas.paste(column[r], (pad + c * (size + pad), y + head - 2))
        return canvas

    def save(self, path) -> Path:
        """Write the figure as PNG, atomically."""
        from fvis.io import save_image

        save_image(self.figure(), path)
        return Path(path)

    def _repr_png_(self) -> bytes:
        return png_bytes(self.figure())

    def _repr_html_(self) -> str:
        caption = f"{', '.join(self.maps)} on {len(self.images)} image(s); scale: {self.scale}"
        return html_figure(self.figure(), caption)


def at_input_size(method) -> dict:
    """``upsample=True`` for layer methods (CAMs), so every map is at the input size."""
    params = inspect.signature(method.attribute).parameters
    return {"upsample": True} if "upsample" in params else {}


def compare(
    model: nn.Module,
    inputs: torch.Tensor,
    methods: Sequence[str | tuple[str, object]],
    *,
    target=None,
    scale: str = "map",
    images: torch.Tensor | None = None,
    options: dict[str, dict] | None = None,
) -> Comparison:
    """Run each method on ``inputs`` (model inputs, normalized; (B, C, H, W)) for one
    target per image and collect the maps. ``methods``: names from
    :data:`fvis.attribution.METHODS`, or ``(label, Attribution instance)`` pairs.
    ``target``: as for any method; ``None`` explains each image's predicted class (the
    same class for every method). ``images``: what to draw under the heatmaps (default:
    ``model.fvis_info.denormalize(inputs)``). ``options[name]``: keyword arguments for
    that method (e.g. ``{"integrated_gradients": {"steps": 64}}``)."""
    from fvis.attribution import get
    from fvis.attribution.base import Target

    _check_compare(methods, scale, options)
    info = model_info(model)
    x = inputs.detach()
    resolved = Target(model, x, target)
    tgt = resolved.classes if resolved.classes is not None else resolved.objective
    if resolved.classes is not None and resolved.key is not None:
        tgt = (resolved.key, resolved.classes)
    maps: dict[str, torch.Tensor] = {}
    for entry in methods:
        name, method = (entry, get(entry)(model)) if isinstance(entry, str) else entry
        kwargs = {**at_input_size(method), **(options or {}).get(name, {})}
        maps[name] = heatmap.reduce_channels(method.attribute(x, tgt, **kwargs)).cpu()
    classes, labels, probs = _captions(model, x, resolved, info)
    shown = info.denormalize(x) if images is None else images
    return Comparison(
        images=shown.detach().cpu().clamp(0, 1),
        maps=maps,
        targets=classes.cpu(),
        labels=labels,
        scale=scale,
        probabilities=probs,
    )


def _check_compare(methods, scale: str, options) -> None:
    """Refuse an unknown ``scale``, no methods, or ``options`` for a method that is not
    compared."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    if not methods:
        raise ValueError("compare needs at least one method")
    names = [entry if isinstance(entry, str) else entry[0] for entry in methods]
    unknown = sorted(set(options or {}) - set(names))
    if unknown:
        raise ValueError(
            f"options for {', '.join(map(repr, unknown))}, which is not among the methods "
            f"compared; valid keys: {', '.join(names)}"
        )


def _captions(model, x: torch.Tensor, resolved, info):
    """``(classes, labels, probabilities)`` for the rows: the explained classes (B,) with
    their names and softmax probabilities (``None`` unless the output is (B, K)); for an
    objective target, ``-1`` and the objective's name."""
    from fvis import hooks
    from fvis.outputs import select

    if resolved.classes is None:
        return torch.full((x.shape[0],), -1), [resolved.objective.name] * x.shape[0], None
    classes, probs = resolved.classes, None
    with hooks.guard(model), torch.no_grad():  # eval mode, restored after
        out = select(model(x), resolved.key)
    if out.dim() == 2:
        probs = out.softmax(1).gather(1, classes.view(-1, 1)).squeeze(1).cpu()
    labels = [info.labels[k] if info.labels else f"class {k}" for k in classes.tolist()]
    return classes, labels, probs
