"""Attribution for a folder of images, in batches: what ``fvis attribute`` runs.

Each image is read, converted to the model's channels and resized to its input size,
normalized, and explained for its own predicted class (or one ``target`` for all) by
every method, ``batch`` images per forward pass. Written to ``out``:

* ``NAME_METHOD.png``: the heatmap over the image at the file's own size (the map,
  computed at the model's input size, resized bilinearly; each by its own scale);
* ``attributions.npz``: ``files`` (N,), ``targets`` (N,), ``probabilities`` (N,) and,
  per method, its maps (N, H, W) float32 (channels summed) — the raw numbers — and
  ``skipped``: "NAME: why" for each file with an image suffix that is not a readable
  image (left out; the others are still explained).

>>> from pathlib import Path
>>> Path("photos").mkdir(); fvis.image.to_pil(image)[0].save("photos/digit.png")
>>> attribute_folder(model, "photos/", "out/", ["saliency", "gradcam"], batch=16)
PosixPath('out/attributions.npz')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fvis import heatmap
from fvis.attribution.base import upsample
from fvis.figures import compare
from fvis.image import IMAGE_SUFFIXES, image_tensor, open_image
from fvis.image import image_files as _listed
from fvis.io import atomic_path, check_output_folder, save_image
from fvis.models.metadata import info as model_info
from fvis.progress import Progress

__all__ = ["IMAGE_SUFFIXES", "attribute_folder", "image_files", "main"]


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (:func:`fvis.image.image_files`),
    refused when two share a name: their outputs would collide."""
    files = _listed(folder)
    stems = [p.stem for p in files]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ValueError(f"images in {folder} share names {clash}; their outputs would collide")
    return files


def attribute_folder(
    model: nn.Module,
    folder: str | Path,
    out: str | Path,
    methods: list[str],
    *,
    batch: int = 16,
    target=None,
    options: dict[str, dict] | None = None,
    progress: bool = True,
) -> Path:
    """Explain every image of ``folder`` with each of ``methods`` (names from
    :data:`fvis.attribution.METHODS`) and write the files listed in the module docstring
    to ``out``. Returns the path of ``attributions.npz``."""
    if batch < 1:
        raise ValueError(f"batch must be ≥ 1, not {batch}")
    files = image_files(folder)
    out = Path(out)
    info = model_info(model)
    c, h, w = info.input_size
    device = next(iter(model.parameters()), torch.empty(0)).device
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    targets, probs, done, skipped = [], [], [], []
    with Progress(len(files), "attribute", progress) as bar:
        for start in range(0, len(files), batch):
            chunk, images, photos = _readable(files[start : start + batch], (c, h, w), skipped)
            bar.update(start + len(files[start : start + batch]))
            if not chunk:
                continue
            done += chunk
            x = info.normalize(images.to(device))
            result = compare(model, x, methods, target=target, images=images, options=options)
            targets.append(result.targets)
            p = result.probabilities
            probs.append(p if p is not None else torch.full((len(chunk),), float("nan")))
            for name, m in result.maps.items():
                maps[name].append(m)
                for f, photo, mj in zip(chunk, photos, m, strict=True):
                    over = upsample(mj[None], photo.shape[-2:])[:, None]
                    picture = heatmap.to_pil(heatmap.overlay(photo, over))[0]
                    save_image(picture, out / f"{f.stem}_{name}.png")
    if not done:
        raise ValueError(f"none of the {len(files)} image files in {folder} could be read: "
                         f"{skipped[0]}")  # fmt: skip
    arrays = {
        "files": np.array([f.name for f in done]),
        "skipped": np.array(skipped, dtype=str),
        "targets": torch.cat(targets).numpy(),
        "probabilities": torch.cat(probs).numpy(),
        **{name: torch.cat(m).float().numpy() for name, m in maps.items()},
    }
    path = out / "attributions.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def _readable(files: list[Path], size: tuple[int, int, int], skipped: list[str]):
    """``(files, images, photos)``: those of ``files`` that are images, read once: at the
    model's ``size`` (N, C, H, W) and as they are (a list of (1, C, h, w)); the others
    are appended to ``skipped`` as "NAME: why"."""
    c, h, w = size
    ok, images, photos = [], [], []
    for f in files:
        try:
            img = open_image(f, c)
        except ValueError as e:
            skipped.append(f"{f.name}: {e}")
            continue
        ok.append(f)
        images.append(image_tensor(img, (h, w)))
        photos.append(image_tensor(img))
    return ok, torch.cat(images) if images else None, photos


def main(args) -> int:
    """``fvis attribute`` (see ``fvis attribute --help``)."""
    from fvis.attribution import get
    from fvis.recipes import load_model

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        get(m)  # unknown names fail before any work, with the nearest names
    check_output_folder(args.output, "fvis attribute")
    model = load_model(args.model, args.weights, args.device)
    target = None
    if args.target is not None:
        t = args.target.strip()
        target = int(t) if t.lstrip("-").isdigit() else model_info(model).label_index(t)
    path = attribute_folder(
        model,
        args.images,
        args.output,
        methods,
        batch=args.batch,
        target=target,
        progress=not args.quiet,
    )
    with np.load(path) as saved:
        n, skipped = len(saved["files"]), list(saved["skipped"])
    print(f"{n} image(s) × {len(methods)} method(s): heatmaps and {path.resolve()}")
    for why in skipped:
        print(f"skipped {why}")
    return 0
