"""Non-negative matrix factorization, ``A ≈ S D`` with ``S, D ≥ 0``, by HALS coordinate
descent (Cichocki & Phan 2009): what :mod:`fvis.groups` factorizes a layer's activations
with.

>>> a = torch.rand(49, 16)                  # (positions, channels), non-negative
>>> s, d = nmf(a, 3)                        # (49, 3) and (3, 16); rows of d unit-norm
>>> bool((s @ d - a).norm() < a.norm())
True
"""

from __future__ import annotations

import torch

__all__ = ["nmf"]

EPS = 1e-12  # the floor HALS keeps every entry at (and the smallest divisor)


def nmf(
    a: torch.Tensor, k: int, *, iters: int = 200, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, D)`` with ``a ≈ S @ D``, all non-negative: ``a`` (P, C) ≥ 0, ``S`` (P, k),
    ``D`` (k, C), minimizing ``‖a − SD‖²`` by HALS (Cichocki & Phan 2009): each row of
    ``D`` in turn ``D_j ← max(ε, D_j + ((SᵀA)_j − (SᵀS)_j D) / (SᵀS)_jj)``, then each
    column of ``S`` likewise, from a seeded random start scaled to ``a``'s mean. Rows of
    ``D`` are rescaled to unit norm at the end (``S`` absorbs the scale)."""
    if (a < 0).any():
        raise ValueError(
            "NMF needs non-negative activations; choose a layer after a ReLU (or pass "
            "a.clamp(min=0) if the negative part does not matter)"
        )
    if not 1 <= k <= min(a.shape):
        raise ValueError(f"k must be between 1 and {min(a.shape)} for a {tuple(a.shape)} matrix")
    a = a.detach().double()
    g = torch.Generator().manual_seed(seed)
    scale = (a.mean() / k).sqrt().clamp_min(EPS)
    s = (torch.rand(a.shape[0], k, generator=g, dtype=a.dtype) * scale).to(a.device)
    d = (torch.rand(k, a.shape[1], generator=g, dtype=a.dtype) * scale).to(a.device)
    for _ in range(iters):
        sts, sta = s.T @ s, s.T @ a
        for j in range(k):
            d[j] = (d[j] + (sta[j] - sts[j] @ d) / sts[j, j].clamp_min(EPS)).clamp_min(EPS)
        ddt, adt = d @ d.T, a @ d.T
        for j in range(k):
            s[:, j] = (s[:, j] + (adt[:, j] - s @ ddt[:, j]) / ddt[j, j].clamp_min(EPS)).clamp_min(
                EPS
            )
    norm = d.norm(dim=1, keepdim=True).clamp_min(EPS)
    return s * norm.T, d / norm
