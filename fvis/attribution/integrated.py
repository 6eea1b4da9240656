"""Integrated Gradients (Sundararajan et al. 2017) and the baselines of Sturmfels et al.
(Distill 2020).

``IG_i(x) = (x_i − x′_i) · ∫₀¹ ∂f/∂x_i(x′ + α (x − x′)) dα`` for a baseline ``x′``,
computed by a quadrature over ``steps`` points. Completeness: ``Σ_i IG_i = f(x) −
f(x′)`` up to the quadrature error, which ``return_delta=True`` reports.

Baselines are model inputs (normalized), built per channel from the valid range
``[lo_c, hi_c]`` that images in [0, 1] map to (``model.fvis_info.valid_range``):

* ``"zero"`` or ``"black"``: the black image, ``lo_c`` everywhere (0 without
  normalization; note: *not* the all-zero model input, which is the mean image).
* ``"blur"``: the input blurred by a Gaussian of ``sigma`` px (default: image side / 16).
* ``"uniform"`` (random): ``U(lo_c, hi_c)`` per element.
* ``"gaussian"`` (random): ``clip(x + N(0, (sigma · (hi_c − lo_c))²), lo_c, hi_c)``,
  ``sigma`` = 0.25.
* ``"max_distance"``: per element the valid value farthest from the input, ``hi_c`` where
  ``x < (lo_c + hi_c) / 2`` else ``lo_c`` (the valid image at the largest L1 distance).
* a number: that constant, in model-input units.
* a tensor broadcastable to the inputs; with one more leading dimension, several baselines.
* a callable ``fn(inputs, generator) -> tensor`` like the inputs (treated as random).

:func:`baseline` builds one with parameters (``baseline("blur", sigma=3)``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

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
from fvis.errors import check_finite_tensor, check_int
from fvis.models.info import ModelInfo
from fvis.transforms import gaussian_blur

__all__ = [
    "IntegratedGradients",
    "baseline",
    "generator",
    "make_baselines",
    "quadrature",
    "valid_range",
]

RANDOM_BASELINES = ("uniform", "gaussian")
METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def generator(seed: torch.Generator | int | None, device=None) -> torch.Generator:
    """A ``torch.Generator``: the one given, or a new CPU one seeded with ``seed``
    (an unseeded one for ``None``). Noise drawn on the CPU is reproducible on any device."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _rand(kind: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    draw = torch.randn if kind == "normal" else torch.rand
    t = draw(like.shape, generator=gen, device=gen.device, dtype=like.dtype)
    return t.to(like.device)


def baseline(name: str, **params) -> Callable:
    """A named baseline with parameters, as a callable ``fn(inputs, generator, info)``:
    ``baseline("blur", sigma=3.0)``, ``baseline("gaussian", sigma=0.1)``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(_BUILDERS)}")
    builder = _BUILDERS[name]

    def fn(x, gen, info):
        return builder(x, gen, info, **params)

    fn.random = name in RANDOM_BASELINES
    fn.__name__ = f"baseline_{name}"
    return fn


def valid_range(info: ModelInfo, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)`` of model inputs that images in [0, 1] map to, broadcastable
    to ``x``; ``(0, 1)`` for non-image inputs of a model without normalization."""
    if x.dim() == 4:
        return info.valid_range(x)
    if info.mean is None and info.std is None:
        return x.new_zeros(()), x.new_ones(())
    raise ValueError(
        f"inputs of shape {tuple(x.shape)} are not images (B, C, H, W), so the valid range of "
        "this normalized model is unknown; pass baselines as a number or a tensor"
    )


def _black(x, gen, info):
    lo, _ = valid_range(info, x)
    return lo.expand_as(x).clone()


def _blur(x, gen, info, sigma: float | None = None):
    # Default σ: 1/16 of the image side, 14 px at 224 px, 1.75 px at 28 px: strong enough
    # to remove edges, weak enough to keep the colour layout (Distill's "blurred" baseline).
    sigma = max(x.shape[-2:]) / 16 if sigma is None else sigma
    return gaussian_blur(x.detach(), sigma, border="replicate")


def _uniform(x, gen, info):
    lo, hi = valid_range(info, x)
    return lo + (hi - lo) * _rand("uniform", x, gen)


def _gaussian(x, gen, info, sigma: float = 0.25):
    # σ as a fraction of the valid range; 0.25 is mid-range of the Distill article's slider.
    lo, hi = valid_range(info, x)
    noisy = x.detach() + sigma * (hi - lo) * _rand("normal", x, gen)
    return torch.maximum(torch.minimum(noisy, hi), lo)


def _max_distance(x, gen, info):
    lo, hi = valid_range(info, x)
    return torch.where(x.detach() < (lo + hi) / 2, hi, lo)


_BUILDERS = {
    "zero": _black,
    "black": _black,
    "blur": _blur,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "max_distance": _max_distance,
}


def make_baselines(
    spec, inputs: torch.Tensor, info: ModelInfo, gen: torch.Generator | None = None, n: int = 1
) -> torch.Tensor:
    """Baselines ``(N, *inputs.shape)`` for ``spec`` (see the module docstring): ``n``
    draws of a random baseline, one of a fixed one (or those of a stacked tensor)."""
    check_int("n_baselines", n)
    return check_finite_tensor("baselines", _baselines(spec, inputs, info, gen, n))


def _baselines(spec, inputs, info, gen, n) -> torch.Tensor:
    x = inputs.detach()
    if isinstance(spec, str):
        spec = baseline(spec)
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return torch.full_like(x, float(spec)).unsqueeze(0)
    if isinstance(spec, torch.Tensor):
        b = spec.detach().to(device=x.device, dtype=x.dtype)
        if b.dim() == x.dim() + 1:
            return b.expand(-1, *x.shape).clone()
        try:
            return b.expand_as(x).clone().unsqueeze(0)
        except RuntimeError:
            raise ValueError(
                f"baseline of shape {tuple(b.shape)} does not broadcast to inputs of shape "
                f"{tuple(x.shape)}"
            ) from None
    if callable(spec):
        gen = gen if gen is not None else generator(None)
        random = getattr(spec, "random", True)
        draws = [_call(spec, x, gen, info) for _ in range(n if random else 1)]
        for d in draws:
            if d.shape != x.shape:
                raise ValueError(
                    f"baseline function returned shape {tuple(d.shape)}, "
                    f"inputs are {tuple(x.shape)}"
                )
        return torch.stack([d.detach().to(x) for d in draws])
    raise TypeError(
        "baselines must be a name (" + ", ".join(_BUILDERS) + "), a number, a tensor or a "
        f"callable, not {type(spec).__name__}"
    )


def _call(fn, x, gen, info):
    try:
        return fn(x, gen, info)
    except TypeError:  # a user function fn(inputs, generator)
        return fn(x, gen)


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
        raise ValueError(f"unknown integration method {method!r}; known: {', '.join(METHODS)}")
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
        gen = _gen(generator)
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


def _gen(seed) -> torch.Generator:
    return generator(seed)
