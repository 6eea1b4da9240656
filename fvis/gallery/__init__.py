"""The gallery: every unit of a network as a static site (``fvis gallery``).

:func:`build` renders and resumes; :mod:`fvis.gallery.layout` says where each file
goes and ``manifest.schema.json`` (beside this file) what the manifest holds; the
site is plain HTML (:mod:`fvis.gallery.site`). ``gallery/build.py`` in a checkout
runs the same builder.

>>> from fvis.gallery import GalleryRecipe, build
>>> folder = build("fvis:mnist", "site", ["conv3", "output"], GalleryRecipe(batch=32))
"""

from __future__ import annotations

import sys
from pathlib import Path

from fvis.gallery.build import GalleryRecipe, build, plan

__all__ = ["GalleryRecipe", "build", "plan", "run", "SCHEMA_PATH"]

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


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
