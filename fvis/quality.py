"""Explanation quality: one pinned definition per measure.

* :func:`continuity` (Montavon et al. 2017, §5.1): how much the explanation jumps
  when the input moves a little, ``max_{x′} ‖R(x) − R(x′)‖₁ / ‖x − x′‖₂`` over the
  translations ``x′`` of ``x`` by at most ``max_shift`` pixels. Lower is better.
* :func:`pixel_flipping` (selectivity; Bach et al. 2015, Samek et al. 2017): remove
  the most relevant patches first, record the target score after each step; area under
  that curve (lower = more selective) and AOPC (mean drop, higher = better). All steps
  go through the model as one batch (in chunks), not one forward per step.
* :func:`model_randomization` (Adebayo et al. 2018, cascading): randomize the layers
  top-down on a copy of the model and report the Spearman rank correlation of each
  stage's map with the original map. A method whose maps stay correlated when the
  weights are random is not explaining the model. The model itself is never modified.

``method`` arguments are :class:`fvis.attribution.base.Attribution` instances (for
:func:`model_randomization`, an Attribution class or ``fn(model) -> Attribution``);
``options`` are passed to their ``attribute``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fvis.attribution.base import Attribution, Target, row_chunks, scores, upsample
from fvis.attribution.integrated import generator as make_generator
from fvis.attribution.integrated import make_baselines
from fvis.attribution.layer import execution_order
from fvis.models.info import info as model_info

__all__ = [
    "FlipCurve",
    "Randomization",
    "continuity",
    "model_randomization",
    "pixel_flipping",
    "spearman",
]


# ---------------------------------------------------------------- continuity


def _translate(x: torch.Tensor, fill: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved ``dy`` px down and ``dx`` px right; uncovered pixels from ``fill``."""
    out = fill.clone()
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def continuity(
    method: Attribution,
    inputs: torch.Tensor,
    target=None,
    *,
    max_shift: int = 2,
    fill="black",
    **options,
) -> torch.Tensor:
    """Continuity ``C(x) = max_{x′} ‖R(x) − R(x′)‖₁ / ‖x − x′‖₂`` per item, ``(B,)``, ≥ 0,
    lower is better.

    ``x′`` ranges over the translations of ``x`` by ``(dy, dx)``, ``0 < max(|dy|, |dx|) ≤
    max_shift`` pixels (24 shifts for 2), with uncovered pixels taken from the baseline
    ``fill`` (default the black image). ``R(x′)`` explains the same target as ``R(x)``
    (``None`` → predicted class of ``x``) and is compared position by position, as in
    Montavon et al.'s Lipschitz-style definition. Units are those of the map, so compare
    methods on normalized maps or through their ranking on the same inputs.
    """
    model = method.model
    x = inputs.detach()
    if x.dim() != 4:
        raise ValueError(f"continuity translates images (B, C, H, W), got {tuple(x.shape)}")
    b = x.shape[0]
    tgt = Target(model, x, target)
    base = make_baselines(fill, x, model_info(model), make_generator(0))[0]
    shifts = [
        (dy, dx)
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
        if (dy, dx) != (0, 0)
    ]
    if not shifts:
        raise ValueError(f"max_shift must be ≥ 1, not {max_shift}")
    moved = torch.cat([_translate(x, base, dy, dx) for dy, dx in shifts])  # (S·B, ...)
    rows = torch.cat([x, moved])
    items = torch.arange(rows.shape[0]) % b
    maps = method.attribute(rows, tgt.rows(items), **options).detach()
    r0, r = maps[:b], maps[b:].view(len(shifts), b, *maps.shape[1:])
    num = (r - r0).abs().flatten(2).sum(2)
    den = (moved.view(len(shifts), b, -1) - x.view(1, b, -1)).norm(dim=2)
    ratio = torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))
    return ratio.max(0).values


# ---------------------------------------------------------------- pixel flipping


@dataclass
class FlipCurve:
    """Result of :func:`pixel_flipping`.

    ``fractions`` (K+1,): fraction of patches removed at each step (0 first);
    ``scores`` (B, K+1): target score after each step; ``auc`` (B,): trapezoid area under
    ``scores`` over ``fractions`` (lower = more selective); ``aopc`` (B,):
    ``mean_k (scores[:, 0] − scores[:, k])`` over k = 0..K (higher = better).
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    aopc: torch.Tensor


def _patch_sums(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """Sum of ``maps`` (B, H, W) over non-overlapping ``patch``² cells, zero-padded at the
    bottom/right: (B, ceil(H/p), ceil(W/p))."""
    h, w = maps.shape[-2:]
    ph, pw = -(-h // patch), -(-w // patch)
    m = F.pad(maps, (0, pw * patch - w, 0, ph * patch - h))
    return m.view(m.shape[0], ph, patch, pw, patch).sum((2, 4))


def pixel_flipping(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    target=None,
    *,
    patch: int = 4,
    steps: int = 20,
    fraction: float = 1.0,
    fill="black",
    internal_batch_size: int | None = 256,
    generator: torch.Generator | int | None = 0,
) -> FlipCurve:
    """Selectivity by patch flipping, most relevant first (MoRF).

    The image is cut into ``patch``×``patch`` cells (4×4, as Understanding-NN §5.2; the
    last row/column may be smaller); a cell's relevance is the sum of ``maps`` over it
    (and over channels). At step ``k = 0..K`` (``K = steps``) the ``round(k · P · fraction
    / K)`` most relevant of the ``P`` cells are replaced by the baseline ``fill`` (default:
    the black image; any name or tensor of :mod:`fvis.attribution.integrated`), and the
    target's score (``None`` → predicted class of the intact input) is recorded. Ties keep
    cell order (row-major). ``maps``: ``(B, C, H, W)``, ``(B, 1, h, w)`` (upsampled
    bilinearly) or ``(B, H, W)``. The ``(K+1)·B`` perturbed inputs are scored in chunks of
    ``internal_batch_size`` rows without gradients. ``generator``: a generator or seed for
    a random ``fill``. Returns a :class:`FlipCurve`.
    """
    x = inputs.detach()
    if x.dim() != 4:
        raise ValueError(f"pixel_flipping needs images (B, C, H, W), got {tuple(x.shape)}")
    b, h, w = x.shape[0], *x.shape[-2:]
    m = maps.detach().to(x.device, x.dtype)
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4 or m.shape[0] != b:
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not match inputs {tuple(x.shape)}")
    if m.shape[-2:] != (h, w):
        m = upsample(m, (h, w))
    cells = _patch_sums(m.sum(1), patch)  # (B, ph, pw)
    ph, pw = cells.shape[-2:]
    n_cells = ph * pw
    order = cells.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_cells, device=order.device).expand(b, -1))
    counts = torch.tensor(
        [round(k * n_cells * fraction / steps) for k in range(steps + 1)], device=x.device
    )
    fill_img = make_baselines(fill, x, model_info(model), make_generator(generator))[0]
    tgt = Target(model, x, target)
    rows = (steps + 1) * b  # row r: step r // B, item r % B
    values = []
    with torch.no_grad():
        for sl in row_chunks(rows, internal_batch_size):
            r = torch.arange(sl.start, sl.stop, device=x.device)
            item, step = r % b, r // b
            gone = (rank[item] < counts[step, None]).view(-1, 1, ph, pw).to(x.dtype)
            gone = gone.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :h, :w]
            perturbed = x[item] * (1 - gone) + fill_img[item] * gone
            values.append(scores(model, perturbed, tgt.rows(item.cpu()))[0])
    curve = torch.cat(values).view(steps + 1, b).T
    fractions = counts.to(x.dtype) / n_cells
    auc = torch.trapezoid(curve, fractions, dim=1)
    aopc = (curve[:, :1] - curve).mean(1)
    return FlipCurve(fractions.cpu(), curve.cpu(), auc.cpu(), aopc.cpu())


# ---------------------------------------------------------------- randomisation


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of each row of ``v`` (B, n), ties given their average rank."""
    order = v.argsort(dim=1, stable=True)
    sorted_v = v.gather(1, order)
    out = torch.empty_like(v, dtype=torch.float64)
    for i in range(v.shape[0]):
        _, inverse, counts = torch.unique_consecutive(
            sorted_v[i], return_inverse=True, return_counts=True
        )
        ends = counts.cumsum(0).double()
        avg = ends - (counts.double() + 1) / 2  # mean of ranks start..end-1
        out[i, order[i]] = avg[inverse]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each item's flattened maps, ``(B,)`` in [−1, 1]:
    the Pearson correlation of tie-averaged ranks. NaN when a map is constant."""
    ra, rb = _ranks(a.flatten(1).double()), _ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


@dataclass
class Randomization:
    """Result of :func:`model_randomization`: after stage ``s`` the modules
    ``stages[:s+1]`` are randomized (top-down, cumulative); ``correlation[:, s]`` (B, S) is
    the Spearman correlation of that stage's map with the original map."""

    stages: list[str]
    correlation: torch.Tensor


def _parametrized(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of modules with parameters of their own, in reverse execution order."""
    mods = dict(model.named_modules())
    seen: list[str] = []
    for name, _, _ in execution_order(model, x):
        base = name.rsplit(":", 1)[0] if ":" in name else name
        own = base in mods and any(True for _ in mods[base].parameters(recurse=False))
        if own and base not in seen:
            seen.append(base)
    return seen[::-1]


def _randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Replace each parameter by Gaussian noise with the mean and std of its entries
    (std 1 where they are all equal, e.g. a fresh BatchNorm)."""
    with torch.no_grad():
        for p in module.parameters():
            mean = p.mean()
            std = p.std() if p.numel() > 1 else p.new_tensor(0.0)
            std = torch.where(std > 0, std, torch.ones_like(std))
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype, device=gen.device)
            p.copy_(mean + std * noise.to(p.device))


def model_randomization(
    model: nn.Module,
    method: type[Attribution] | Callable[[nn.Module], Attribution],
    inputs: torch.Tensor,
    target=None,
    *,
    stages: Sequence[str] | None = None,
    absolute: bool = True,
    seed: torch.Generator | int | None = 0,
    **options,
) -> Randomization:
    """Cascading model-parameter randomisation (Adebayo et al. 2018).

    On a deep copy of ``model``, stage by stage, the module ``stages[s]`` (default: every
    module with parameters, top-down from the output) gets random parameters
    (:func:`_randomize`, drawn from ``seed``, a generator or seed; ``generator=`` in
    ``options`` goes to the method), cumulatively; after each stage the map of
    ``method(copy)`` is compared with the original map by :func:`spearman` (of ``|R|``
    when ``absolute``, as in the paper's main figures). The target is fixed on the
    original model (``None`` → its predicted class). A container name (``"layer4"``)
    randomizes all its parameters. ``model`` is not modified.
    """
    x = inputs.detach()
    make = method
    tgt = Target(model, x, target)
    objective = tgt.all()
    original = make(model).attribute(x, objective, **options).detach()
    work = copy.deepcopy(model)
    names = list(stages) if stages is not None else _parametrized(work, x)
    mods = dict(work.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise KeyError(f"modules {missing} are not in the model")
    gen = make_generator(seed)
    explainer = make(work)
    corr = []
    for name in names:
        _randomize(mods[name], gen)
        r = explainer.attribute(x, objective, **options).detach()
        a, c = (original.abs(), r.abs()) if absolute else (original, r)
        corr.append(spearman(a, c))
    return Randomization(names, torch.stack(corr, 1).float())
