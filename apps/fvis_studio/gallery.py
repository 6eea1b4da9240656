"""Where the unit explorer's pictures come from: a prebuilt gallery (read only) and the
units rendered on demand in this studio (added to a writable gallery of the same model).

PROVISIONAL: reads the on-demand store only until fvis's gallery format lands.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fvis.image import to_pil
from fvis.io import atomic_write_text, save_image
from fvis_studio.state import Unit

ENV_DIR = "FVIS_STUDIO_DIR"  # where on-demand renders are kept (default ~/.cache/fvis/studio)


@dataclass
class UnitRecord:
    """Everything known about one unit: images ((C, H, W) tensors or paths), the
    objective curve of its render and the recipe that made it."""

    unit: Unit
    positive: object
    negative: object = None
    diversity: list = field(default_factory=list)
    curve: list = field(default_factory=list)
    recipe: dict = field(default_factory=dict)


class Gallery:
    """The units of one model (spec + weights) that have pictures."""

    def __init__(self, key: str, store: Path):
        self.key, self.store = key, store

    @classmethod
    def for_model(cls, spec: str, weights, model) -> Gallery:
        key = hashlib.sha256(json.dumps([spec, weights]).encode()).hexdigest()[:16]
        root = Path(os.environ.get(ENV_DIR) or Path.home() / ".cache" / "fvis" / "studio")
        return cls(key, root / key)

    def describe(self) -> str:
        n = len(list(self.store.glob("*/*/unit.json"))) if self.store.exists() else 0
        return f"{n} unit(s) rendered on demand."

    def _dir(self, unit: Unit) -> Path:
        return self.store / unit.layer.replace(":", "_").replace("/", "_") / str(unit.index)

    def has(self, unit: Unit) -> bool:
        return (self._dir(unit) / "unit.json").exists()

    def thumbnail(self, unit: Unit):
        p = self._dir(unit) / "positive.png"
        return p if p.exists() else None

    def record(self, unit: Unit) -> UnitRecord | None:
        d = self._dir(unit)
        if not (d / "unit.json").exists():
            return None
        meta = json.loads((d / "unit.json").read_text())
        return UnitRecord(
            unit, d / "positive.png", d / "negative.png",
            [d / f"diversity{i}.png" for i in range(meta["diversity"])],
            meta["curve"], meta["recipe"],
        )  # fmt: skip

    def add(self, rec: UnitRecord) -> None:
        d = self._dir(rec.unit)
        save_image(to_pil(rec.positive)[0], d / "positive.png")
        save_image(to_pil(rec.negative)[0], d / "negative.png")
        for i, img in enumerate(rec.diversity):
            save_image(to_pil(img)[0], d / f"diversity{i}.png")
        atomic_write_text(
            json.dumps({"curve": rec.curve, "recipe": rec.recipe, "diversity": len(rec.diversity)}),
            d / "unit.json",
        )


def as_tensor(img) -> torch.Tensor:
    return img
