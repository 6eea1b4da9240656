"""Dataset examples of a unit: the held-out digits that excite and inhibit it most, with
where in each it fires. PROVISIONAL until fvis's dataset-examples function lands."""

from __future__ import annotations

import torch

import fvis
from fvis import heatmap
from fvis.attribution.base import upsample


def examples(model, layer: str, index: int, k: int = 6, rank: str = "max"):
    """``(top, bottom)``: lists of ``(overlay image (3, H, W), activation, digit index)``,
    ranked by the unit's max over positions (``rank="max"``, Microscope's choice) or mean."""
    from fvis.data import mnist

    images, _ = mnist("test")
    x = model.fvis_info.normalize(images.to(fvis.hooks.model_device(model)))
    with torch.no_grad():
        a = fvis.capture(model, x, [layer])[layer][:, index].float().cpu()
    flat = a.flatten(1) if a.dim() > 1 else a[:, None]
    score = flat.amax(1) if rank == "max" else flat.mean(1)
    out = []
    for idx in (score.topk(k).indices, score.topk(k, largest=False).indices):
        maps = a[idx] if a.dim() > 1 else a[idx][:, None, None].expand(-1, *images.shape[-2:])
        maps = upsample(maps, images.shape[-2:]) if maps.shape[-2:] != images.shape[-2:] else maps
        over = heatmap.overlay(images[idx], maps[:, None] if maps.dim() == 3 else maps)
        out.append([(over[i], float(score[j]), int(j)) for i, j in enumerate(idx)])
    return out
