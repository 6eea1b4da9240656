"""The gallery: every unit of a network as a static site (``fvis gallery``).

:func:`build` renders and resumes; :mod:`fvis.gallery.layout` says where each file
goes and ``manifest.schema.json`` (beside this file) what the manifest holds; the
site is plain HTML (:mod:`fvis.gallery.site`). ``gallery/build.py`` in a checkout
runs the same builder.

>>> from fvis.gallery import GalleryRecipe, build
>>> recipe = GalleryRecipe(batch=32)   # a whole gallery takes minutes: tests/test_gallery.py
>>> folder = build("fvis:mnist", "site", ["conv3", "output"], recipe)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

from fvis.gallery import build as build_module
from fvis.gallery.build import GalleryRecipe, build, plan

__all__ = ["GalleryRecipe", "build", "plan", "run", "read", "SCHEMA_PATH"]

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


def read(path) -> tuple[Path, dict]:
    """``(folder, manifest)`` of the gallery at ``path``: a gallery folder (``OUT/KEY``)
    or an output folder (``OUT``; its most recently written gallery). For the studio and
    other readers; image paths in the manifest are relative to ``folder``."""
    import json

    path = Path(path)
    if not (path / "manifest.json").exists():
        found = sorted(path.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(
                f"no gallery in {path} (no manifest.json); build one: fvis gallery"
            )
        path = found[-1].parent
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("schema") != build_module.SCHEMA:
        raise ValueError(
            f"{path}/manifest.json is {manifest.get('schema')!r}, not {build_module.SCHEMA!r}"
        )
    return path, manifest


def run(args) -> int:
    """``fvis gallery`` with parsed options (:mod:`fvis.gallery.options`)."""
    import io

    from fvis.gallery.options import recipe_from

    root = build(
        args.model,
        args.out,
        args.layers,
        recipe_from(args),
        weights=args.weights,
        dataset=args.dataset,
        threads=args.threads,
        device=args.device,
        max_channels=args.max_channels,
        shard=args.shard,
        ray=args.ray,
        workers=args.workers,
        gpus=args.gpus,
        index_only=args.index_only,
        force=args.force,
        log=io.StringIO() if args.quiet else sys.stderr,
    )
    print(f"gallery: {(root / 'index.html').resolve()}")
    return 0
