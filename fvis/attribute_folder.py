"""Attribution for a folder of images, in batches: what ``fvis attribute`` runs.

Each image is read, converted to the model's channels and resized to its input size,
normalized, and explained for its own predicted class (or one ``target`` for all) by
every method, ``batch`` images per forward pass. Written to ``out``:

* ``NAME_METHOD.png``: the heatmap over the image (each map by its own scale);
* ``attributions.npz``: ``files`` (N,), ``targets`` (N,), ``probabilities`` (N,) and,
  per method, its maps (N, H, W) float32 (channels summed) — the raw numbers.

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
from fvis.figures import compare
from fvis.image import load_image
from fvis.io import atomic_path, save_image
from fvis.models.metadata import info as model_info
from fvis.progress import Progress

__all__ = ["IMAGE_SUFFIXES", "attribute_folder", "image_files", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); point to a folder of them"
        )
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
    targets, probs = [], []
    with Progress(len(files), "attribute", progress) as bar:
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            images = torch.cat([load_image(f, (h, w), channels=c) for f in chunk])
            x = info.normalize(images.to(device))
            result = compare(model, x, methods, target=target, images=images, options=options)
            targets.append(result.targets)
            p = result.probabilities
            probs.append(p if p is not None else torch.full((len(chunk),), float("nan")))
            for name, m in result.maps.items():
                maps[name].append(m)
                pictures = heatmap.to_pil(heatmap.overlay(images, m[:, None]))
                for f, picture in zip(chunk, pictures):
                    save_image(picture, out / f"{f.stem}_{name}.png")
            bar.update(start + len(chunk))
    arrays = {
        "files": np.array([f.name for f in files]),
        "targets": torch.cat(targets).numpy(),
        "probabilities": torch.cat(probs).numpy(),
        **{name: torch.cat(m).float().numpy() for name, m in maps.items()},
    }
    path = out / "attributions.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def main(args) -> int:
    """``fvis attribute`` (see ``fvis attribute --help``)."""
    from fvis.attribution import get
    from fvis.recipes import load_model

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        get(m)  # unknown names fail before any work, with the nearest names
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
    n = len(image_files(args.images))
    print(f"{n} image(s) × {len(methods)} method(s): heatmaps and {path.resolve()}")
    return 0
