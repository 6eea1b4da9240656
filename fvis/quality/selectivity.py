"""Selectivity (Bach et al. 2015; Samek et al. 2017; Montavon et al. 2017 §5.2): remove
the patches an explanation calls relevant and watch the target score.

The image is cut into ``patch``×``patch`` cells (the last row/column may be smaller); a
cell's relevance is the sum of the map over it and over channels. Removed cells take the
baseline ``fill`` (default the black image) or, with ``imputation="road"``, ROAD's noisy
linear imputation from the kept pixels (Rong et al. 2022, :func:`road_impute`).

* :func:`pixel_flipping` ranks the cells once on the given map (one-shot) and scores
  every step in one batched, gradient-free pass (no per-step loop).
* :func:`recompute_flipping` is Montavon et al.'s loop: one cell per step, the
  explanation recomputed on the perturbed image before choosing the next cell.

Orders: ``"morf"`` (most relevant first: a steep fall, low area = selective),
``"lerf"`` (least relevant first: a flat curve, high area = the kept evidence is what
counts) and ``"random"`` (a seeded random order per item: the control).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fvis import hooks
from fvis.attribution.base import Attribution, Target, row_chunks, scores, upsample
from fvis.attribution.baselines import generator as make_generator
from fvis.attribution.baselines import make_baselines
from fvis.models.metadata import info as model_info

__all__ = ["ORDERS", "FlipCurve", "pixel_flipping", "recompute_flipping", "road_impute"]

ORDERS = ("morf", "lerf", "random")

# Rows per scoring chunk when ``internal_batch_size`` is None: as many as keep a
# chunk's input under 2²³ values (32 MiB fp32; ResNet-18 at 224 px: 55 images). Measured on
# 2 CPU cores: batches of 34–68 ResNet-18 rows ran 1.1–2× faster per image than Quantus's
# batch of 4 (idle vs loaded machine), and 400 MNIST rows in one chunk ~1.7× faster than
# chunks of 64 (one run each).
_CHUNK_VALUES = 1 << 23

# ROAD's neighbour weights (Rong et al. 2022; pytorch-grad-cam metrics/road.py): 1/6 for
# the four direct neighbours, 1/12 for the four diagonal ones (they sum to 1).
_ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


@dataclass
class FlipCurve:
    """Result of :func:`pixel_flipping` / :func:`recompute_flipping`.

    ``fractions`` (K+1,): fraction of cells removed at each step (0 first); ``scores``
    (B, K+1): target score after each step; ``auc`` (B,): trapezoid area under
    ``scores`` over ``fractions``; ``aopc`` (B,): ``mean_k (scores[:, 0] − scores[:, k])``
    over k = 0..K. MoRF: low ``auc`` / high ``aopc`` is selective; LeRF the reverse.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    aopc: torch.Tensor
    order: str = "morf"

    @staticmethod
    def of(fractions: torch.Tensor, curve: torch.Tensor, order: str) -> FlipCurve:
        auc = torch.trapezoid(curve, fractions.to(curve), dim=1)
        aopc = (curve[:, :1] - curve).mean(1)
        return FlipCurve(fractions.cpu(), curve.cpu(), auc.cpu(), aopc.cpu(), order)


def _patch_sums(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """Sum of ``maps`` (B, H, W) over non-overlapping ``patch``² cells, zero-padded at the
    bottom/right: (B, ceil(H/p), ceil(W/p))."""
    h, w = maps.shape[-2:]
    ph, pw = -(-h // patch), -(-w // patch)
    m = F.pad(maps, (0, pw * patch - w, 0, ph * patch - h))
    return m.view(m.shape[0], ph, patch, pw, patch).sum((2, 4))


def _cell_relevance(maps: torch.Tensor, x: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-cell relevance (B, ph·pw) of ``maps`` shaped like ``x`` (B, C, H, W), a
    low-resolution ``(B, 1, h, w)`` (upsampled bilinearly) or ``(B, H, W)``."""
    m = maps.detach().to(x.device, x.dtype)
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4 or m.shape[0] != x.shape[0]:
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not match inputs {tuple(x.shape)}")
    if m.shape[-2:] != x.shape[-2:]:
        m = upsample(m, x.shape[-2:])
    return _patch_sums(m.sum(1), patch).flatten(1)


def _pixels(cells: torch.Tensor, patch: int, size: tuple[int, int]) -> torch.Tensor:
    """Cell mask (N, ph, pw) → pixel mask (N, 1, H, W) without copies per cell."""
    n, ph, pw = cells.shape
    big = cells[:, :, None, :, None].expand(n, ph, patch, pw, patch)
    return big.reshape(n, 1, ph * patch, pw * patch)[..., : size[0], : size[1]]


def road_impute(
    x: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | int | None = 0,
    tol: float = 1e-6,
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022), batched: ``x`` (N, C, H, W),
    ``removed`` (N, 1, H, W) or (N, H, W) bool. Each removed pixel takes the weighted mean
    of its in-image neighbours (weights 1/6 direct, 1/12 diagonal), kept neighbours fixed:
    ``Σ_j w_j (v_i − v_j) = 0``, solved per row and channel by conjugate gradients to a
    relative residual ``tol`` (the system is the graph Laplacian restricted to the removed
    pixels: symmetric positive definite where a removed region touches a kept pixel; a
    region that touches none stays 0). Then ``noise · N(0, 1)`` is added to the removed
    pixels (drawn from ``generator`` in the shape of ``x``). Kept pixels are unchanged."""
    m = removed.reshape(x.shape[0], 1, *x.shape[-2:]).to(x.dtype)
    n, c = x.shape[:2]
    k = _ROAD_KERNEL.to(x).expand(c, 1, 3, 3)

    def neigh(v):  # Σ_j w_j v_j over in-image neighbours (zero padding)
        return F.conv2d(v, k, padding=1, groups=c)

    wsum = neigh(torch.ones_like(x[:1]))  # Σ of the in-image neighbour weights
    b = neigh(x * (1 - m)) * m

    def apply(v):
        return (wsum * v - neigh(v * m)) * m

    v = torch.zeros_like(x)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum((2, 3), keepdim=True)
    stop = tol**2 * rr.clamp(min=1e-30)
    for _ in range(int(m[0].numel())):  # CG ends in at most n steps in exact arithmetic
        if bool((rr <= stop).all()):
            break
        ap = apply(p)
        alpha = rr / (p * ap).sum((2, 3), keepdim=True).clamp(min=1e-30)
        alpha = torch.where(rr <= stop, torch.zeros_like(alpha), alpha)
        v = v + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum((2, 3), keepdim=True)
        p = r + (rr_new / rr.clamp(min=1e-30)) * p
        rr = rr_new
    if noise:
        gen = make_generator(generator)
        eps = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
        v = v + noise * eps * m
    return x * (1 - m) + v * m


def _check(order: str, imputation: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if imputation not in ("fill", "road"):
        raise ValueError(f"imputation must be 'fill' or 'road', not {imputation!r}")


def _ranks(cells: torch.Tensor, order: str, gen: torch.Generator) -> torch.Tensor:
    """Rank of each cell (B, P) in the removal order (0 = removed first); ties keep
    row-major cell order."""
    b, p = cells.shape
    if order == "random":
        keys = torch.rand(b, p, generator=gen, device=gen.device).to(cells.device)
        idx = keys.argsort(dim=1)
    else:
        idx = cells.argsort(dim=1, descending=order == "morf", stable=True)
    rank = torch.empty_like(idx)
    rank.scatter_(1, idx, torch.arange(p, device=idx.device).expand(b, -1))
    return rank


def _row_chunks(n: int, b: int, row_values: int, size: int | None) -> list[slice]:
    """Slices of ``n`` rows: ``size`` rows each, or with ``size=None`` split evenly into as
    few chunks as keep each under :data:`_CHUNK_VALUES` input values (or ``b`` rows, if
    more)."""
    if size is not None:
        return list(row_chunks(n, size))
    per = b * max(1, _CHUNK_VALUES // max(1, b * row_values))  # rows per chunk at most
    k = -(-n // per)
    per = -(-n // k)  # the same number of rows in each chunk (the last maybe fewer)
    return [slice(s, min(s + per, n)) for s in range(0, n, per)]


def _fresh(x, fill_img, rank, counts, patch: int) -> torch.Tensor:
    """(K+1, B) bool: whether step k's input for item b differs from step k−1's (step 0
    always counts). A step that only removes cells already equal to the fill (an MNIST
    digit's black border under ``fill="black"``) changes nothing: its score is the
    previous step's, and no forward is spent on it."""
    differs = _patch_sums((x != fill_img).any(1).to(x.dtype), patch).flatten(1) > 0  # (B, P)
    in_order = torch.zeros_like(differs).scatter_(1, rank, differs)  # (B, P) by removal rank
    seen = F.pad(in_order.cumsum(1), (1, 0))[:, counts]  # (B, K+1): changing cells removed
    fresh = torch.ones(len(counts), x.shape[0], dtype=torch.bool, device=x.device)
    fresh[1:] = (seen[:, 1:] > seen[:, :-1]).T
    return fresh


def _score(model, rows: torch.Tensor, objective) -> torch.Tensor:
    """Target scores of perturbed rows, without autograd, on channels-last input where
    the model takes it (:func:`fvis.hooks.channels_last_input`)."""

    def run(rows):
        with torch.inference_mode():
            return scores(model, rows, objective)[0].float()

    return hooks.channels_last_input(model, rows, run)


def pixel_flipping(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    target=None,
    *,
    patch: int = 4,
    steps: int = 20,
    fraction: float = 1.0,
    order: str = "morf",
    fill="black",
    imputation: str = "fill",
    noise: float = 0.01,
    internal_batch_size: int | None = None,
    generator: torch.Generator | int | None = 0,
) -> FlipCurve:
    """One-shot selectivity: rank the cells once on ``maps`` and remove them in ``order``.

    At step ``k = 0..K`` (``K = steps``) the first ``round(k · P · fraction / K)`` of the
    ``P`` cells are removed (``steps = P`` with ``fraction = 1``: one cell per step, as
    Quantus's region perturbation) and the target's score is recorded (``None`` →
    predicted class of the intact input; an int, per-item classes or an Objective as in
    :class:`~fvis.attribution.base.Target`). ``maps``: ``(B, C, H, W)``, ``(B, 1, h, w)``
    (upsampled bilinearly) or ``(B, H, W)``. ``fill``: any baseline name or tensor of
    :mod:`fvis.attribution.integrated`; ``imputation="road"`` imputes instead
    (:func:`road_impute` with ``noise``). The ``(K+1)·B`` perturbed inputs are built from
    the one ranking (a cell is gone at step k iff its rank < count_k); a step that
    removes only cells already equal to the fill changes nothing and keeps the previous
    score (:func:`_fresh`); the others are scored in chunks of ``internal_batch_size``
    rows (None: as few chunks as keep 2²³ input values each), under ``inference_mode``
    on channels-last input. ``generator``: a
    generator or seed for random orders, fills and ROAD noise. Returns a :class:`FlipCurve`.
    """
    _check(order, imputation)
    x = inputs.detach()
    if x.dim() != 4:
        raise ValueError(f"pixel_flipping needs images (B, C, H, W), got {tuple(x.shape)}")
    if not 0 < fraction <= 1 or steps < 1:
        raise ValueError(f"need steps ≥ 1 and 0 < fraction ≤ 1, got {steps} and {fraction}")
    b, size = x.shape[0], x.shape[-2:]
    cells = _cell_relevance(maps, x, patch)
    n_cells = cells.shape[1]
    gen = make_generator(generator)
    rank = _ranks(cells, order, gen)
    counts = torch.tensor(
        [round(k * n_cells * fraction / steps) for k in range(steps + 1)], device=x.device
    )
    fill_img = make_baselines(fill, x, model_info(model), gen)[0]
    tgt = Target(model, x, target)
    ph, pw = -(-size[0] // patch), -(-size[1] // patch)
    if imputation == "road" or tgt.classes is None:  # fresh noise in every row; or an
        # objective, whose item may depend on the others' rows: each row is scored
        fresh = torch.ones(steps + 1, b, dtype=torch.bool, device=x.device)
    else:
        fresh = _fresh(x, fill_img, rank, counts, patch)
    todo = fresh.flatten().nonzero().squeeze(1)  # row r: step r // B, item r % B
    values = []
    for sl in _row_chunks(len(todo), b, x[0].numel(), internal_batch_size):
        r = todo[sl]
        item, step = r % b, r // b
        gone = _pixels((rank[item] < counts[step, None]).view(-1, ph, pw), patch, size)
        if imputation == "road":
            rows = road_impute(x[item], gone, noise=noise, generator=gen)
        else:
            rows = torch.where(gone, fill_img[item], x[item])
        values.append(_score(model, rows, tgt.rows(item.cpu())))
    scored = torch.empty(steps + 1, b, device=x.device)
    scored.view(-1)[todo] = torch.cat(values).to(scored.device)
    k = torch.arange(steps + 1, device=x.device)[:, None]
    last = torch.where(fresh, k, 0).cummax(0).values  # the last step that changed the input
    curve = scored.gather(0, last).T
    return FlipCurve.of(counts.to(torch.float32) / n_cells, curve, order)


def recompute_flipping(
    method: Attribution,
    inputs: torch.Tensor,
    target=None,
    *,
    patch: int = 4,
    steps: int = 20,
    order: str = "morf",
    fill="black",
    imputation: str = "fill",
    noise: float = 0.01,
    generator: torch.Generator | int | None = 0,
    **options,
) -> FlipCurve:
    """Montavon et al.'s selectivity loop (Understanding-NN 5.2): ``steps`` times, explain
    the current image with ``method`` (``options`` go to its ``attribute``), remove the
    most (``"morf"``) or least (``"lerf"``) relevant cell not yet removed (ties: the first
    in row-major order), and record the target score. The target is fixed on the intact
    input. Each step needs the previous step's map, so the loop over steps is inherent;
    the batch is processed together. ``"random"`` does not depend on the maps: use
    :func:`pixel_flipping`. Fill and imputation as :func:`pixel_flipping`;
    ``fractions[k] = k / P``. Returns a :class:`FlipCurve`.
    """
    _check(order, imputation)
    if order == "random":
        raise ValueError("a random order ignores the explanation; use pixel_flipping")
    model = method.model
    x = inputs.detach()
    if x.dim() != 4:
        raise ValueError(f"recompute_flipping needs images (B, C, H, W), got {tuple(x.shape)}")
    b, size = x.shape[0], x.shape[-2:]
    ph, pw = -(-size[0] // patch), -(-size[1] // patch)
    if not 1 <= steps <= ph * pw:
        raise ValueError(f"steps must be 1..{ph * pw} (the number of cells), not {steps}")
    gen = make_generator(generator)
    fill_img = make_baselines(fill, x, model_info(model), gen)[0]
    tgt = Target(model, x, target)
    objective = tgt.all()
    removed = torch.zeros(b, ph * pw, dtype=torch.bool, device=x.device)
    current = x
    curve = [_score(model, x, objective)]
    sign = 1.0 if order == "morf" else -1.0
    for _ in range(steps):
        cells = sign * _cell_relevance(method.attribute(current, objective, **options), x, patch)
        cells = cells.masked_fill(removed, float("-inf"))
        removed[torch.arange(b), cells.argmax(1)] = True  # argmax: first of ties
        gone = _pixels(removed.view(b, ph, pw), patch, size)
        if imputation == "road":
            current = road_impute(x, gone, noise=noise, generator=gen)
        else:
            current = torch.where(gone, fill_img, x)
        curve.append(_score(model, current, objective))
    fractions = torch.arange(steps + 1, dtype=torch.float32) / (ph * pw)
    return FlipCurve.of(fractions, torch.stack(curve, 1), order)
