"""DeepLIFT (Shrikumar, Greenside & Kundaje 2017) with the Rescale and RevealCancel rules.

Attributions are contributions ``C_i = Δx_i · m_i`` of the input differences
``Δx = x − x⁰`` from a reference ``x⁰``, with multipliers ``m`` propagated backwards by
the chain rule ``m_{Δx Δt} = Σ_j m_{Δx Δy_j} m_{Δy_j Δt}``. They satisfy
*summation-to-delta*: ``Σ_i C_i = t(x) − t(x⁰)`` for the explained objective ``t``
(exact up to float rounding for objectives linear in the activations they read, e.g.
class logits, channels, neurons).

Rules (each a backward pass installed through :mod:`fvis.hooks.intercept`, so functional
``F.relu`` and reused modules are handled per call):

* **linear** (conv, linear, pooling, sums, BatchNorm in eval, reshaping): the gradient,
  ``m_{Δa_i Δz} = w_i``.
* **Rescale** for an elementwise nonlinearity ``y = f(z)`` (ReLU, GELU, SiLU, ...):
  ``m = Δy / Δz``, or ``f'(z)`` where ``|Δz| < 1e-10``.
* **RevealCancel** for an elementwise nonlinearity ``y = f(z)``: with the positive and
  negative parts ``Δz = Δz⁺ + Δz⁻`` and ``r = z⁰``

  ``Δy⁺ = ½[f(r + Δz⁺) − f(r)] + ½[f(r + Δz⁻ + Δz⁺) − f(r + Δz⁻)]``
  ``Δy⁻ = ½[f(r + Δz⁻) − f(r)] + ½[f(r + Δz⁺ + Δz⁻) − f(r + Δz⁺)]``

  ``m⁺ = Δy⁺/Δz⁺``, ``m⁻ = Δy⁻/Δz⁻`` (eq. 17-19). The parts are those of the reference
  DeepLIFT, carried from the last conv/linear operation through every linear operation in
  between — slicing, ``cat``, reshaping, sums (residual blocks), average pools, scaling,
  BatchNorm — and through nonlinearities and max pools
  (:mod:`fvis.attribution.reveal_cancel`); a conv/linear ``z = Σ_i w_i a_i + b`` splits
  by the sign of ``w_i Δa_i`` (eq. 6-7) and its input ``i`` gets ``w_i m⁺`` if
  ``w_i Δa_i > 0``, ``w_i m⁻`` if ``< 0``, ``w_i (m⁺ + m⁻)/2`` if ``Δa_i = 0``
  (eq. 12-13). Where the parts cannot be carried the nonlinearity is refused, naming the
  operation; nothing falls back to Rescale.
* **products of activations** ``y = f(a, b)`` (``a * b``, ``a @ b``: attention's
  ``q kᵀ`` and ``A v``, gates): ``Δy = f(Δa, b̄) + f(ā, Δb)`` with ``ā = (a + a⁰)/2``, exact
  for bilinear ``f`` (the cross term ``f(Δa, Δb)`` split equally: the Shapley values of
  the two factors; DeepLIFT's paper does not define products), multipliers
  ``∂f(a, b̄)/∂a`` and ``∂f(ā, b)/∂b``.
* **softmax** ``p = e · 1/Σe`` with ``e = exp(z − c)`` (``c`` the larger row maximum of
  input and reference, a shared constant): Rescale for ``exp`` and ``1/s``, the product
  rule for ``e · 1/Σe``; nothing is held constant.
* **layer norm** ``y = c · (mean(c · c) + eps)^(−1/2) · γ + β`` with ``c = x − μ(x)``:
  the product rule for ``c · c`` and ``c · s``, Rescale for ``s = (v + eps)^(−1/2)``;
  the normalization is not linearized (holding σ at the input's value would break
  summation-to-delta), so ``Σ_i C_i = t(x) − t(x⁰)`` stays exact (< 1e-9 in float64 on
  tiny ViT, Swin, ConvNeXt and timm ViT).

  These three need the ``2B`` items along the first dimension of every operand,
  possibly merged item-major with windows or heads (Swin's ``(2B·W, ...)``); RevealCancel
  refuses them (its parts are not carried through them).
* **max-pool**, ``max_pool=`` one of

  * ``"argmax"`` (default): in each window ``y = max_i z_i``; with ``i*`` the argmax for
    the input and ``j*`` for the reference, ``Δy = z_{i*} − z⁰_{j*}`` lies between
    ``Δz_{j*}`` and ``Δz_{i*}``, so ``Δy = λ Δz_{i*} + (1 − λ) Δz_{j*}`` with
    ``λ ∈ [0, 1]``; the multipliers are ``λ·m`` at ``i*`` and ``(1 − λ)·m`` at ``j*``.
    This keeps summation-to-delta exact where the plain gradient (``m`` at ``i*`` only,
    contribution ``Δz_{i*} ≠ Δy``) does not.
  * ``"shapley"``: RevealCancel's answer to max-pool (seed 000): every input of the window
    gets its exact Shapley value ``φ_i`` in the game ``v(S) = max(z_i, i ∈ S; z⁰_i, i ∉ S)``
    (:func:`fvis.attribution.pooling.shapley_max`), multiplier ``φ_i / Δz_i``. ``Σ_i φ_i =
    Δy``; ``max(3, 1)`` from 0 gives ``(2.5, 0.5)`` where ``"argmax"`` gives ``(3, 0)``.

**Reference** ``x⁰`` (``reference=``): the named references of
:mod:`~fvis.attribution.integrated` — ``"black"`` (default; seed 003 uses black for
MNIST) / ``"zero"``, ``"blur"`` (seed 003's choice for CIFAR-10), ``"uniform"``,
``"gaussian"``, ``"max_distance"`` — built in pixel space from the model's normalization,
or a number, a tensor like one input or like ``inputs``, or a callable.

``multiply_by_inputs=False`` returns the multipliers ``m = ∂^DL t / ∂x`` (captum's
"global" attribution) instead of ``Δx · m``.

Input and reference run as one batch of ``2B``; the model runs in eval mode. Operations
without a rule (quotients of activations, group norm, ...) raise
:class:`~fvis.hooks.UnsupportedOperation`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fvis import hooks
from fvis.attribution import algebra, pooling
from fvis.attribution.base import Attribution, item_sums, resolve_target
from fvis.attribution.baselines import generator, make_baselines
from fvis.attribution.canonizers import canonized, default_canonizers
from fvis.attribution.reveal_cancel import Parts, RevealCancel, padded, rescale_multiplier
from fvis.hooks import Activations

__all__ = ["DeepLift"]

_EPS = 1e-10  # |Δz| below this: use the derivative (captum uses the same threshold)


def _halves(t: Tensor, b: int) -> tuple[Tensor, Tensor]:
    return t[:b], t[b:]


class _Rescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, f, b):
        y = f(z)
        ctx.b = b
        ctx.save_for_backward(rescale_multiplier(f, *_halves(z, b), *_halves(y, b)))
        return y

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        gx = m * g[: ctx.b]
        return torch.cat([gx, torch.zeros_like(g[ctx.b :])]), None, None


class _Product(algebra.BilinearRule):
    """``y = f(a, b)`` bilinear (``a * b``, ``a @ b``): multipliers ``∂f(a, b̄)/∂a`` and
    ``∂f(ā, b)/∂b`` at the means ``ā = (a + a⁰)/2``, ``b̄ = (b + b⁰)/2``, so that
    ``Δy = f(Δa, b̄) + f(ā, Δb)`` exactly (the cross term ``f(Δa, Δb)`` split equally).
    Setting: ``n``, the number of input rows (the references follow)."""

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        n = ctx.setting
        ga, gb = algebra.bilinear_vjp(ctx.f, (a[:n] + a[n:]) / 2, (b[:n] + b[n:]) / 2, g[:n])
        return padded(ga), padded(gb), None, None


class _MaxPool(torch.autograd.Function):
    """``max_pool="argmax"``: multipliers ``λ·m`` at the input's argmax, ``(1 − λ)·m`` at the
    reference's."""

    @staticmethod
    def forward(ctx, z, pool, b, maps):
        y, idx = pool(z)
        dz = (z[:b] - z[b:]).flatten(2)
        ix, ir = idx[:b].flatten(2), idx[b:].flatten(2)
        di, dj = dz.gather(2, ix), dz.gather(2, ir)
        dy = (y[:b] - y[b:]).flatten(2)
        den = di - dj
        safe = den.abs() > _EPS
        lam = torch.where(safe, (dy - dj) / torch.where(safe, den, 1), 1).clamp(0, 1)
        ctx.b, ctx.zshape = b, z.shape
        ctx.save_for_backward(lam, ix, ir)

        def linear_map(v):  # Δy = λ Δz_{i*} + (1 − λ) Δz_{j*}, for RevealCancel's parts
            vx = v[:b].flatten(2)
            out = lam * vx.gather(2, ix) + (1 - lam) * vx.gather(2, ir)
            return padded(out.view_as(y[:b]))

        maps.append(linear_map)
        return y

    @staticmethod
    def backward(ctx, g):
        lam, ix, ir = ctx.saved_tensors
        b = ctx.b
        gx = g[:b].flatten(2)
        gin = torch.zeros((b, *ctx.zshape[1:]), dtype=g.dtype, device=g.device).flatten(2)
        gin.scatter_add_(2, ix, lam * gx).scatter_add_(2, ir, (1 - lam) * gx)
        gin = gin.view(b, *ctx.zshape[1:])
        return torch.cat([gin, torch.zeros_like(gin)]), None, None, None


class _ShapleyMaxPool(torch.autograd.Function):
    """``max_pool="shapley"``: member ``i`` of a window gets ``φ_i / Δz_i · m``."""

    @staticmethod
    def forward(ctx, z, pool, b, maps):
        y, _ = pool(z)
        w = pooling.windows(pool.func, pool.options, z.shape, y.shape, z.device)
        zw = pooling.gather(z, w)  # (2B, C, O, K)
        x, r = zw[:b], zw[b:]
        phi = pooling.shapley_max(x, r, w.valid)
        dz = x - r
        safe = dz.abs() > _EPS  # |φ_i| ≤ |Δz_i|: nothing is lost here
        m = torch.where(safe, phi / torch.where(safe, dz, 1), 0)
        ctx.w, ctx.b = w, b
        ctx.save_for_backward(m)

        def linear_map(v):  # Δy = Σ_i m_i Δz_i, for RevealCancel's parts
            return padded((m * pooling.gather(v[:b], w)).sum(-1).view_as(y[:b]))

        maps.append(linear_map)
        return y

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        w = ctx.w
        gx = g[: ctx.b].flatten(g.dim() - w.nd).unsqueeze(-1)  # (B, C, O, 1)
        gin = pooling.scatter(m * gx, w)
        return torch.cat([gin, torch.zeros_like(gin)]), None, None, None


_MAX_POOL_RULES = {"argmax": _MaxPool, "shapley": _ShapleyMaxPool}


class _DeepLiftPolicy(algebra.Policy):
    strict = True

    def __init__(self, rule: str, b: int, max_pool: str = "argmax"):
        self.rule, self.b, self.pool_rule = rule, b, _MAX_POOL_RULES[max_pool]
        self.method = f"DeepLift(rule={rule!r})"
        # RevealCancel's Δ⁺/Δ⁻ of every activation (None for Rescale, which needs none)
        self.parts = Parts(b, self.method) if rule == "reveal_cancel" else None

    def linear(self, op, call, inputs):
        if self.parts is None:
            return None
        out = call.forward(inputs)
        self.parts.linear(op, call, inputs, out)
        return out

    def scale(self, op, x, f):
        return self._affine(op, x, f)

    def batch_norm(self, op, x, f):
        return self._affine(op, x, f)

    def _affine(self, op, x, f):
        if self.parts is None:
            return None
        out = f(x)
        self.parts.affine(op, f, out)
        return out

    def neutral(self, op, args, kwargs, out):
        if self.parts is not None:
            self.parts.neutral(op, args, kwargs, out)

    def alias(self, src, dst):
        if self.parts is not None:
            self.parts.alias(src, dst)

    def activation(self, op, z, f, relu_like):
        if self.parts is None:
            return _Rescale.apply(z, f, self._half(op, z))
        pos, neg = self.parts.get(op.source, op.where)
        y, ypos, yneg = RevealCancel.apply(f, self.b, z.detach(), pos, neg)
        self.parts.put(y, lambda: (ypos, yneg))
        return y

    def product(self, op, a, b, f):
        self._no_parts(op)
        n = self._half(op, a, b)
        return _Product.apply(a, b, f, n)

    def _half(self, op, *ts: Tensor) -> int:
        """Rows per half: the ``2B`` items (inputs, then references) lead the first
        dimension, possibly merged item-major with windows or heads (Swin's ``(2B·W, ...)``)."""
        rows = ts[0].shape[0] if ts[0].dim() else 0
        if rows % (2 * self.b) or any(t.dim() == 0 or t.shape[0] != rows for t in ts):
            shapes = ", ".join(str(tuple(t.shape)) for t in ts)
            raise hooks.UnsupportedOperation(
                f"{self.method} cannot propagate through {hooks.op_name(op.func)} in "
                f"{op.where}: {shapes} do not hold the {2 * self.b} items (inputs, then "
                "references) along their first dimension"
            )
        return rows // 2

    def softmax(self, op, z, dim, f):
        """``exp(z − c) · 1/Σ exp(z − c)``, ``c`` the larger of the row maxima of input and
        reference (a shared constant): Rescale for ``exp`` and ``1/s``, products exact."""
        self._no_parts(op)
        n = self._half(op, z)
        c = z.detach().amax(dim, keepdim=True)
        c = torch.maximum(c[:n], c[n:]).repeat(2, *([1] * (z.dim() - 1)))
        e = _Rescale.apply(z - c, torch.exp, n)
        r = _Rescale.apply(e.sum(dim, keepdim=True), torch.reciprocal, n)
        return self.product(op, e, r, torch.mul)

    def layer_norm(self, op, x, norm):
        """``c · 1/√(mean(c·c) + eps) · γ + β`` with ``c = x − μ(x)``: Rescale for the
        reciprocal square root, products exact; nothing is linearized."""
        self._no_parts(op)
        dims = tuple(range(-len(norm.normalized_shape), 0))
        c = x - x.mean(dims, keepdim=True)
        var = self.product(op, c, c, torch.mul).mean(dims, keepdim=True)
        scale = _Rescale.apply(var + norm.eps, torch.rsqrt, self._half(op, x))
        y = self.product(op, c, scale, torch.mul)
        if norm.weight is not None:
            y = y * norm.weight
        return y + norm.bias if norm.bias is not None else y

    def _no_parts(self, op):
        if self.parts is not None:
            raise hooks.UnsupportedOperation(
                f"{self.method} cannot propagate through {hooks.op_name(op.func)} in "
                f"{op.where}: RevealCancel's positive and negative parts are not carried "
                "through layer norms, softmax or products of activations; use "
                "DeepLift(model, 'rescale')"
            )

    def max_pool(self, op, z, pool):
        maps: list = []
        y = self.pool_rule.apply(z, pool, self.b, maps)
        if self.parts is not None:
            self.parts.mapped(op, z, maps[0], y)
        return y


def reference_for(spec, inputs: Tensor, info, gen=None) -> Tensor:
    """One reference like ``inputs`` from ``spec`` (the baselines of
    :func:`fvis.attribution.baselines.make_baselines`; ``None`` is ``"black"``)."""
    spec = "black" if spec is None else spec
    refs = make_baselines(spec, inputs, info, generator(gen) if gen is not None else None)
    if refs.shape[0] != 1:
        raise ValueError(
            f"one reference is needed, got {refs.shape[0]} (a tensor of shape "
            f"{tuple(refs.shape[1:])} with a leading dimension); pass one input-shaped tensor"
        )
    return refs[0]


def _split_acts(acts: Activations, b: int) -> tuple[Activations, Activations]:
    halves = []
    for part in (slice(None, b), slice(b, None)):
        out = acts.output[part] if acts.output is not None else None
        halves.append(acts.map(lambda _, v, part=part: v[part], out))
    return halves[0], halves[1]


class DeepLift(Attribution):
    """DeepLIFT contributions ``C = Δx · m`` (module docstring), ``(B, ...)`` like the input.

    ``rule``: ``"rescale"`` or ``"reveal_cancel"``. ``max_pool``: ``"argmax"`` or
    ``"shapley"``. ``multiply_by_inputs=False``: return the multipliers ``m`` instead.
    ``canonizers``: reversible model rewrites applied during the call; by default BatchNorm
    is folded into the preceding conv/linear for RevealCancel (so conv + BN is one linear
    operation whose positive/negative split is taken) and nothing is changed for Rescale
    (linear rewrites do not change Rescale multipliers).

    >>> attr, delta = DeepLift(model, "reveal_cancel").attribute(x, 3, return_delta=True)
    """

    RULES = ("rescale", "reveal_cancel")
    MAX_POOL = tuple(_MAX_POOL_RULES)

    def __init__(self, model, rule: str = "rescale", *, max_pool: str = "argmax",
                 multiply_by_inputs: bool = True, canonizers=None):  # fmt: skip
        super().__init__(model)
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, not {rule!r}")
        if max_pool not in self.MAX_POOL:
            raise ValueError(f"max_pool must be one of {self.MAX_POOL}, not {max_pool!r}")
        self.rule, self.max_pool = rule, max_pool
        self.multiply_by_inputs = bool(multiply_by_inputs)
        if canonizers is None:
            canonizers = default_canonizers() if rule == "reveal_cancel" else ()
        self.canonizers = tuple(canonizers)

    def attribute(self, inputs: Tensor, target=None, *, reference="black", generator=None,
                  return_delta=False):  # fmt: skip
        """Contributions ``(B, ...)`` (multipliers with ``multiply_by_inputs=False``); with
        ``return_delta`` also ``(B,)`` ``Σ_i C_i − (t(x) − t(x⁰))`` (0 up to rounding; always
        of the contributions). ``reference``: see the module docstring; ``generator``: a
        ``torch.Generator`` or seed for a random one."""
        objective = resolve_target(self.model, inputs, target)
        ref = reference_for(reference, inputs, self.info, generator)
        b = inputs.shape[0]
        both = torch.cat([inputs.detach(), ref]).requires_grad_(True)
        policy = _DeepLiftPolicy(self.rule, b, self.max_pool)
        if policy.parts is not None:
            policy.parts.input = both  # its parts: the signs of Δx
        with canonized(self.model, inputs, self.canonizers):
            acts = hooks.run(self.model, both, objective.layers, policy)
            ax, ar = _split_acts(acts, b)
            sx = objective(ax)
            with torch.no_grad():
                sr = objective(ar).detach()
            (g,) = torch.autograd.grad(sx.sum(), both)
        contributions = (inputs.detach() - ref) * g[:b]
        attr = contributions if self.multiply_by_inputs else g[:b]
        if not return_delta:
            return attr
        return attr, item_sums(contributions) - (sx.detach() - sr)
