"""Quality of feature visualizations (images in [0, 1], as :func:`fvis.render` returns).

* :func:`transformation_robustness`: does the image still drive its unit when jittered,
  scaled and rotated (Lucid's standard transforms)? ``mean_s f(T_s(x)) / f(x)``.
* :func:`diversity`: how different the images of a batch are, ``1 − mean_{i≠j}
  cos(G_i, G_j)`` of Gram matrices (Lucid's diversity objective, as a measure).
* :func:`transfer`: does another model see the class? Its probability of the class.
"""

from __future__ import annotations

import torch
from torch import nn

from fvis import hooks
from fvis import transforms as T
from fvis.attribution.base import Target, scores
from fvis.attribution.baselines import generator as make_generator

__all__ = ["diversity", "transfer", "transformation_robustness"]


def transformation_robustness(
    model: nn.Module,
    objective,
    images: torch.Tensor,
    *,
    transforms="standard",
    n: int = 16,
    generator: torch.Generator | int | None = 0,
) -> torch.Tensor:
    """``mean_s f(T_s(x)) / f(x)`` per image, ``(B,)``: 1 = the unit responds to the
    transformed image as to the image itself, near 0 = the image works only pixel-exact
    (an adversarial pattern). ``f``: ``objective`` (an Objective, a class index or
    per-item classes, as attribution targets) on the normalized image; ``T_s``: ``n``
    draws of ``transforms`` (default Lucid's standard: pad, jitter, scale, rotate) from
    ``generator``, all ``n · B`` images in one forward. NaN where ``f(x) ≤ 0``.
    """
    x = images.detach()
    gen = make_generator(generator)
    tf = T.resolve(transforms)
    with torch.no_grad():
        moved = [tf(x, gen) for _ in range(n)]
        size = x.shape[-2:]
        moved = torch.cat([T.fit(m, size) for m in moved])
        b = x.shape[0]
        inp = T.model_input(model, x)
        tgt = Target(model, inp, objective)
        f0 = scores(model, inp, tgt.all())[0]
        f = scores(model, T.model_input(model, moved), tgt.rows(torch.arange(n * b) % b))[0]
    ratio = f.view(n, b).mean(0) / f0
    return torch.where(f0 > 0, ratio, torch.full_like(ratio, float("nan")))


def diversity(
    images: torch.Tensor, model: nn.Module | None = None, layer: str | None = None
) -> float:
    """``1 − mean_{i≠j} cos(G_i, G_j)`` over the ``B ≥ 2`` images of a batch, in [0, 2]
    (0: all alike). ``G_i``: the Gram matrix ``A_i A_iᵀ / (H W)`` of the activation of
    ``layer`` (C, H·W) — position-independent, as Lucid's diversity objective — or, with
    no model, the image's pixels flattened."""
    x = images.detach()
    if x.shape[0] < 2:
        raise ValueError("diversity compares images of a batch: give at least 2")
    if model is None:
        g = x.flatten(1)
    else:
        if layer is None:
            raise ValueError("diversity with a model needs the layer whose features to compare")
        with torch.no_grad():
            a = hooks.capture(model, T.model_input(model, x), [layer]).grid(layer)
        a = a.reshape(a.shape[0], a.shape[1], -1)  # (B, C, positions), features first
        g = (a @ a.transpose(1, 2) / a.shape[2]).flatten(1)
    g = torch.nn.functional.normalize(g.double(), dim=1)
    sim = g @ g.T
    b = sim.shape[0]
    off = (sim.sum() - sim.diagonal().sum()) / (b * (b - 1))
    return float(1 - off)


def transfer(model: nn.Module, images: torch.Tensor, classes) -> torch.Tensor:
    """Softmax probability ``(B,)`` that a second ``model`` gives each image's class
    (an int or per-item classes): a visualization of a class that another classifier
    also recognizes shows the class, not one network's quirks."""
    with hooks.guard(model), torch.no_grad():  # eval mode, restored after
        out = model(T.model_input(model, images.detach()))
    c = torch.as_tensor(classes, device=out.device).long().flatten().expand(out.shape[0])
    return out.softmax(1).gather(1, c[:, None]).squeeze(1)
