"""Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2017, 2019).

The relevance of the explained objective ``t`` starts at the activations ``A`` it reads as
``R = A ⊙ ∂t/∂A`` (for a class logit: the logit itself at that class, 0 elsewhere; in
general it sums to ``t`` for objectives linear in ``A``) and is passed down layer by layer:

* conv / linear / average-pool operations: the rule of the :mod:`composite
  <fvis.attribution.composites>` (ε, γ, z⁺, αβ, w², flat, zᴮ; :mod:`fvis.attribution.rules`);
* sums of activations ``z = Σ_k c_k a_k`` (ResNet's ``out += identity``, MobileNet's
  ``x + conv(x)``): split in proportion, ``R_k = c_k a_k / (z + ε sign z) · R`` (ε = 1e-6),
  as zennit's ResNet canonizer does;
* elementwise activations, BatchNorm not folded into a layer, scaling by constants: passed
  unchanged (``R_in = R_out``);
* max-pooling, ``max_pool=``: ``"winner_take_all"`` (default, zennit's: all to the
  maximum) or ``"proportional"`` (Montavon et al. 2017/2018: ``R_i = Σ_j a_i / stab(Σ_{k ∈
  W_j} a_k) · R_j`` over the windows ``W_j`` holding ``i``; ``max(3, 1)`` → (2.25, 0.75));
* reshaping, indexing, concatenation, dropout: routed by the gradient, which conserves
  relevance.

BatchNorm is folded into the preceding conv/linear layer first (:class:`MergeBatchNorm`,
undone afterwards). Every operation without a rule raises
:class:`~fvis.hooks.UnsupportedOperation` naming the module. The result is the
relevance of each input value, shaped like the input; with biases and ε > 0 the total is
``t`` minus what biases and stabilizers absorb.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fvis import hooks
from fvis.attribution import algebra, pooling
from fvis.attribution.base import Attribution, resolve_target
from fvis.attribution.canonizers import canonized, default_canonizers
from fvis.attribution.composites import Composite, EpsilonPlus, Layer, Uniform
from fvis.attribution.rules import Epsilon, Rule, ZBox, divide
from fvis.hooks import Activations

__all__ = ["LRP", "SUM_RULE"]

SUM_RULE = Epsilon(1e-6)  # additions of activations: proportional split


class _RuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rule, call, *inputs):
        ctx.rule, ctx.call = rule, call
        ctx.save_for_backward(*inputs)
        return call.forward(list(inputs))

    @staticmethod
    def backward(ctx, relevance):
        return (None, None, *ctx.rule.relevance(ctx.call, ctx.saved_tensors, relevance))


class _Pass(torch.autograd.Function):
    """Forward ``f(x)``; backward passes the relevance unchanged."""

    @staticmethod
    def forward(ctx, x, f):
        ctx.shape = x.shape
        return f(x)

    @staticmethod
    def backward(ctx, relevance):
        if relevance.shape != ctx.shape:
            relevance = relevance.sum_to_size(ctx.shape)
        return relevance, None


class _ProportionalMaxPool(torch.autograd.Function):
    """Forward: the max pool; backward: each window's relevance split in proportion to its
    inputs, ``R_i = Σ_j a_i R_j / stab(Σ_{k ∈ W_j} a_k)``."""

    @staticmethod
    def forward(ctx, z, pool):
        y, _ = pool(z)
        ctx.w = pooling.windows(pool.func, pool.options, z.shape, y.shape, z.device)
        ctx.save_for_backward(z)
        return y

    @staticmethod
    def backward(ctx, relevance):
        (z,) = ctx.saved_tensors
        w = ctx.w
        a = torch.where(w.valid, pooling.gather(z, w), 0)  # (..., O, K)
        s = divide(relevance.flatten(relevance.dim() - w.nd), a.sum(-1), SUM_RULE.stabilizer)
        return pooling.scatter(a * s.unsqueeze(-1), w), None


class _Seed(torch.autograd.Function):
    """Identity forward; backward multiplies by the activation: ``R = A ⊙ ∂t/∂A``."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a.clone()

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * a


class _Policy(algebra.Policy):
    strict = True
    track_bounds = True

    def __init__(self, composite: Composite, method: str, *, max_pool: str = "winner_take_all",
                 check_domain: bool = False):  # fmt: skip
        self.composite, self.method = composite, method
        self.proportional, self.check_domain = max_pool == "proportional", check_domain
        self.index = 0

    def linear(self, op, call, inputs):
        if call.kind == "sum":
            rule = SUM_RULE
        else:
            index = -1
            if call.kind in ("conv", "linear"):
                index, self.index = self.index, self.index + 1
            rule = self.composite.rule(Layer(op.name, op.module, call.kind, index))
            call.bounds = self.interceptor.bounds_of(inputs[0])
            if isinstance(rule, ZBox) and rule.low is None and call.bounds is None:
                raise ValueError(
                    f"{self.method}: the zᴮ rule of {op.where} needs the value range of its "
                    "input. The default, the model's valid input range, reaches a layer only "
                    "through reshaping and scaling of the model input, and this layer's "
                    "input is computed otherwise. Pass ZBox(low=..., high=...)."
                )
            if self.check_domain:
                rule.check_domain(call, inputs, f"{hooks.op_name(op.func)} in {op.where}")
        return _RuleFunction.apply(rule, call, *inputs)

    def max_pool(self, op, z, pool):
        return _ProportionalMaxPool.apply(z, pool) if self.proportional else None

    def activation(self, op, z, f, relu_like):
        return _Pass.apply(z, f)

    def batch_norm(self, op, x, f):
        return _Pass.apply(x, f)

    def scale(self, op, x, f):
        return _Pass.apply(x, f)


def seeded(acts: Activations, layers) -> Activations:
    """``acts`` with the given layers wrapped so that backward gives ``A ⊙ ∂t/∂A``."""
    out = Activations({k: (_Seed.apply(v) if k in layers else v) for k, v in acts.items()})
    out.info, out.grads, out.output = acts.info, {}, acts.output
    return out


class LRP(Attribution):
    """Layer-wise Relevance Propagation with a composite of rules (module docstring).

    ``composite``: a :class:`~fvis.attribution.composites.Composite` (default
    ``EpsilonPlus()``), or ``rule=`` one rule for every layer. ``max_pool``:
    ``"winner_take_all"`` or ``"proportional"``. ``canonizers``: reversible rewrites
    applied for the call (default: BatchNorm folding). The zᴮ rule's bounds default to the
    model's valid input range ``model.fvis_info.valid_range(x)``.

    >>> from fvis.attribution.composites import EpsilonAlpha2Beta1
    >>> LRP(model, EpsilonAlpha2Beta1()).attribute(x, target=3).shape   # like the input
    torch.Size([2, 1, 28, 28])
    >>> r = LRP(model, rule=Epsilon(0.25)).attribute(x)                  # predicted class
    """

    method = "LRP"
    MAX_POOL = ("winner_take_all", "proportional")
    check_domain = False  # deep Taylor: refuse inputs outside each rule's domain

    def __init__(self, model, composite: Composite | None = None, *, rule: Rule | None = None,
                 max_pool: str = "winner_take_all", canonizers=None):  # fmt: skip
        super().__init__(model)
        if rule is not None and composite is not None:
            raise ValueError("give a composite or one rule, not both")
        if max_pool not in self.MAX_POOL:
            raise ValueError(f"max_pool must be one of {self.MAX_POOL}, not {max_pool!r}")
        self.max_pool = max_pool
        self.composite = Uniform(rule) if rule is not None else (composite or EpsilonPlus())
        self.canonizers = tuple(default_canonizers() if canonizers is None else canonizers)

    def attribute(self, inputs: Tensor, target=None) -> Tensor:
        """Relevance ``(B, ...)`` of each input value for ``target`` (int class, per-item
        classes, an :class:`~fvis.objectives.Objective`, ``None`` = predicted class)."""
        objective = resolve_target(self.model, inputs, target)
        x = inputs.detach().requires_grad_(True)
        bounds = self.info.valid_range(x) if x.dim() == 4 else None
        policy = _Policy(self.composite, self.method, max_pool=self.max_pool,
                         check_domain=self.check_domain)  # fmt: skip
        with canonized(self.model, inputs, self.canonizers):
            acts = hooks.run(self.model, x, objective.layers, policy, bounds=bounds)
            s = objective(seeded(acts, objective.layers))
            (relevance,) = torch.autograd.grad(s.sum(), x)
        return relevance
