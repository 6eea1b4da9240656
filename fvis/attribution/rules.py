"""LRP rules: how one linear layer passes the relevance of its outputs to its inputs.

For a layer ``z_j = Σ_i a_i w_ij + b_j`` with output relevance ``R_j``, every rule here is

    R_i = Σ_g c_g Σ_t t(a)_i Σ_j f_t(w)_ij R_j / stab(z_gj),
    z_gj = Σ_t (Σ_i t(a)_i f_t(w)_ij + [bias] f_t(b)_j)

over groups ``g`` of terms ``t`` (an input transform ``t`` and a weight modifier ``f_t``,
applied to the bias too where the rule uses it), computed for any conv/linear/average-pool
call by re-running it with modified weights and taking one vector-Jacobian product (as
zennit's ``BasicHook``). ``stab(z) = z + ε·sign(z)`` with ``sign(0) = 1`` and ε the rule's
``epsilon`` (ε-rule) or ``stabilizer`` (default 1e-6, absolute); with ε = 0 a zero
denominator gives relevance 0. ``x⁺ = max(x, 0)``, ``x⁻ = min(x, 0)``; ``c_ij = a_i w_ij``.

==================  =======================================================  ============
rule                R_i = Σ_j (…) R_j                                        bias default
==================  =======================================================  ============
``Epsilon(ε)``      ``c_ij / (z_j + ε sign z_j)``, ``z = Σ_i c_ij + b_j``    b (yes)
``Gamma(γ)``        ``c_ij + γ c_ij⁺`` over ``Σ_i (…) + b_j + γ b_j⁺`` for   b + γb^± on
                    ``z_j > 0``; ``c_ij + γ c_ij⁻`` (``b + γ b⁻``) else       the a⁺ term
``ZPlus``           ``c_ij⁺ / (Σ_i c_ij⁺ + b_j⁺)``, ``c⁺ = a⁺w⁺ + a⁻w⁻``       b⁺ (yes)
``AlphaBeta(α,β)``  ``α c⁺_ij / (Σ_i c⁺_ij + b⁺_j) − β c⁻_ij / (Σ_i c⁻_ij +      b⁺, b⁻ (yes)
                    b⁻_j)``, ``α − β = 1``, ``β ≥ 0``
``WSquare``         ``w_ij² / (Σ_i w_ij² + b_j²)``                            b² (yes)
``Flat``            ``1 / Σ_i 1`` over each receptive field                   no
``ZBox(l, h)``      ``(a_i w_ij − l_i w⁺_ij − h_i w⁻_ij) / Σ_i (…)``          cancels
==================  =======================================================  ============

The bias defaults are zennit's (its ``zero_params=None``; Flat: ``["bias"]``), so fvis's
composites give zennit's maps. ``bias=False`` drops the bias everywhere (zennit's
``zero_params=["bias"]``); ``bias="redistribute"`` uses it in the denominators and shares
the relevance it takes, ``f_t(b)_j / stab(z_gj) · R_j``, equally among the inputs of output
``j``'s receptive field (Bach et al. 2015: ``z_ij = a_i w_ij + b_j / n_j``). ZBox's bias
terms ``b − b⁺ − b⁻`` cancel, so it is bias-free whatever the choice.

The αβ form with bias is that of the Understanding-NN notebooks (seed 001; Bach et al.
2015 eq. 60): for ``a ≥ 0``, ``R_i = Σ_j [α a_i w⁺_ij / (Σ_i a_i w⁺_ij + b⁺_j) +
(1 − α) a_i w⁻_ij / (Σ_i a_i w⁻_ij + b⁻_j)] R_j``.

Conservation ``Σ_i R_i = Σ_j R_j`` holds wherever the denominators are non-zero for the
bias-free forms (``bias=False``, Flat, ZBox) and for ``bias="redistribute"``; a bias in a
denominator otherwise absorbs ``b_j / z_j`` of each ``R_j``. The zᴮ rule is for an input
layer with ``l ≤ a ≤ h``; its bounds default to the model's valid input range (see
:class:`fvis.attribution.lrp.LRP`). :meth:`Rule.check_domain` states where deep Taylor
derives a rule (z⁺: ``a ≥ 0``; zᴮ: ``l ≤ a ≤ h``). (αβ: Bach et al. 2015; z⁺, zᴮ, w²:
Montavon et al. 2017; γ: Montavon et al. 2019; flat: Lapuschkin et al. 2019.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fvis.attribution.algebra import IDENTITY, NEG, POS, LinearCall
from fvis.hooks import UnsupportedOperation

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
BIAS = (True, False, "redistribute")


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
    ``stabilizer``: the ε of ``stab(z)`` (default 1e-6, absolute, as zennit). ``bias``:
    ``True``, ``False`` or ``"redistribute"`` (default: the rule's ``default_bias``,
    zennit's choice)."""

    default_bias: bool = True

    def __init__(self, *, stabilizer: float = 1e-6, bias: bool | str | None = None):
        self.stabilizer = float(stabilizer)
        bias = self.default_bias if bias is None else bias
        if not any(bias is c or (isinstance(bias, str) and bias == c) for c in BIAS):
            raise ValueError(f"bias must be True, False or 'redistribute', not {bias!r}")
        self.bias = bias

    @property
    def uses_bias(self) -> bool:
        return self.bias is not False

    def groups(self, call: LinearCall, inputs: Sequence[Tensor]) -> list[tuple[float, list[Term]]]:
        raise NotImplementedError

    def check_domain(self, call: LinearCall, inputs: Sequence[Tensor], where: str) -> None:
        """Raise if ``inputs`` lie outside the domain deep Taylor derives the rule for (only
        :class:`~fvis.attribution.taylor.DeepTaylor` asks; LRP uses the generalized rules)."""

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
        if self.bias == "redistribute" and getattr(call, "bias", None) is not None:
            for ts, fn, bias in terms:
                if bias:
                    self._share_bias(call, ts, fn, s, coef, out)

    @staticmethod
    def _share_bias(call, ts, fn, s, coef, out) -> None:
        """Adds ``coef · Σ_j [i → j] f(b)_j / n_j · s_j`` to each input ``i``, ``n_j`` the
        size of output ``j``'s receptive field."""
        with torch.enable_grad():
            ones = [torch.ones_like(t).requires_grad_(True) for t in ts]
            count = call.forward(ones, torch.ones_like, False)  # n_j
            with torch.no_grad():
                b = call.forward([torch.zeros_like(t) for t in ts], fn, True)  # f(b)_j
                share = divide(b * s, count.detach(), 0.0)
            grads = torch.autograd.grad(count, ones, share, allow_unused=True)
        for k, g in enumerate(grads):
            if g is not None:
                out[k] += coef * g

    def __repr__(self) -> str:
        default = {"stabilizer": 1e-6, "bias": self.default_bias}
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if k not in default or v != default[k])  # fmt: skip
        return f"{type(self).__name__}({fields})"


class Epsilon(Rule):
    """ε-rule: ``R_i = Σ_j a_i w_ij / (z_j + ε·sign z_j) · R_j`` with ``z_j = Σ_i a_i w_ij + b_j``.
    ε = 0 is LRP-0 (equal to gradient × input on ReLU networks)."""

    def __init__(self, epsilon: float = 1e-6, *, bias: bool | str | None = None):
        super().__init__(stabilizer=epsilon, bias=bias)
        self.epsilon = float(epsilon)

    def groups(self, call, inputs):
        return [(1.0, [(list(inputs), IDENTITY, self.uses_bias)])]

    def __repr__(self) -> str:
        extra = "" if self.bias is self.default_bias else f", bias={self.bias!r}"
        return f"Epsilon(epsilon={self.epsilon!r}{extra})"


class Gamma(Rule):
    """γ-rule (Montavon et al. 2019), generalized to inputs of both signs as zennit does:
    contributions ``c_ij = a_i w_ij + γ (a_i w_ij)⁺`` for outputs with ``z_j > 0`` and
    ``a_i w_ij + γ (a_i w_ij)⁻`` for ``z_j ≤ 0`` (bias likewise ``b + γ b^±``, with the
    ``a⁺`` term), and ``R_i = Σ_j c_ij / Σ_i c_ij · R_j``. For ``a ≥ 0`` and ``z > 0``:
    weights ``w + γ w⁺``. γ = 0 is LRP-0; γ → ∞ approaches z⁺."""

    def __init__(self, gamma: float = 0.25, *, stabilizer: float = 1e-6,
                 bias: bool | str | None = None):  # fmt: skip
        super().__init__(stabilizer=stabilizer, bias=bias)
        self.gamma = float(gamma)

    def groups(self, call, inputs):
        g, b = self.gamma, self.uses_bias

        def up(w):
            return w + g * w.clamp(min=0)

        def down(w):
            return w + g * w.clamp(max=0)

        with torch.no_grad():
            positive = call.forward(list(inputs)) > 0
        pos, neg = _pos(inputs), _neg(inputs)
        return [
            (1.0, [(pos, up, b), (neg, down, False)], positive),
            (1.0, [(pos, down, b), (neg, up, False)], ~positive),
        ]


class ZPlus(Rule):
    """z⁺-rule: only positive contributions ``a_i⁺w_ij⁺ + a_i⁻w_ij⁻`` (and the bias ``b⁺``
    unless ``bias=False``) (= α1β0; for ReLU inputs ``a ≥ 0`` and ``bias=False`` it is deep
    Taylor's ``a_i w_ij⁺ / Σ_i a_i w_ij⁺``, derived for ``a ≥ 0``)."""

    def groups(self, call, inputs):
        return [(1.0, [(_pos(inputs), POS, self.uses_bias), (_neg(inputs), NEG, False)])]

    def check_domain(self, call, inputs, where):
        low = min(float(t.detach().min()) for t in inputs)
        if low < 0:
            raise UnsupportedOperation(
                f"deep Taylor's z⁺ rule is derived for non-negative inputs (ReLU activations), "
                f"but the input of {where} reaches {low:.4g}. Use LRP (its z⁺ takes both signs) "
                "or a model whose conv/linear layers take ReLU outputs"
            )


class AlphaBeta(Rule):
    """αβ-rule: positive contributions weighted α, negative ones β, ``α − β = 1``, ``β ≥ 0``;
    the bias parts ``b⁺``/``b⁻`` join their groups unless ``bias=False`` (module docstring)."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, *, stabilizer: float = 1e-6,
                 bias: bool | str | None = None):  # fmt: skip
        super().__init__(stabilizer=stabilizer, bias=bias)
        if abs(alpha - beta - 1) > 1e-9:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 to conserve relevance; got "
                             f"alpha={alpha}, beta={beta}")  # fmt: skip
        if beta < 0:
            raise ValueError(f"AlphaBeta needs beta ≥ 0 (and so alpha ≥ 1): it weights negative "
                             f"contributions by -beta; got alpha={alpha}, beta={beta}")  # fmt: skip
        self.alpha, self.beta = float(alpha), float(beta)

    def groups(self, call, inputs):
        pos, neg, b = _pos(inputs), _neg(inputs), self.uses_bias
        return [
            (self.alpha, [(pos, POS, b), (neg, NEG, False)]),
            (-self.beta, [(pos, NEG, b), (neg, POS, False)]),
        ]


class WSquare(Rule):
    """w²-rule: ``R_i = Σ_j w_ij² / (Σ_i w_ij² + b_j²) · R_j``, independent of the input
    (deep Taylor for an unbounded input domain, there without bias)."""

    def groups(self, call, inputs):
        return [(1.0, [(_ones(inputs), torch.square, self.uses_bias)])]


class Flat(Rule):
    """Flat rule: each output spreads its relevance uniformly over its receptive field."""

    default_bias = False

    def groups(self, call, inputs):
        return [(1.0, [(_ones(inputs), torch.ones_like, self.uses_bias)])]


class ZBox(Rule):
    """zᴮ-rule (deep Taylor for a box ``l ≤ a ≤ h``, the input layer):
    ``R_i = Σ_j (a_i w_ij − l_i w_ij⁺ − h_i w_ij⁻) / Σ_i (…) · R_j`` (the bias terms
    ``b − b⁺ − b⁻`` cancel).

    ``low``/``high``: tensors or numbers broadcastable to the layer's input; ``None`` takes
    the bounds LRP supplies (the model's valid input range)."""

    def __init__(self, low=None, high=None, *, stabilizer: float = 1e-6,
                 bias: bool | str | None = None):  # fmt: skip
        super().__init__(stabilizer=stabilizer, bias=bias)
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
        b = self.uses_bias
        return [(1.0, [
            ([a], IDENTITY, b),
            ([lo], lambda w: -w.clamp(min=0), b),
            ([hi], lambda w: -w.clamp(max=0), b),
        ])]  # fmt: skip

    def check_domain(self, call, inputs, where):
        (a,) = inputs
        lo, hi = self.bounds_for(call, a)
        tol = 1e-5 * float((hi - lo).abs().max().clamp(min=1))  # rounding of normalization
        below, above = float((lo - a.detach()).max()), float((a.detach() - hi).max())
        if below > tol or above > tol:
            raise ValueError(
                f"deep Taylor's zᴮ rule needs the input of {where} inside its box [low, high], "
                f"but it lies up to {max(below, above):.4g} outside. Pass inputs in the "
                "model's valid range, or bounds that hold them: ZBox(low=..., high=...)"
            )
