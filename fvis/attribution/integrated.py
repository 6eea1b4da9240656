"""Integrated Gradients (Sundararajan et al. 2017).

``IG_i(x) = (x_i − x′_i) · ∫₀¹ ∂f/∂x_i(x′ + α (x − x′)) dα`` for a baseline ``x′``
(:mod:`fvis.attribution.baselines`: black, blur, uniform, gaussian, max-distance, …),
computed by a quadrature over ``steps`` points (:func:`quadrature`, :data:`RULES`).
Completeness: ``Σ_i IG_i = f(x) − f(x′)`` up to the quadrature error, which
``return_delta=True`` reports.
"""

from __future__ import annotations

import numpy as np
import torch

from fvis.attribution.base import (
    Attribution,
    Target,
    check_inputs,
    default_rows,
    gradients,
    item_sums,
    row_chunks,
    scores,
)
from fvis.attribution.baselines import generator as make_generator
from fvis.attribution.baselines import make_baselines
from fvis.errors import check_int

__all__ = ["RULES", "IntegratedGradients", "quadrature"]

# quadrature rules (captum's ``method`` names)
RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``α_k`` in [0, 1] and weights ``w_k`` (summing to 1) of a rule with
    ``steps`` points: ``riemann_left`` ``k/m``, k < m; ``riemann_right`` ``k/m``, k ≥ 1;
    ``riemann_middle`` ``(k + ½)/m``; ``riemann_trapezoid`` ``k/(m−1)`` with half weights
    at the ends; ``gausslegendre`` the Gauss–Legendre nodes mapped to [0, 1]."""
    m = check_int("steps", steps)
    if m < 1 or (method == "riemann_trapezoid" and m < 2):
        raise ValueError(f"{method} needs steps ≥ {2 if method == 'riemann_trapezoid' else 1}")
    k = torch.arange(m, dtype=torch.float64)
    w = torch.full((m,), 1.0 / m, dtype=torch.float64)
    if method == "riemann_left":
        a = k / m
    elif method == "riemann_right":
        a = (k + 1) / m
    elif method == "riemann_middle":
        a = (k + 0.5) / m
    elif method == "riemann_trapezoid":
        a = k / (m - 1)
        w = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (m - 1)
    elif method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(m)
        a = torch.from_numpy((nodes + 1) / 2)
        w = torch.from_numpy(weights / 2)
    else:
        raise ValueError(f"unknown integration method {method!r}; known: {', '.join(RULES)}")
    return a, w


class IntegratedGradients(Attribution):
    """Integrated Gradients: ``(x − x′) ⊙ Σ_k w_k ∇f(x′ + α_k (x − x′))``, averaged over
    the baselines. Output shape of the inputs; ``Σ`` over an item ≈ ``f(x) − mean f(x′)``.

    ``multiply_by_inputs=False`` (captum's keyword and meaning): return the path-averaged
    gradient ``Σ_k w_k ∇f(x′ + α_k (x − x′))`` itself, without the factor ``x − x′``
    (captum's "local" attribution); ``return_delta`` still checks completeness of
    ``(x − x′) ⊙`` that gradient.

    >>> attr, delta = IntegratedGradients(model).attribute(
    ...     x, target=3, baselines="blur", steps=64, return_delta=True)
    """

    def __init__(self, model, *, multiply_by_inputs: bool = True):
        super().__init__(model)
        self.multiply_by_inputs = bool(multiply_by_inputs)

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        baselines="black",
        steps: int = 50,
        method: str = "gausslegendre",
        n_baselines: int = 1,
        internal_batch_size: int | None = None,
        return_delta: bool = False,
        generator: torch.Generator | int | None = None,
    ):
        """Integrated Gradients of ``inputs`` (B, ...).

        ``baselines``: see the module docstring; ``n_baselines`` draws of a random one are
        averaged. ``steps`` quadrature points of ``method`` (:func:`quadrature`).
        ``internal_batch_size``: rows (interpolated inputs) per forward pass, default
        ``default_rows(B)``; results do not depend on it. ``generator``: a
        ``torch.Generator`` or seed for random baselines. ``return_delta``: also return
        the convergence delta ``Σ_i IG_i − (f(x) − mean_j f(x′_j))`` per item, ``(B,)``.
        """
        gen = make_generator(generator)
        x = check_inputs(self.model, inputs).detach()
        tgt = Target(self.model, x, target)
        base = make_baselines(baselines, x, self.info, gen, n_baselines)  # (N, B, ...)
        alphas, weights = (t.to(x) for t in quadrature(method, steps))
        n_base, b = base.shape[0], x.shape[0]
        size = default_rows(b) if internal_batch_size is None else internal_batch_size
        nb, shape = n_base * b, x.shape[1:]
        total = torch.zeros_like(base)  # Σ_k w_k ∇f at the points of each (baseline, item)
        flat_total, flat_base = total.view(nb, *shape), base.view(nb, *shape)
        diff = (x.unsqueeze(0) - base).view(nb, *shape)  # x − x′ per (baseline, item)
        ones = (1,) * x.dim()
        rows = len(alphas) * nb  # row r: step r // (N·B), baseline (r // B) % N
        for sl in row_chunks(rows, size):
            r = torch.arange(sl.start, sl.stop)
            if sl.start % nb == 0 and sl.stop % nb == 0:  # whole steps: no gathers
                steps_ = slice(sl.start // nb, sl.stop // nb)
                a = alphas[steps_].view(-1, *ones)
                points = torch.addcmul(flat_base, a, diff).view(-1, *shape)  # x′ + α(x − x′)
                g, _, _ = gradients(self.model, points, tgt.rows(r % b))
                w = weights[steps_]
                flat_total += torch.tensordot(w, g.reshape(len(w), -1), dims=1).view_as(flat_total)
                continue
            item, pair, step = r % b, (r % nb).to(x.device), (r // nb).to(x.device)
            a = alphas[step].view(-1, *ones[1:])
            points = torch.addcmul(flat_base[pair], a, diff[pair])
            g, _, _ = gradients(self.model, points, tgt.rows(item))
            flat_total.index_add_(0, pair, weights[step].view_as(a) * g)
        contributions = (diff.view_as(base) * total).mean(0)
        attr = contributions if self.multiply_by_inputs else total.mean(0)
        if not return_delta:
            return attr
        return attr, self._delta(contributions, x, base, tgt, size)

    def _delta(self, attr, x, base, tgt, size) -> torch.Tensor:
        """``Σ attr − (f(x) − mean_j f(x′_j))`` per item."""
        n_base, b = base.shape[0], x.shape[0]
        points = torch.cat([x.unsqueeze(0), base]).view(-1, *x.shape[1:])
        values = []
        with torch.no_grad():
            for sl in row_chunks(points.shape[0], size):
                item = torch.arange(sl.start, sl.stop) % b
                values.append(scores(self.model, points[sl], tgt.rows(item))[0])
        f = torch.cat(values).view(n_base + 1, b)
        return item_sums(attr) - (f[0] - f[1:].mean(0))
