"""Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2017, 2019).

The relevance of the explained objective ``t`` starts at the activations ``A`` it reads as
``R = A ⊙ ∂t/∂A`` (for a class logit: the logit itself at that class, 0 elsewhere; in
general it sums to ``t`` for objectives linear in ``A``) and is passed down layer by layer:

* conv / linear / average-pool operations: the rule of the :mod:`composite
  <fvis.attribution.composites>` (ε, γ, z⁺, αβ, w², flat, zᴮ; :mod:`fvis.attribution.rules`);
* sums of activations ``z = Σ_k c_k a_k`` (ResNet's ``out += identity``, MobileNet's
  ``x + conv(x)``): split in proportion, ``R_k = c_k a_k / (z + ε sign z) · R`` (ε = 1e-6),
  as zennit's ResNet canonizer does;
* elementwise activations (ReLU, and GELU, SiLU, ... by the identity rule of Ali et al.
  2022 and Achtibat et al. 2024), BatchNorm not folded into a layer, scaling by constants
  (ConvNeXt's layer scale, positional embeddings): passed unchanged (``R_in = R_out``);
* layer norms, by the LN-rule of Ali et al. 2022 ("XAI for Transformers: Better
  Explanations through Conservative Propagation"): the scale ``σ = √(Var x + eps)`` is
  held at its value, so ``y_j = γ_j (x_j − μ(x))/σ + β_j`` is linear in ``x``, and the
  composite's ``norm`` rule (an ε-rule, default ε = 1e-6) applies to it:
  ``R_i = x_i Σ_j (γ_j/σ)(δ_ij − 1/D) R_j / stab(y_j)`` (``y_j − β_j`` with ``bias=False``);
* attention, by the AH-rule of Ali et al. 2022: the attention weights ``A = softmax(q kᵀ
  · s + mask)`` are held constant, so ``out = A v`` is linear in the values and gets the
  composite's ``product`` rule (default ε): ``R_v = v ⊙ Aᵀ (R / stab(A v))``; queries and
  keys get no relevance. Fused attention (``F.scaled_dot_product_attention``,
  ``nn.MultiheadAttention``) is written out first (:mod:`fvis.hooks.attention`).
  Relevance reaching attention weights or a product ``q kᵀ`` by any other path is
  refused. ``attention="attnlrp"`` uses AttnLRP's rules instead (Achtibat et al. 2024):
  softmax ``R_z = z ⊙ (R − s ⊙ Σ R)`` and, for every product of two activations
  ``y = f(a, b)`` (``q kᵀ``, ``A v``), the uniform rule ``R_a = a ⊙ (∂y/∂a)ᵀ (R / 2
  stab(y))``, ``R_b`` likewise (the ``product`` rule's stabilizer); queries and keys
  get relevance, and the softmax rule does not conserve it (``Σ R_z = Σ z ⊙ R −
  (Σ s ⊙ z) Σ R``);
* gates, ``g ⊙ x`` with ``g`` a sigmoid or hardsigmoid output (squeeze-excitation in
  EfficientNet, MobileNetV3, RegNetY, MaxViT): ``g`` held constant, all relevance to
  ``x`` (signal-take-all, Arras et al. 2017; the AH-rule's treatment of a gate); the
  sigmoid itself passes relevance as any activation where it is used otherwise;
* means and sums over non-batch dimensions (token pooling): the ``pool`` rule;
* max-pooling, ``max_pool=``: ``"winner_take_all"`` (default, zennit's: all to the
  maximum) or ``"proportional"`` (Montavon et al. 2017/2018: ``R_i = Σ_j a_i / stab(Σ_{k ∈
  W_j} a_k) · R_j`` over the windows ``W_j`` holding ``i``; ``max(3, 1)`` → (2.25, 0.75));
* reshaping, indexing, concatenation, dropout: routed by the gradient, which conserves
  relevance.

BatchNorm is folded into the preceding conv/linear layer first (:class:`MergeBatchNorm`,
undone afterwards). Every operation without a rule raises
:class:`~fvis.hooks.UnsupportedOperation` naming the module. The result is the
relevance of each input value, shaped like the input; with biases and ε > 0 the total is
``t`` minus what biases, stabilizers and constants (a ViT's class token, concatenated
constants) absorb. With bias-free rules (``Uniform(Epsilon(0, bias=False))``) a
transformer conserves ``t`` up to the residual sums' stabilizer (< 3e-5 of ``t`` on
tiny ViT, Swin and ConvNeXt; tests/test_transformer_rules.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fvis import hooks
from fvis.attribution import algebra, pooling
from fvis.attribution.base import Attribution, resolve_target
from fvis.attribution.canonizers import canonized, default_canonizers
from fvis.attribution.composites import Composite, EpsilonPlus, Layer, Uniform
from fvis.attribution.rules import Epsilon, Rule, ZBox, divide
from fvis.hooks import Activations
from fvis.hooks.intercept import tensors_in

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


# gates: outputs held constant where they multiply an activation (sigmoid, hardsigmoid:
# squeeze-excitation; softmax, by _Gate: attention)
_GATES = {torch.sigmoid, torch.Tensor.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid_,
          F.sigmoid, F.hardsigmoid}  # fmt: skip


class _Gate(torch.autograd.Function):
    """Attention weights ``A = softmax(z)`` under the AH-rule: a constant factor of the
    products they enter. Relevance that reaches them by another path is refused."""

    @staticmethod
    def forward(ctx, z, f, where):
        ctx.where = where
        return f(z)

    @staticmethod
    def backward(ctx, relevance):
        raise hooks.UnsupportedOperation(
            f"{ctx.where}: the AH-rule holds attention weights (softmax) constant, so "
            "relevance passes only through their products with activations (A @ v), but the "
            "explained output depends on the weights by another path"
        )


class _Bilinear(torch.autograd.Function):
    """A product of two activations neither of which are attention weights (``q @ kᵀ``):
    relevance stops before it (the AH-rule), and relevance that reaches it is refused."""

    @staticmethod
    def forward(ctx, a, b, f, where):
        ctx.where = where
        return f(a, b)

    @staticmethod
    def backward(ctx, relevance):
        raise hooks.UnsupportedOperation(
            f"{ctx.where}: a product of two activations is explained only as a gate "
            "(softmax, sigmoid or hardsigmoid output) times an activation, the gate held "
            "constant (Ali et al. 2022's AH-rule, Arras et al. 2017's signal-take-all); the "
            "explained output depends on this product otherwise"
        )


class _SoftmaxRule(torch.autograd.Function):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): ``s = softmax(z)``,
    ``R_z = z ⊙ (R − s ⊙ Σ_dim R)``."""

    @staticmethod
    def forward(ctx, z, f, dim):
        s = f(z)
        ctx.dim = dim
        ctx.save_for_backward(z, s)
        return s

    @staticmethod
    def backward(ctx, relevance):
        z, s = ctx.saved_tensors
        return z * (relevance - s * relevance.sum(ctx.dim, keepdim=True)), None, None


class _UniformProduct(algebra.BilinearRule):
    """AttnLRP's uniform rule for a bilinear ``y = f(a, b)`` (``q kᵀ``, ``A v``): half of
    the relevance to each factor, by the ε-rule of the map linear in it,
    ``R_a = a ⊙ (∂f(a, b)/∂a)ᵀ (R / 2 stab(y))`` and ``R_b`` likewise. Setting: ε."""

    @staticmethod
    def backward(ctx, relevance):
        a, b = ctx.saved_tensors
        s = divide(relevance, ctx.f(a, b), ctx.setting) / 2
        ga, gb = algebra.bilinear_vjp(ctx.f, a, b, s)
        return a * ga, b * gb, None, None


class _LRPPolicy(algebra.Policy):
    strict = True
    track_bounds = True

    def __init__(self, composite: Composite, method: str, *, max_pool: str = "winner_take_all",
                 check_domain: bool = False, attention: str = "ah"):  # fmt: skip
        self.composite, self.method, self.attention = composite, method, attention
        self.proportional, self.check_domain = max_pool == "proportional", check_domain
        self.index = 0
        self.gates: dict[int, Tensor] = {}  # softmax, sigmoid outputs and views of them, by id

    def linear(self, op, call, inputs):
        if call.kind == "sum":
            rule = SUM_RULE
        else:
            index = -1
            if call.kind in ("conv", "linear"):
                index, self.index = self.index, self.index + 1
            rule = self.composite.rule(Layer(op.name, op.module, call.kind, index))
            if rule is None:
                raise hooks.UnsupportedOperation(
                    f"{self.method} has no rule for {hooks.op_name(op.func)} in {op.where} "
                    f"(a {'layer norm' if call.kind == 'norm' else 'product'}; the method "
                    "is derived for ReLU networks). Use LRP"
                )
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
        out = _Pass.apply(z, f)
        return self._gate(out) if op.func in _GATES else out

    def batch_norm(self, op, x, f):
        return _Pass.apply(x, f)

    def scale(self, op, x, f):
        return _Pass.apply(x, f)

    def layer_norm(self, op, x, norm):
        return self.linear(op, algebra.NormCall(norm, x), [x])

    def softmax(self, op, z, dim, f):
        if self.attention == "attnlrp":
            return _SoftmaxRule.apply(z, f, dim)
        return self._gate(_Gate.apply(z, f, self._where(op)))

    def product(self, op, a, b, f):
        ga, gb = self._is_gate(a), self._is_gate(b)
        if ga != gb:  # gate × activation: linear in the activation
            const, x = (a, b) if ga else (b, a)
            return self.linear(op, algebra.ProductCall(f, const, ga), [x])
        if ga:
            raise hooks.UnsupportedOperation(f"{self._where(op)}: a product of two gates")
        if self.attention == "attnlrp" and self.composite.product is not None:
            return _UniformProduct.apply(a, b, f, self.composite.product.stabilizer)
        return _Bilinear.apply(a, b, f, self._where(op))

    def alias(self, src, dst):
        if self._is_gate(src):
            self._gate(dst)

    def _where(self, op) -> str:
        return f"{self.method} cannot propagate through {hooks.op_name(op.func)} in {op.where}"

    def neutral(self, op, args, kwargs, out):
        if any(self._is_gate(t) for t in tensors_in(args)):
            for t in tensors_in(out):
                self._gate(t)

    def _gate(self, t: Tensor) -> Tensor:
        self.gates[id(t)] = t
        return t

    def _is_gate(self, t) -> bool:
        return self.gates.get(id(t)) is t


def seeded(acts: Activations, layers) -> Activations:
    """``acts`` with the given layers wrapped so that backward gives ``A ⊙ ∂t/∂A``."""
    return acts.map(lambda k, v: _Seed.apply(v) if k in layers else v, acts.output)


class LRP(Attribution):
    """Layer-wise Relevance Propagation with a composite of rules (module docstring).

    ``composite``: a :class:`~fvis.attribution.composites.Composite` (default
    ``EpsilonPlus()``), or ``rule=`` one rule for every layer. ``max_pool``:
    ``"winner_take_all"`` or ``"proportional"``. ``canonizers``: reversible rewrites
    applied for the call (default: BatchNorm folding). The zᴮ rule's bounds default to the
    model's valid input range ``model.fvis_info.valid_range(x)``. ``attention``: ``"ah"``
    (Ali et al. 2022's AH-rule, conserving) or ``"attnlrp"`` (Achtibat et al. 2024).

    >>> from fvis.attribution.composites import EpsilonAlpha2Beta1
    >>> LRP(model, EpsilonAlpha2Beta1()).attribute(x, target=3).shape   # like the input
    torch.Size([2, 1, 28, 28])
    >>> r = LRP(model, rule=Epsilon(0.25)).attribute(x)                  # predicted class
    """

    method = "LRP"
    MAX_POOL = ("winner_take_all", "proportional")
    ATTENTION = ("ah", "attnlrp")
    check_domain = False  # deep Taylor: refuse inputs outside each rule's domain

    def __init__(self, model, composite: Composite | None = None, *, rule: Rule | None = None,
                 max_pool: str = "winner_take_all", canonizers=None,
                 attention: str = "ah"):  # fmt: skip
        super().__init__(model)
        if rule is not None and composite is not None:
            raise ValueError("give a composite or one rule, not both")
        if max_pool not in self.MAX_POOL:
            raise ValueError(f"max_pool must be one of {self.MAX_POOL}, not {max_pool!r}")
        if attention not in self.ATTENTION:
            raise ValueError(f"attention must be one of {self.ATTENTION}, not {attention!r}")
        self.max_pool, self.attention = max_pool, attention
        self.composite = Uniform(rule) if rule is not None else (composite or EpsilonPlus())
        self.canonizers = tuple(default_canonizers() if canonizers is None else canonizers)

    def attribute(self, inputs: Tensor, target=None) -> Tensor:
        """Relevance ``(B, ...)`` of each input value for ``target`` (int class, per-item
        classes, an :class:`~fvis.objectives.Objective`, ``None`` = predicted class)."""
        objective = resolve_target(self.model, inputs, target)
        x = inputs.detach().requires_grad_(True)
        bounds = self.info.valid_range(x) if x.dim() == 4 else None
        policy = _LRPPolicy(self.composite, self.method, max_pool=self.max_pool,
                         check_domain=self.check_domain, attention=self.attention)  # fmt: skip
        with canonized(self.model, inputs, self.canonizers):
            acts = hooks.run(self.model, x, objective.layers, policy, bounds=bounds)
            s = objective(seeded(acts, objective.layers))
            (relevance,) = torch.autograd.grad(s.sum(), x)
        return relevance
