"""The sanity check (Adebayo et al. 2018): cascading model-parameter randomisation.

:func:`model_randomization` randomizes the layers top-down on a copy of the model and
reports the Spearman rank correlation of each stage's map with the original map. A
method whose maps stay correlated when the weights are random is not explaining the
model. The model itself is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fvis.attribution.base import Attribution, Target
from fvis.attribution.baselines import generator as make_generator
from fvis.attribution.layer import execution_order

__all__ = ["Randomization", "model_randomization", "spearman"]


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
