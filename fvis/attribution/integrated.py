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

__all__ = [
    "RULES",
    "IntegratedGradients",
    "PathAttribution",
    "completeness_delta",
    "path_integral",
    "quadrature",
]

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


def path_integral(
    start: torch.Tensor,
    diff: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
    grad,
    size: int | None,
    *,
    fused: bool = True,
) -> torch.Tensor:
    """``Σ_k w_k ∇F(s_p + α_k d_p)`` for each of ``P`` straight paths from ``start``
    ``s`` (P, ...) along ``diff`` ``d`` (P, ...): the quadrature of IG's path integral.

    ``grad(points, path)`` returns ``∇F`` at ``points`` (R, ...); ``path`` (R,) is the
    path of each row. Row ``r`` is step ``r // P`` of path ``r % P``; ``size`` rows per
    call (:func:`~fvis.attribution.base.row_chunks`). Points are
    ``torch.addcmul(s, α, d)`` (one rounding where the CPU fuses it) and chunks of whole
    steps are summed by one ``tensordot``. ``fused=False``: points ``s + α·d`` (two
    roundings) and every chunk's rows added one by one (``index_add_``): the same sum,
    rounded otherwise, as :class:`~fvis.attribution.LayerIntegratedGradients` has always
    summed (it keeps its outputs bit for bit; fused they move by ≤ 5e-7 on fvis:mnist).
    """
    n, shape = start.shape[0], start.shape[1:]
    alphas, weights = alphas.to(start), weights.to(start)
    ones = (1,) * start.dim()
    total = torch.zeros_like(start)
    for sl in row_chunks(len(alphas) * n, size):
        r = torch.arange(sl.start, sl.stop)
        if fused and sl.start % n == 0 and sl.stop % n == 0:  # whole steps: no gathers
            steps = slice(sl.start // n, sl.stop // n)
            points = torch.addcmul(start, alphas[steps].view(-1, *ones), diff)
            g = grad(points.view(-1, *shape), r % n)
            w = weights[steps]
            total += torch.tensordot(w, g.reshape(len(w), -1), dims=1).view_as(total)
            continue
        path, step = r % n, r // n
        pair = path.to(start.device)
        a = alphas[step].view(-1, *ones[1:])
        s, d = start[pair], diff[pair]
        g = grad(torch.addcmul(s, a, d) if fused else s + a * d, path)
        total.index_add_(0, pair, weights[step].view_as(a) * g)
    return total


def completeness_delta(attr: torch.Tensor, ends: torch.Tensor, value, size: int | None):
    """``Σ attr − (F(x) − mean_j F(x′_j))`` per item, ``(B,)``, for ``attr`` (B, ...) and
    the path ends ``ends`` ((1 + N)·B, ...): the B ends ``x``, then the ``x′`` of each of
    N baselines. ``value(points, item)`` gives ``F`` (R,) at rows of ``ends`` whose items
    are ``item`` (R,); ``size`` rows per call, without gradients."""
    b = attr.shape[0]
    values = []
    with torch.no_grad():
        for sl in row_chunks(ends.shape[0], size):
            values.append(value(ends[sl], torch.arange(sl.start, sl.stop) % b))
    f = torch.cat(values).view(-1, b)
    return item_sums(attr) - (f[0] - f[1:].mean(0))


class PathAttribution(Attribution):
    """A method that integrates gradients along the paths from baselines (:func:`path_integral`).

    ``multiply_by_inputs=False`` (captum's keyword and meaning): return the path-averaged
    gradient ``Σ_k w_k ∇f(x′ + α_k (x − x′))`` itself, without the factor ``x − x′``
    (captum's "local" attribution); ``return_delta`` still checks completeness of
    ``(x − x′) ⊙`` that gradient.
    """

    def __init__(self, model, *, multiply_by_inputs: bool = True):
        super().__init__(model)
        self.multiply_by_inputs = bool(multiply_by_inputs)


class IntegratedGradients(PathAttribution):
    """Integrated Gradients: ``(x − x′) ⊙ Σ_k w_k ∇f(x′ + α_k (x − x′))``, averaged over
    the baselines. Output shape of the inputs; ``Σ`` over an item ≈ ``f(x) − mean f(x′)``.
    ``multiply_by_inputs``: :class:`PathAttribution`.

    >>> attr, delta = IntegratedGradients(model).attribute(
    ...     x, target=3, baselines="blur", steps=64, return_delta=True)
    """

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
        alphas, weights = quadrature(method, steps)
        b, shape = x.shape[0], x.shape[1:]
        size = default_rows(b) if internal_batch_size is None else internal_batch_size
        diff = x.unsqueeze(0) - base  # x − x′ per (baseline, item)
        total = path_integral(
            base.flatten(0, 1),
            diff.flatten(0, 1),
            alphas,
            weights,
            lambda points, path: gradients(self.model, points, tgt.rows(path % b))[0],
            size,
        ).view_as(base)
        contributions = (diff * total).mean(0)
        attr = contributions if self.multiply_by_inputs else total.mean(0)
        if not return_delta:
            return attr
        ends = torch.cat([x.unsqueeze(0), base]).view(-1, *shape)  # x, then every x′
        return attr, completeness_delta(
            contributions,
            ends,
            lambda points, item: scores(self.model, points, tgt.rows(item))[0],
            size,
        )
