"""The rule algebra: linear operations recomputed with modified weights, and the
positive/negative split.

The hook layer's interceptor (:mod:`fvis.hooks.intercept`) hands every linear operation
of an attributed forward pass to the method's policy as a :class:`LinearCall`
(``z = Σ_k op_k(a_k) + b``): a convolution or ``F.linear`` (:class:`WeightedCall`), an
average pool (:class:`PoolCall`), a sum of activations (:class:`SumCall`) or a product
with a constant factor (:class:`ProductCall`); LRP describes a layer norm with its scale
held constant as one too (:class:`NormCall`). Rules
recompute it with a weight modifier (:data:`POS` ``w⁺``, :data:`NEG` ``w⁻``,
:data:`IDENTITY`) and split it into positive and negative parts (DeepLIFT's
RevealCancel). :class:`Policy` is the base of the policies that use these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fvis import hooks

__all__ = [
    "IDENTITY",
    "NEG",
    "POS",
    "BilinearRule",
    "LinearCall",
    "NormCall",
    "Policy",
    "PoolCall",
    "ProductCall",
    "SumCall",
    "WeightedCall",
    "bilinear_vjp",
    "local_derivative",
]


def IDENTITY(w: Tensor) -> Tensor:  # noqa: N802 - constant-like weight modifiers
    """Weight modifier: ``w``."""
    return w


def POS(w: Tensor) -> Tensor:  # noqa: N802
    """Weight modifier: ``w⁺ = max(w, 0)``."""
    return w.clamp(min=0)


def NEG(w: Tensor) -> Tensor:  # noqa: N802
    """Weight modifier: ``w⁻ = min(w, 0)``."""
    return w.clamp(max=0)


class LinearCall:
    """One intercepted linear operation ``z = Σ_k op_k(a_k) + b`` of activations ``a_k``.

    ``forward(inputs, fn, bias)`` recomputes it with every weight replaced by ``fn(w)``
    (the bias by ``fn(b)`` when ``bias`` is true, else dropped); ``part(k, v, fn)`` is the
    contribution of input ``k`` alone, ``op_k(v)`` with weights ``fn(w)`` and no bias.
    ``kind`` is ``"conv"``, ``"linear"``, ``"pool"``, ``"sum"``, ``"product"`` or
    ``"norm"``. ``bounds`` is set by a
    policy that knows the value range of the input (see :class:`fvis.attribution.rules.ZBox`).
    """

    kind = ""
    bounds: tuple[Tensor, Tensor] | None = None
    _memo: dict | None = None

    @contextlib.contextmanager
    def memo(self) -> Iterator[None]:
        """Within the block, each modified weight ``fn(w)`` is computed once (a VGG
        classifier layer holds 10⁸ weights); dropped on exit."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def forward(self, inputs: Sequence[Tensor], fn=IDENTITY, bias: bool = True) -> Tensor:
        raise NotImplementedError

    def part(self, k: int, v: Tensor, fn=IDENTITY) -> Tensor:
        raise NotImplementedError

    def split(self, deltas: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """DeepLIFT's positive and negative parts of ``Δz = Σ_i w_i Δa_i`` (Shrikumar et al.
        2017, eq. 6-7): ``Δz⁺ = Σ_i 1{w_i Δa_i > 0} w_i Δa_i``, ``Δz⁻`` likewise, computed as
        ``W⁺Δa⁺ + W⁻Δa⁻`` and ``W⁻Δa⁺ + W⁺Δa⁻`` (with ``W⁻ = W − W⁺``: one clamp per call)."""
        pos = neg = 0
        with self.memo():
            for k, d in enumerate(deltas):
                dp, dn = d.clamp(min=0), d.clamp(max=0)
                pp, pn = self.part(k, dp, POS), self.part(k, dn, POS)
                ip, in_ = self.part(k, dp, IDENTITY), self.part(k, dn, IDENTITY)
                pos = pos + pp + (in_ - pn)
                neg = neg + (ip - pp) + pn
        return pos, neg

    def split_backward(self, deltas: Sequence[Tensor], gpos: Tensor, gneg: Tensor) -> list:
        """Multipliers of the inputs from those of ``Δz⁺`` and ``Δz⁻`` (eq. 12-13): input
        ``i`` gets ``w_i·g⁺`` where ``w_i Δa_i > 0``, ``w_i·g⁻`` where ``w_i Δa_i < 0``, and
        ``w_i (g⁺ + g⁻)/2`` where ``Δa_i = 0``."""
        out = []
        for k, d in enumerate(deltas):
            with torch.enable_grad(), self.memo():
                leaf = torch.zeros_like(d).requires_grad_(True)
                zp, zi = self.part(k, leaf, POS), self.part(k, leaf, IDENTITY)
                vp_pos, vp_neg, vi_pos, vi_neg = (
                    torch.zeros_like(leaf) if r is None else r
                    for r in (
                        *torch.autograd.grad(zp, leaf, gpos, retain_graph=True, allow_unused=True),
                        *torch.autograd.grad(zp, leaf, gneg, allow_unused=True),
                        *torch.autograd.grad(zi, leaf, gpos, retain_graph=True, allow_unused=True),
                        *torch.autograd.grad(zi, leaf, gneg, allow_unused=True),
                    )
                )
            up = vp_pos + (vi_neg - vp_neg)  # W⁺ᵀg⁺ + W⁻ᵀg⁻
            down = (vi_pos - vp_pos) + vp_neg  # W⁻ᵀg⁺ + W⁺ᵀg⁻
            zero = 0.5 * (vi_pos + vi_neg)
            out.append(torch.where(d > 0, up, torch.where(d < 0, down, zero)))
        return out


class WeightedCall(LinearCall):
    """``func(x, weight, bias, *args, **kwargs)``: a convolution or ``F.linear``."""

    def __init__(self, func, weight: Tensor, bias: Tensor | None, args: tuple, kwargs: dict):
        self.func, self.weight, self.bias, self.args, self.kwargs = func, weight, bias, args, kwargs
        self.kind = "linear" if func is F.linear else "conv"

    def _mod(self, fn, t: Tensor) -> Tensor:
        if fn is IDENTITY or self._memo is None:
            return fn(t)
        key = (fn, id(t))
        if key not in self._memo:
            self._memo[key] = fn(t)
        return self._memo[key]

    def forward(self, inputs, fn=IDENTITY, bias=True):
        b = self._mod(fn, self.bias) if (bias and self.bias is not None) else None
        return self.func(inputs[0], self._mod(fn, self.weight), b, *self.args, **self.kwargs)

    def part(self, k, v, fn=IDENTITY):
        return self.func(v, self._mod(fn, self.weight), None, *self.args, **self.kwargs)


class PoolCall(LinearCall):
    """``func(x, *args, **kwargs)``: an average pool, a linear map with implicit positive
    weights ``w``; a weight modifier scales it by ``fn(1)`` (so ``NEG`` gives 0)."""

    kind = "pool"

    def __init__(self, func, args: tuple, kwargs: dict):
        self.func, self.args, self.kwargs = func, args, kwargs

    def _scale(self, fn, like: Tensor) -> Tensor:
        return fn(torch.ones((), dtype=like.dtype, device=like.device))

    def forward(self, inputs, fn=IDENTITY, bias=True):
        return self._scale(fn, inputs[0]) * self.func(inputs[0], *self.args, **self.kwargs)

    def part(self, k, v, fn=IDENTITY):
        return self.forward([v], fn)


class SumCall(LinearCall):
    """``Σ_k c_k a_k``: an addition or subtraction of activations (ResNet's
    ``out += identity``, MobileNet's ``x + conv(x)``), broadcasting as torch does."""

    kind = "sum"

    def __init__(self, coeffs: Sequence[float], shape: torch.Size):
        self.coeffs, self.shape = tuple(coeffs), shape  # shape: output without batch

    def forward(self, inputs, fn=IDENTITY, bias=True):
        out = 0
        for c, a in zip(self.coeffs, inputs):
            out = out + fn(torch.tensor(float(c), dtype=a.dtype, device=a.device)) * a
        return out

    def part(self, k, v, fn=IDENTITY):
        c = fn(torch.tensor(float(self.coeffs[k]), dtype=v.dtype, device=v.device))
        return torch.broadcast_to(c * v, (v.shape[0], *self.shape))


class ProductCall(LinearCall):
    """``f(C, x)`` (``first``) or ``f(x, C)``: a product (``@``, ``*``) of an activation ``x``
    with a constant factor ``C`` (the weights, modified by ``fn``), e.g. attention weights
    held constant times the values, ``A v`` (Ali et al. 2022's AH-rule)."""

    kind = "product"

    def __init__(self, f: Callable, const: Tensor, first: bool):
        self.f, self.const, self.first = f, const.detach(), first

    def forward(self, inputs, fn=IDENTITY, bias=True):
        return self.part(0, inputs[0], fn)

    def part(self, k, v, fn=IDENTITY):
        c = fn(self.const)
        return self.f(c, v) if self.first else self.f(v, c)


class NormCall(LinearCall):
    """A layer norm with its scale held at the value of the actual input (Ali et al. 2022's
    LN-rule): ``y = (x − μ(x)) / σ · γ + β`` over the trailing ``normalized_shape``
    dimensions, ``σ = √(Var x + eps)`` computed once from ``x`` and held constant, so ``y``
    is linear in ``x`` (the centering ``x − μ(x)`` is). The map has no explicit weight to
    modify: only ``fn = IDENTITY`` (ε-type rules) is defined."""

    kind = "norm"

    def __init__(self, norm: hooks.LayerNorm, x: Tensor):
        self.norm = norm
        self.dims = tuple(range(-len(norm.normalized_shape), 0))
        var = x.detach().var(self.dims, unbiased=False, keepdim=True)
        self.sigma = torch.sqrt(var + norm.eps)

    def forward(self, inputs, fn=IDENTITY, bias=True):
        if fn is not IDENTITY:
            raise hooks.UnsupportedOperation(
                "LRP's LayerNorm rule (Ali et al. 2022) is the ε-rule of the layer with its "
                "scale held constant; it has no weights to modify for this rule. Give layer "
                "norms an Epsilon rule: Composite(..., norm=Epsilon(...))"
            )
        x = inputs[0]
        y = (x - x.mean(self.dims, keepdim=True)) / self.sigma
        if self.norm.weight is not None:
            y = y * self.norm.weight
        if bias and self.norm.bias is not None:
            y = y + self.norm.bias
        return y

    def part(self, k, v, fn=IDENTITY):
        return self.forward([v], fn, bias=False)


class Policy(hooks.Policy):
    """A policy whose :meth:`linear` receives the :class:`LinearCall` classes above."""

    calls = hooks.LinearCalls(weighted=WeightedCall, pool=PoolCall, sum=SumCall,
                              product=ProductCall)  # fmt: skip


def local_derivative(f: Callable, z: Tensor) -> Tensor:
    """``f'(z)`` of an elementwise function, by autograd."""
    with torch.enable_grad():
        t = z.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(f(t).sum(), t)
    return d


class BilinearRule(torch.autograd.Function):
    """The forward of a rule for a bilinear ``y = f(a, b)`` (``a * b``, ``a @ b``): keeps
    ``a``, ``b``, ``f`` and one setting of the rule (``ctx.setting``); a subclass defines
    ``backward`` (DeepLIFT's product rule, AttnLRP's uniform rule)."""

    @staticmethod
    def forward(ctx, a, b, f, setting):
        ctx.f, ctx.setting = f, setting
        ctx.save_for_backward(a, b)
        return f(a, b)


def bilinear_vjp(f: Callable, a: Tensor, b: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """``((∂f/∂a)ᵀ g, (∂f/∂b)ᵀ g)`` at ``(a, b)`` for a bilinear ``f`` (``*``, ``@``,
    ``einsum``): the first depends on ``b`` only, the second on ``a`` only."""
    with torch.enable_grad():
        la, lb = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
        return torch.autograd.grad(f(la, lb), (la, lb), g)
