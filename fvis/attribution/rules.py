"""LRP rules: how one linear layer passes the relevance of its outputs to its inputs.

For a layer ``z_j = Σ_i a_i w_ij + b_j`` with output relevance ``R_j``, every rule here is

    R_i = Σ_g c_g Σ_t t(a)_i Σ_j f_t(w)_ij R_j / stab(z_gj),   z_gj = Σ_t Σ_i t(a)_i f_t(w)_ij

over groups ``g`` of terms ``t`` (an input transform ``t`` and a weight modifier ``f_t``),
computed for any conv/linear/average-pool call by re-running it with modified weights and
taking one vector-Jacobian product (as zennit's ``BasicHook``). ``stab(z) = z + ε·sign(z)``
with ``sign(0) = 1`` and ε the rule's ``epsilon`` (ε-rule) or ``stabilizer`` (default 1e-6,
absolute); with ε = 0 a zero denominator gives relevance 0. ``x⁺ = max(x, 0)``,
``x⁻ = min(x, 0)``; ``c_ij = a_i w_ij``.

* ``Epsilon(ε)``: ``R_i = Σ_j c_ij / (z_j + ε sign z_j) · R_j``, ``z`` with bias (ε = 0: LRP-0).
* ``Gamma(γ)``: ``c_ij + γ c_ij⁺`` (bias ``b + γb⁺``) for outputs with ``z_j > 0``,
  ``c_ij + γ c_ij⁻`` (bias ``b + γb⁻``) for the others, normalized per output.
* ``ZPlus``: ``R_i = Σ_j c_ij⁺ / Σ_i c_ij⁺ · R_j`` (``c⁺ = a⁺w⁺ + a⁻w⁻``; no bias).
* ``AlphaBeta(α, β)``: ``Σ_j [α c_ij⁺ / Σ_i c_ij⁺ − β c_ij⁻ / Σ_i c_ij⁻] · R_j``, ``α − β = 1``.
* ``WSquare``: ``R_i = Σ_j w_ij² / Σ_i w_ij² · R_j`` (independent of ``a``).
* ``Flat``: ``R_i = Σ_j 1 / Σ_i 1 · R_j`` over each receptive field.
* ``ZBox(l, h)``: ``R_i = Σ_j (a_i w_ij − l_i w_ij⁺ − h_i w_ij⁻) / Σ_i (…) · R_j``.

All but ε and γ ignore the bias and conserve relevance, ``Σ_i R_i = Σ_j R_j``, wherever
their denominators are non-zero (αβ only where both are). The zᴮ rule is for an input
layer with ``l ≤ a ≤ h``; its bounds default to the model's valid input range (see
:class:`fvis.attribution.lrp.LRP`). (αβ: Bach et al. 2015; z⁺, zᴮ, w²: Montavon et al.
2017; γ: Montavon et al. 2019; flat: Lapuschkin et al. 2019.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fvis.attribution.algebra import IDENTITY, NEG, POS, LinearCall

__all__ = [
    "Rule",
    "Epsilon",
    "Gamma",
    "ZPlus",
    "AlphaBeta",
    "WSquare",
    "Flat",
    "ZBox",
    "divide",
]

# a term: (transformed inputs, weight modifier, use the bias?)
Term = tuple[list[Tensor], Callable[[Tensor], Tensor], bool]


def divide(relevance: Tensor, z: Tensor, eps: float) -> Tensor:
    """``R / (z + ε·sign z)`` with ``sign 0 = 1``; for ``ε = 0``, ``R / z`` and 0 where z = 0."""
    if eps > 0:
        return relevance / (z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype))
    zero = z == 0
    return torch.where(zero, 0.0, relevance / torch.where(zero, 1.0, z).to(z.dtype))


def _pos(ts: Sequence[Tensor]) -> list[Tensor]:
    return [t.clamp(min=0) for t in ts]


def _neg(ts: Sequence[Tensor]) -> list[Tensor]:
    return [t.clamp(max=0) for t in ts]


def _ones(ts: Sequence[Tensor]) -> list[Tensor]:
    return [torch.ones_like(t) for t in ts]


class Rule:
    """Base class: ``groups`` defines the rule; ``relevance`` applies it (module docstring).
    ``stabilizer``: the ε of ``stab(z)`` (default 1e-6, absolute, as zennit)."""

    def __init__(self, *, stabilizer: float = 1e-6):
        self.stabilizer = float(stabilizer)

    def groups(self, call: LinearCall, inputs: Sequence[Tensor]) -> list[tuple[float, list[Term]]]:
        raise NotImplementedError

    def relevance(self, call: LinearCall, inputs: Sequence[Tensor], relevance: Tensor) -> list:
        """Relevance of each input (shaped like it) from the output relevance ``relevance``."""
        out = [torch.zeros_like(a) for a in inputs]
        with call.memo():
            for group in self.groups(call, inputs):
                self._apply(call, group, relevance, out)
        return out

    def _apply(self, call, group, relevance, out) -> None:
        coef, terms, *mask = group
        if mask:  # the group explains only the outputs where mask is true
            relevance = relevance * mask[0]
        with torch.enable_grad():
            leaves = [[t.detach().contiguous().requires_grad_(True) for t in ts]
                      for ts, _, _ in terms]  # fmt: skip
            z = 0
            for lv, (_, fn, bias) in zip(leaves, terms):
                z = z + call.forward(lv, fn, bias)
            s = divide(relevance, z.detach(), self.stabilizer)
            flat = [leaf for lv in leaves for leaf in lv]
            grads = iter(torch.autograd.grad(z, flat, s, allow_unused=True))
        for lv in leaves:
            for k, leaf in enumerate(lv):
                g = next(grads)
                if g is not None:
                    out[k] += coef * leaf.detach() * g

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not (k == "stabilizer" and v == 1e-6))  # fmt: skip
        return f"{type(self).__name__}({fields})"


class Epsilon(Rule):
    """ε-rule: ``R_i = Σ_j a_i w_ij / (z_j + ε·sign z_j) · R_j`` with ``z_j = Σ_i a_i w_ij + b_j``.
    ε = 0 is LRP-0 (equal to gradient × input on ReLU networks)."""

    def __init__(self, epsilon: float = 1e-6):
        super().__init__(stabilizer=epsilon)
        self.epsilon = float(epsilon)

    def groups(self, call, inputs):
        return [(1.0, [(list(inputs), IDENTITY, True)])]


class Gamma(Rule):
    """γ-rule (Montavon et al. 2019), generalized to inputs of both signs as zennit does:
    contributions ``c_ij = a_i w_ij + γ (a_i w_ij)⁺`` for outputs with ``z_j > 0`` and
    ``a_i w_ij + γ (a_i w_ij)⁻`` for ``z_j ≤ 0`` (bias likewise ``b + γ b^±``), and
    ``R_i = Σ_j c_ij / Σ_i c_ij · R_j``. For ``a ≥ 0`` and ``z > 0``: weights ``w + γ w⁺``.
    γ = 0 is LRP-0; γ → ∞ approaches z⁺."""

    def __init__(self, gamma: float = 0.25, *, stabilizer: float = 1e-6):
        super().__init__(stabilizer=stabilizer)
        self.gamma = float(gamma)

    def groups(self, call, inputs):
        g = self.gamma

        def up(w):
            return w + g * w.clamp(min=0)

        def down(w):
            return w + g * w.clamp(max=0)

        with torch.no_grad():
            positive = call.forward(list(inputs)) > 0
        pos, neg = _pos(inputs), _neg(inputs)
        return [
            (1.0, [(pos, up, True), (neg, down, False)], positive),
            (1.0, [(pos, down, True), (neg, up, False)], ~positive),
        ]


class ZPlus(Rule):
    """z⁺-rule: only positive contributions ``a_i⁺w_ij⁺ + a_i⁻w_ij⁻``, no bias
    (= α1β0; for ReLU inputs ``a ≥ 0`` it is ``a_i w_ij⁺ / Σ_i a_i w_ij⁺``)."""

    def groups(self, call, inputs):
        return [(1.0, [(_pos(inputs), POS, False), (_neg(inputs), NEG, False)])]


class AlphaBeta(Rule):
    """αβ-rule: positive contributions weighted α, negative ones β, ``α − β = 1``, no bias."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, *, stabilizer: float = 1e-6):
        super().__init__(stabilizer=stabilizer)
        if abs(alpha - beta - 1) > 1e-9:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 to conserve relevance; got "
                             f"alpha={alpha}, beta={beta}")  # fmt: skip
        self.alpha, self.beta = float(alpha), float(beta)

    def groups(self, call, inputs):
        pos, neg = _pos(inputs), _neg(inputs)
        return [
            (self.alpha, [(pos, POS, False), (neg, NEG, False)]),
            (-self.beta, [(pos, NEG, False), (neg, POS, False)]),
        ]


class WSquare(Rule):
    """w²-rule: ``R_i = Σ_j w_ij² / Σ_i w_ij² · R_j``, independent of the input (deep Taylor
    for an unbounded input domain)."""

    def groups(self, call, inputs):
        return [(1.0, [(_ones(inputs), torch.square, False)])]


class Flat(Rule):
    """Flat rule: each output spreads its relevance uniformly over its receptive field."""

    def groups(self, call, inputs):
        return [(1.0, [(_ones(inputs), torch.ones_like, False)])]


class ZBox(Rule):
    """zᴮ-rule (deep Taylor for a box ``l ≤ a ≤ h``, the input layer):
    ``R_i = Σ_j (a_i w_ij − l_i w_ij⁺ − h_i w_ij⁻) / Σ_i (…) · R_j``.

    ``low``/``high``: tensors or numbers broadcastable to the layer's input; ``None`` takes
    the bounds LRP supplies (the model's valid input range)."""

    def __init__(self, low=None, high=None, *, stabilizer: float = 1e-6):
        super().__init__(stabilizer=stabilizer)
        if (low is None) != (high is None):
            raise ValueError("give both low and high, or neither (model's valid input range)")
        self.low, self.high = low, high

    def bounds_for(self, call: LinearCall, a: Tensor) -> tuple[Tensor, Tensor]:
        if self.low is not None:
            lo, hi = self.low, self.high
        elif call.bounds is not None:
            lo, hi = call.bounds
        else:
            raise ValueError("ZBox has no bounds for this layer; pass ZBox(low=..., high=...)")
        lo = torch.as_tensor(lo, dtype=a.dtype, device=a.device).expand_as(a)
        hi = torch.as_tensor(hi, dtype=a.dtype, device=a.device).expand_as(a)
        return lo, hi

    def groups(self, call, inputs):
        (a,) = inputs
        lo, hi = self.bounds_for(call, a)
        return [(1.0, [
            ([a], IDENTITY, False),
            ([lo], lambda w: -w.clamp(min=0), False),
            ([hi], lambda w: -w.clamp(max=0), False),
        ])]  # fmt: skip
