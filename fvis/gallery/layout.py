"""Where a gallery keeps everything: one folder, one self-contained site per key.

    OUT/
      .fvis-gallery.lock              held while a process writes manifests and pages
      index.html                      the galleries in this folder (one per key)
      galleries.json                  {key: {model, recipe, build}} for each of them
      KEY/                            one gallery: model weights + recipe + build environment
        manifest.json                 everything below, in one file (manifest.schema.json)
        index.html                    its layers
        style.css
        .records/LAYER/b0000.json     one per finished batch of units (the resume state)
        LAYER/page-1.html …           the grid of a layer, PER_PAGE units a page
        LAYER/0005.html               the page of unit 5
        LAYER/0005/positive.png       its images (names: :data:`IMAGES`)

``KEY`` is the first 12 hex digits of the SHA-256 of the gallery recipe, the model's
weights and the build environment (threads, device type, torch version): a changed
recipe never mixes with older results. ``LAYER`` is the layer name with ``:`` (a
module's k-th call) written ``+``; names that could leave the folder are refused.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["IMAGES", "PER_PAGE", "layer_dir", "slug", "unit_dir", "record_path"]

PER_PAGE = 240  # units on one grid page
IMAGES = {
    "positive": "positive.png",  # the unit maximized
    "negative": "negative.png",  # the unit minimized
    "diversity": "diversity.png",  # a strip of the diversity set
    "top": "top.png",  # a strip of the top-k dataset examples
    "top_maps": "top-maps.png",  # … each with where the unit fires (heatmap overlay)
    "bottom": "bottom.png",
    "bottom_maps": "bottom-maps.png",
    "codespace": "codespace.png",  # class units with a generator prior
}
_SAFE = re.compile(r"[A-Za-z0-9_.:+\-]+")


def slug(layer: str) -> str:
    """The folder name of a layer: its name with ``:`` as ``+``. A name that is empty,
    starts with a dot, or holds anything but letters, digits and ``_ . : + -`` (such as
    ``../x``) is refused, so no layer's files can land outside the gallery."""
    if not layer or layer.startswith(".") or not _SAFE.fullmatch(layer):
        raise ValueError(
            f"layer name {layer!r} cannot name a gallery folder (letters, digits and "
            "_ . : + - only, not starting with a dot); see `fvis layers` for the names"
        )
    return layer.replace(":", "+")


def layer_dir(root: Path, layer: str) -> Path:
    return Path(root) / slug(layer)


def unit_dir(root: Path, layer: str, index: int) -> Path:
    return layer_dir(root, layer) / f"{index:04d}"


def record_path(root: Path, layer: str, batch: int) -> Path:
    return Path(root) / ".records" / slug(layer) / f"b{batch:04d}.json"
