"""Dataset examples: the inputs of a dataset that excite a unit most and least, and
where in each the unit fires (OpenAI Microscope's dataset examples).

Each input is scored in batches of ``batch_size``: a channel by its activation map's
**maximum over positions** (``rank="max"``, Microscope's choice) or its **mean**
(``rank="mean"``); any other unit or objective by its value. The running top-``k`` and
bottom-``k`` are kept, so the dataset is read once for all the units given. For each
chosen input, ``maps`` holds the unit's own attribution map: ``method`` (any name of
:data:`fvis.attribution.METHODS`, default gradient × input) of the very score it is
ranked by (:func:`ranking_objective`; for ``"max"``: where the hottest position looks),
summed over colour channels, (H, W) per input.

>>> ex = dataset_examples(model, None, ["conv3[5]", "fc1[2]"], k=8)   # held-out digits
>>> ex[0].top_index.shape, ex[0].top_value.shape, ex[0].top_maps.shape
(torch.Size([8]), torch.Size([8]), torch.Size([8, 28, 28]))

Datasets: ``None`` (the bundled held-out MNIST digits), a tensor (N, C, H, W) in
[0, 1], a folder of images in torchvision's ``ImageFolder`` layout (one subfolder
per class) or a flat folder of images (both resized to the model's input), or any
``torch.utils.data.Dataset`` whose items are an image tensor in [0, 1] or a tuple
starting with one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fvis import hooks
from fvis.models.metadata import info as model_info
from fvis.objectives import Objective

__all__ = ["Examples", "dataset_examples", "as_dataset", "ranking_objective", "attribution_maps"]

RANKS = ("max", "mean")


@dataclass
class Examples:
    """Dataset examples of one unit (CPU tensors). ``*_index``: positions in the
    dataset, best first; ``*_value``: their scores; ``*_maps``: (k, H, W) attribution
    maps of the unit on each; ``*_images``: (k, C, H, W) the inputs in [0, 1]."""

    unit: str
    rank: str
    top_index: torch.Tensor
    top_value: torch.Tensor
    bottom_index: torch.Tensor
    bottom_value: torch.Tensor
    top_images: torch.Tensor
    bottom_images: torch.Tensor
    top_maps: torch.Tensor | None = None
    bottom_maps: torch.Tensor | None = None


class _Files(torch.utils.data.Dataset):
    """The images of a flat folder (:func:`fvis.image.image_files`), read at ``size``."""

    def __init__(self, files, size: tuple[int, int, int]):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from fvis.image import load_image

        c, h, w = self.size
        return load_image(self.files[i], (h, w), channels=c)[0]


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def as_dataset(data, model: nn.Module) -> torch.utils.data.Dataset:
    """The dataset ``data`` names, with items the model takes (see the module docstring)."""
    info = model_info(model)
    if data is None:
        from fvis.data import mnist

        if tuple(info.input_size) != (1, 28, 28):
            raise ValueError(
                "the bundled held-out digits are 1×28×28; give a dataset for a model "
                f"with inputs of {tuple(info.input_size)}"
            )
        return _Tensors(mnist("test")[0])
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"a tensor of images must be (N, C, H, W), not {tuple(data.shape)}")
        return _Tensors(data)
    if isinstance(data, str | os.PathLike):
        if not os.path.isdir(data):
            raise FileNotFoundError(f"dataset folder {data} does not exist; give one of images")
        if not any(p.is_dir() for p in Path(data).iterdir()):  # a flat folder of images
            from fvis.image import image_files

            return _Files(image_files(data), tuple(info.input_size))
        from torchvision import datasets
        from torchvision import transforms as TV

        c, h, w = info.input_size
        steps = [TV.Resize((h, w)), TV.ToTensor()]
        if c == 1:
            steps.insert(0, TV.Grayscale(1))
        elif c == 3:
            steps.insert(0, TV.Lambda(lambda im: im.convert("RGB")))
        return datasets.ImageFolder(os.fspath(data), transform=TV.Compose(steps))
    if isinstance(data, torch.utils.data.Dataset):
        return data
    raise TypeError(
        "dataset must be None (the held-out digits), a tensor, a folder path or a "
        f"torch Dataset, not {type(data).__name__}"
    )


def _image(item) -> torch.Tensor:
    img = item[0] if isinstance(item, tuple | list) else item
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"dataset items must be image tensors, not {type(img).__name__}")
    return img


def _load(dataset, index: Sequence[int]) -> torch.Tensor:
    return torch.stack([_image(dataset[int(i)]) for i in index]).float()


def ranking_objective(unit, rank: str = "max", labels=None) -> Objective:
    """What the examples are ranked by, as an objective (B,): for a channel its
    activation map's maximum over positions (``"max"``) or mean (``"mean"``); any other
    unit its own objective. The attribution maps explain this same value, so for
    ``"max"`` they show where the hottest position looks."""
    if isinstance(unit, Objective):
        return unit
    if unit.kind != "channel":
        return unit.objective(labels)
    layer, c, sign = unit.layer, unit.index, -1.0 if unit.negative else 1.0

    def fn(a):
        t = a[layer][:, c]
        if t.dim() > 1:
            t = t.flatten(1)
            t = t.amax(1) if rank == "max" else t.mean(1)
        return sign * t

    return Objective(fn, [layer], f"{rank}({unit})")


def dataset_examples(
    model: nn.Module,
    dataset,
    units,
    *,
    k: int = 8,
    rank: str = "max",
    batch_size: int = 256,
    method: str | None = "gradient_x_input",
) -> list[Examples]:
    """Top-``k`` and bottom-``k`` inputs of ``dataset`` for each of ``units`` (unit
    specs, :class:`fvis.recipes.Unit` or objectives), with the unit's attribution map on
    each (``method=None``: no maps). One :class:`Examples` per unit, in order."""
    from fvis.recipes.units import Unit, parse_unit

    if rank not in RANKS:
        raise ValueError(f"rank must be 'max' or 'mean', not {rank!r}")
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be at least 1 (got {k}, {batch_size})")
    units = [parse_unit(u) if isinstance(u, str) else u for u in units]
    if not units:
        raise ValueError("dataset_examples needs at least one unit")
    info = model_info(model)
    objectives = [ranking_objective(u, rank, info.labels) for u in units]
    data = as_dataset(dataset, model)
    n = len(data)
    if n == 0:
        raise ValueError("the dataset is empty")
    k = min(k, n)
    device = hooks.model_device(model)
    layers = sorted({name for o in objectives for name in o.layers})
    scores = []
    for start in range(0, n, batch_size):
        x = _load(data, range(start, min(n, start + batch_size))).to(device)
        with torch.no_grad():
            acts = hooks.capture(model, info.normalize(x), layers)
            scores.append(torch.stack([o(acts) for o in objectives], 1).float().cpu())
    scores = torch.cat(scores)  # (N, units)
    top = scores.topk(k, dim=0)
    bottom = scores.topk(k, dim=0, largest=False)
    out = []
    for j, u in enumerate(units):
        ti, bi = top.indices[:, j], bottom.indices[:, j]
        timg, bimg = _load(data, ti.tolist()), _load(data, bi.tolist())
        ex = Examples(
            unit=str(u) if isinstance(u, Unit) else u.name,
            rank=rank,
            top_index=ti,
            top_value=top.values[:, j],
            bottom_index=bi,
            bottom_value=bottom.values[:, j],
            top_images=timg,
            bottom_images=bimg,
        )
        if method is not None:
            maps = attribution_maps(model, torch.cat([timg, bimg]), objectives[j], method)
            ex.top_maps, ex.bottom_maps = maps[:k], maps[k:]
        out.append(ex)
    return out


def attribution_maps(
    model: nn.Module, images: torch.Tensor, objective, method: str
) -> torch.Tensor:
    """(N, H, W): ``method``'s attribution of ``objective`` for each image in [0, 1],
    summed over colour channels."""
    from fvis.attribution import get

    info = model_info(model)
    x = info.normalize(images.to(hooks.model_device(model)))
    attr = get(method)(model).attribute(x, objective)
    attr = attr.sum(1) if attr.dim() == 4 else attr
    return attr.detach().float().cpu()
