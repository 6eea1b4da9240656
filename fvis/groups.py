"""Neuron groups (Olah et al. 2018, "The building blocks of interpretability"): the
activations of a layer for one input, factorized into a few groups of channels that fire
together, each with where it fires, how much it counts, and what it responds to.

With ``A`` the layer's non-negative activations as a matrix (positions P = H·W, channels
C), non-negative matrix factorization gives

    A ≈ S D,   S ≥ 0 (P, k): each group's spatial amount,   D ≥ 0 (k, C): its channel mix

(HALS coordinate descent on ``‖A − SD‖²``, :func:`fvis.nmf.nmf`). Each group's share of the
decision is gradient × activation restricted to it, ``r_g = Σ_{p,c} G[p, c] S[p, g]
D[g, c]`` with ``G = ∂f/∂A``, so ``Σ_g r_g = ⟨G, SD⟩`` differs from the layer's
gradient × activation ``⟨G, A⟩`` by at most ``‖G‖·‖A − SD‖``. Each group is visualized
by the direction objective along ``D[g]`` (cosine-weighted, as in the article), all
groups in one batch.

>>> groups = neuron_groups(model, image, layer="relu3", k=3, steps=8)  # NMF: after a ReLU
>>> path = groups.save("groups.png")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from fvis import heatmap
from fvis import objectives as O
from fvis.attribution.base import gradients, upsample
from fvis.attribution.layer import default_layer, layer_grid
from fvis.image import to_pil
from fvis.io import save_image
from fvis.models.metadata import info as model_info
from fvis.nmf import EPS, nmf
from fvis.outputs import probabilities

__all__ = ["NeuronGroups", "neuron_groups"]


@dataclass
class NeuronGroups:
    """Neuron groups of one input (CPU tensors; images in [0, 1])."""

    image: torch.Tensor  # (C, H, W)
    target: int
    label: str
    layer: str
    directions: torch.Tensor  # (k, channels), unit rows: each group's channel mix D
    amounts: torch.Tensor  # (k, h, w) at the layer's resolution: S
    scores: torch.Tensor  # (k,) r_g, ordered largest first
    total: float  # ⟨G, A⟩: the layer's gradient × activation
    error: float  # ‖A − SD‖ / ‖A‖
    visualizations: torch.Tensor  # (k, C, H', W')

    def figure(self, size: int = 112) -> Image.Image:
        """Top row: the input, then where each group fires (overlay); bottom row: each
        group's visualization under its map, captioned with its share of the decision."""
        from fvis.figures import sheet

        rgb = self.image.expand(3, -1, -1) if self.image.shape[0] == 1 else self.image
        maps = upsample(self.amounts, self.image.shape[-2:])
        cells = [(0, 0, f"{self.label}: {self.layer}", to_pil(self.image)[0])]
        for g, (s, v) in enumerate(zip(self.scores, self.visualizations)):
            where = heatmap.overlay(rgb, maps[g, None], signed=False)
            cells.append((0, g + 1, f"group {g}", heatmap.to_pil(where)))
            cells.append((1, g + 1, f"share {s:+.3g}", to_pil(v)[0]))
        return sheet(cells, size)

    def save(self, path) -> Path:
        """Write :meth:`figure` atomically."""
        save_image(self.figure(), path)
        return Path(path)


def neuron_groups(
    model,
    image: torch.Tensor,
    target: int | str | None = None,
    *,
    layer: str | None = None,
    k: int = 6,
    iters: int = 200,
    steps: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> NeuronGroups:
    """Neuron groups of ``layer`` for one image (1, C, H, W) or (C, H, W) in [0, 1] and
    ``target`` (class index or label; default the predicted class). ``layer`` must have
    non-negative activations (after a ReLU); by default it is the last convolutional
    layer, whose positive part ``A⁺`` is factorized (what a following ReLU passes).
    ``steps``: optimizer steps of the group renders."""
    import fvis

    info = model_info(model)
    img = image if image.dim() == 4 else image.unsqueeze(0)
    if img.shape[0] != 1:
        raise ValueError(f"neuron groups explain one image; got a batch of {img.shape[0]}")
    x = info.normalize(img.to(fvis.hooks.model_device(model)))
    probs = probabilities(model, x)[0]
    t = int(probs.argmax()) if target is None else info.label_index(target)
    positive_part = layer is None
    layer = layer or default_layer(model, x)
    grad, act, _ = gradients(model, x, t, layer)
    grad, act = layer_grid(model, x, layer, grad, act)  # features first (B, C, h, w)
    act = act.clamp(min=0) if positive_part else act
    if act.dim() != 4:
        raise ValueError(f"neuron groups need a convolutional layer (B, C, H, W); {layer!r} "
                         f"gives {tuple(act.shape)}")  # fmt: skip
    c, h, w = act.shape[1:]
    a = act[0].detach().flatten(1).T  # (P, C)
    s, d = nmf(a, k, iters=iters, seed=seed)
    gm = grad[0].detach().flatten(1).T.double()  # (P, C)
    scores = ((gm @ d.T) * s).sum(0)  # r_g = Σ_p S[p, g] ⟨G[p], D[g]⟩
    order = scores.argsort(descending=True)
    s, d, scores = s[:, order], d[order], scores[order]
    error = float((a.double() - s @ d).norm() / a.double().norm().clamp_min(EPS))
    units = [O.direction(layer, d[g].float(), cossim_pow=1.0) for g in range(k)]
    vis = fvis.render(model, O.one_per_item(units) - 0.05 * O.total_variation(),
                      batch=k, steps=steps, seed=seed, progress=progress)  # fmt: skip
    return NeuronGroups(
        image=img[0].detach().cpu(),
        target=t,
        label=info.labels[t] if info.labels else str(t),
        layer=layer,
        directions=d.float().cpu(),
        amounts=s.T.reshape(k, h, w).float().cpu(),
        scores=scores.float().cpu(),
        total=float((gm * a.double()).sum()),
        error=error,
        visualizations=vis.images,
    )
