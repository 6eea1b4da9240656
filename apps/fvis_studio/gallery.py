"""The unit explorer's pictures: a prebuilt gallery (``fvis gallery``'s output, read only)
and the units the studio renders on demand, which it adds to a writable folder of the
same layout (``$FVIS_STUDIO_DIR``, default ``~/.cache/fvis/studio``); both read as one.

A prebuilt gallery is found by the model's weights (:func:`fvis.recipes.fingerprint`) in
``galleries.json`` of the folders in :data:`PREBUILT` (the committed gallery of the
bundled model) and ``$FVIS_GALLERY``. Its ``KEY/manifest.json``
(``fvis/gallery/manifest.schema.json``) lists every finished unit, its images
(``LAYER/NNNN/*.png``), the unit values of its final images, dataset examples and render recipes.
The studio's folder holds ``LAYER/NNNN/*.png`` and ``LAYER/NNNN/unit.json``: the same
unit entry, the recipes it names and the objective curve of its positive render.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fvis.gallery import GalleryRecipe, layout, read
from fvis.io import atomic_write_bytes, atomic_write_text
from fvis.recipes import RenderRecipe, fingerprint
from fvis_studio.state import Unit

ENV_STORE = "FVIS_STUDIO_DIR"  # where units rendered on demand go
ENV_GALLERY = "FVIS_GALLERY"  # more prebuilt gallery folders (os.pathsep-separated)
PREBUILT = [Path(__file__).resolve().parents[2] / "gallery" / "mnist"]  # committed


@dataclass
class UnitRecord:
    """One unit's gallery entry, read: image paths by name (``positive``, ``negative``,
    ``diversity`` (a strip), ``top``/``bottom`` (strips) and their ``*_maps``), final
    ``objective`` values, ``examples`` (``{"top"|"bottom": [{"index", "value"}, …]}``,
    ranked by ``rank``), the render ``recipes`` (``name -> (RenderRecipe dict, items)``)
    and the ``curve`` of its positive render when known."""

    unit: Unit
    images: dict[str, Path]
    objective: dict
    examples: dict = field(default_factory=dict)
    recipes: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    rank: str = "max"

    def tiles(self, name: str, n: int) -> list[Image.Image]:
        """The ``n`` pictures of strip ``name`` (written by :func:`fvis.image.grid`, pad 1)."""
        return split(Image.open(self.images[name]), n)


def split(strip: Image.Image, n: int, pad: int = 1) -> list[Image.Image]:
    """Undo :func:`fvis.image.grid` of ``n`` pictures in one row with padding ``pad``."""
    w = (strip.width - pad) // n - pad
    boxes = [
        (pad + i * (w + pad), pad, pad + i * (w + pad) + w, strip.height - pad) for i in range(n)
    ]
    return [strip.crop(b) for b in boxes]


class Gallery:
    """The units of one model that have pictures: a prebuilt gallery's (``root`` with
    ``manifest``, or none) and those in ``store``. ``recipe``: how units are rendered
    on demand — the prebuilt gallery's, so they match it."""

    def __init__(self, root: Path | None, manifest: dict | None, store: Path, recipe):
        self.root, self.store, self.recipe = root, store, recipe
        self.entries: dict[
            Unit, tuple[Path, dict, dict, list]
        ] = {}  # folder, entry, recipes, curve
        if manifest is not None:
            for e in manifest["units"]:
                entry = (root, e, manifest["recipes"], e.get("curve", []))
                self.entries[Unit(e["layer"], e["index"])] = entry

    @classmethod
    def for_model(cls, spec: str, weights, model, base: Path) -> Gallery:
        """The gallery of ``model`` (loaded from ``spec`` and ``weights``), adding to a
        folder under ``base`` (:func:`store_base`)."""
        fp = fingerprint(model)
        root = manifest = None
        for folder in prebuilt_folders():
            index = folder / "galleries.json"
            keys = json.loads(index.read_text()) if index.is_file() else {}
            key = next((k for k, g in keys.items() if g["model"]["fingerprint"] == fp), None)
            if key is not None:
                root, manifest = read(folder / key)
                break
        recipe = GalleryRecipe()
        if manifest:
            data = manifest["recipe"]
            recipe = GalleryRecipe.from_dict(
                {**data, "render": RenderRecipe.from_dict(data["render"])}
            )
        key = hashlib.sha256(f"{spec}\n{weights}\n{fp}\n{recipe.hash()}".encode()).hexdigest()
        return cls(root, manifest, base / key[:12], recipe)

    def describe(self) -> str:
        where = f"gallery {self.root.name}" if self.root else "no prebuilt gallery"
        return f"{where}: {len(self.entries)} units; {self.rendered()} rendered here."

    def rendered(self) -> int:
        return len(list(self.store.glob("*/*/unit.json"))) if self.store.exists() else 0

    def _own(self, unit: Unit) -> Path:
        return layout.unit_dir(self.store, unit.layer, unit.index) / "unit.json"

    def _entry(self, unit: Unit):
        if unit in self.entries:
            return self.entries[unit]
        own = self._own(unit)
        if own.is_file():
            data = json.loads(own.read_text())
            return self.store, data["entry"], data["recipes"], data.get("curve", [])
        return None

    def has(self, unit: Unit) -> bool:
        return self._entry(unit) is not None

    def thumbnail(self, unit: Unit) -> Path | None:
        found = self._entry(unit)
        return None if found is None else found[0] / found[1]["images"]["positive"]

    def record(self, unit: Unit) -> UnitRecord | None:
        found = self._entry(unit)
        if found is None:
            return None
        root, e, recipes, curve = found
        return UnitRecord(
            unit,
            {name: root / rel for name, rel in e["images"].items()},
            e["objective"],
            e.get("examples", {}),
            {name: (recipes[r["recipe"]], r["items"]) for name, r in e["renders"].items()},
            curve,
            self.recipe.rank,
        )

    def add(self, files: dict[str, bytes], record: dict, curve: list[float]) -> None:
        """Add the units of a rendered batch (``fvis.gallery.build.render_batch``'s
        ``files`` and ``record``) to the studio's folder; each unit's ``unit.json`` last."""
        for rel, data in sorted(files.items()):
            atomic_write_bytes(data, self.store / rel)
        for e in record["units"]:
            names = {r["recipe"] for r in e["renders"].values()}
            own = {"entry": e, "recipes": {h: record["recipes"][h] for h in names}, "curve": curve}
            atomic_write_text(json.dumps(own), self._own(Unit(e["layer"], e["index"])))


def store_base() -> Path:
    """Where the studio keeps the units it renders: ``$FVIS_STUDIO_DIR`` or
    ``~/.cache/fvis/studio``."""
    return Path(os.environ.get(ENV_STORE) or Path.home() / ".cache" / "fvis" / "studio")


def prebuilt_folders() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(ENV_GALLERY, "").split(os.pathsep) if p]
    return extra + PREBUILT


def render_recipe(rec: UnitRecord, name: str = "positive") -> tuple[RenderRecipe, int]:
    """The batch recipe that rendered ``rec``'s image ``name`` and the unit's item in it."""
    data, items = rec.recipes[name]
    return RenderRecipe.from_dict(data), items[0]
