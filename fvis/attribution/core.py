"""Modified backward passes: the one mechanism behind Deconvnet, Guided Backprop, DeepLIFT
and LRP.

While an attribution runs the model forward, an :class:`Interceptor` (a
``torch.overrides.TorchFunctionMode``) sees every torch operation the model performs.
Module calls (``nn.ReLU`` calls ``F.relu``) and functional calls (``F.relu`` inside a
``forward``, as torchvision's GoogLeNet and DenseNet do) are caught alike, and a module
that runs twice (ResNet's ``BasicBlock.relu``) is seen once per call. Each operation is
classified (``_KIND``) and handed to the method's :class:`Policy`, which may replace it
by a ``torch.autograd.Function`` with the same forward value and the method's rule as its
backward. In-place operations (``ReLU(inplace=True)``, ``out += identity``) are run out of
place on a clone and copied back, so a rule never sees a tensor that changed under it.

A policy that acts on few kinds says so (``Policy.kinds``; the rest run untouched) and may
do without module names (``Policy.modules = False``: no hooks). Plain ReLU has a fast
path (``Policy.relu``) without the clone: Guided Backprop, Deconvnet and the redirected
ReLU of :mod:`fvis.redirect` run in this light mode.

Kinds of operation and what the policies do with them:

==============  ===========================================  ============================
kind            operations                                   used by
==============  ===========================================  ============================
activation      relu, relu6/hardtanh, sigmoid, tanh, silu,   Guided/Deconvnet (ReLU-like
                gelu, elu, leaky_relu, ... (elementwise)     only), DeepLIFT, LRP (pass)
max_pool        max_pool1-3d, adaptive_max_pool1-3d          DeepLIFT (others: gradient,
                                                             i.e. winner takes all)
linear          conv1-3d, conv_transpose1-3d, linear         LRP rules, RevealCancel
pool            avg_pool1-3d, adaptive_avg_pool1-3d          LRP rules, RevealCancel
sum             ``a + b``, ``a - b`` of two activations      LRP (proportional split),
                                                             RevealCancel
scale           ``a * c``, ``a / c``, ``a + c``, ``-a`` for  LRP (pass)
                a constant ``c``
batch_norm      ``F.batch_norm``                             LRP (pass)
neutral         reshaping, indexing, ``cat``, dropout, ...   nobody (gradient is right)
==============  ===========================================  ============================

An *activation* here is a tensor that depends on the input (requires grad; parameters are
frozen while the model runs). A policy with ``strict = True`` (DeepLIFT, LRP) refuses any
other differentiable operation on activations, such as a product of two activations or a
layer norm, with an :class:`UnsupportedOperation` naming the operation and the module that
ran it, instead of silently propagating a plain gradient through it. TorchScript modules
run outside Python and cannot be intercepted; they are refused.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from fvis import hooks

__all__ = [
    "UnsupportedOperation",
    "Op",
    "Policy",
    "Interceptor",
    "LinearCall",
    "WeightedCall",
    "PoolCall",
    "SumCall",
    "POS",
    "NEG",
    "IDENTITY",
    "frozen",
    "run",
    "input_gradient",
    "is_activation",
    "local_derivative",
    "check_eval",
]


class UnsupportedOperation(RuntimeError):
    """An operation the attribution method has no rule for (raised, never approximated)."""


# ---------------------------------------------------------------- classification tables
_T = Tensor

_PLAIN_RELU = {F.relu, torch.relu, torch.relu_, _T.relu, _T.relu_}
_RELU_FUNCS = _PLAIN_RELU | {F.relu6}
_INPLACE_RELU = {torch.relu_, _T.relu_}
# Python functionals: the signature tells where `inplace` is.
_PY_ACT = [
    F.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.selu, F.celu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh,
]  # fmt: skip
_SIGNATURES = {f: inspect.signature(f) for f in _PY_ACT}
# Builtins: (out-of-place equivalent, in place?).
_BUILTIN_ACT = {
    torch.relu: (torch.relu, False),
    torch.relu_: (torch.relu, True),
    _T.relu: (torch.relu, False),
    _T.relu_: (torch.relu, True),
    torch.sigmoid: (torch.sigmoid, False),
    torch.sigmoid_: (torch.sigmoid, True),
    _T.sigmoid: (torch.sigmoid, False),
    _T.sigmoid_: (torch.sigmoid, True),
    torch.tanh: (torch.tanh, False),
    torch.tanh_: (torch.tanh, True),
    _T.tanh: (torch.tanh, False),
    _T.tanh_: (torch.tanh, True),
    F.hardtanh_: (F.hardtanh, True),
    F.leaky_relu_: (F.leaky_relu, True),
    F.elu_: (F.elu, True),
    F.gelu: (F.gelu, False),
    F.softplus: (F.softplus, False),
    F.logsigmoid: (F.logsigmoid, False),
}

# max pools: the names of their arguments after `input`
_MAX_POOL = {
    F.max_pool1d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    F.max_pool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    F.max_pool3d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    F.adaptive_max_pool1d: ("output_size", "return_indices"),
    F.adaptive_max_pool2d: ("output_size", "return_indices"),
    F.adaptive_max_pool3d: ("output_size", "return_indices"),
}
_CONV = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}
_POOL = {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
}  # fmt: skip
# (sign of the second operand, out-of-place equivalent, in place?)
_SUM = {
    torch.add: (1, torch.add, False),
    _T.add: (1, torch.add, False),
    _T.__add__: (1, torch.add, False),
    _T.__radd__: (1, torch.add, False),
    _T.add_: (1, torch.add, True),
    _T.__iadd__: (1, torch.add, True),
    torch.sub: (-1, torch.sub, False),
    _T.sub: (-1, torch.sub, False),
    _T.__sub__: (-1, torch.sub, False),
    _T.sub_: (-1, torch.sub, True),
    _T.__isub__: (-1, torch.sub, True),
}
_SCALE = {
    torch.mul: (torch.mul, False),
    _T.mul: (torch.mul, False),
    _T.__mul__: (torch.mul, False),
    _T.__rmul__: (torch.mul, False),
    _T.mul_: (torch.mul, True),
    _T.__imul__: (torch.mul, True),
    torch.div: (torch.div, False),
    _T.div: (torch.div, False),
    _T.__truediv__: (torch.div, False),
    _T.div_: (torch.div, True),
    _T.__itruediv__: (torch.div, True),
    torch.neg: (torch.neg, False),
    _T.neg: (torch.neg, False),
    _T.__neg__: (torch.neg, False),
    _T.__rsub__: (_T.__rsub__, False),
}
_NEUTRAL = {
    torch.flatten, _T.flatten, torch.unflatten, _T.unflatten, _T.view, _T.view_as,
    torch.reshape, _T.reshape, _T.reshape_as, torch.permute, _T.permute,
    torch.transpose, _T.transpose, _T.t, _T.contiguous, torch.clone, _T.clone,
    torch.cat, torch.concat, torch.concatenate, torch.stack, torch.split, _T.split,
    torch.chunk, _T.chunk, torch.unbind, _T.unbind, _T.__getitem__, torch.squeeze,
    _T.squeeze, torch.unsqueeze, _T.unsqueeze, torch.narrow, _T.narrow, torch.select,
    _T.select, _T.expand, _T.expand_as, _T.repeat, _T.to, _T.float, _T.double, _T.half,
    _T.type_as, _T.cpu, _T.detach, torch.detach, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.alpha_dropout, F.pad, _T.__setitem__,
}  # fmt: skip
# neutral operations through which the model input's bounds are carried (elementwise or
# reordering; value ranges map to value ranges)
_BOUNDS_THROUGH = _NEUTRAL - {torch.stack, torch.split, _T.split, torch.chunk, _T.chunk,
                              torch.unbind, _T.unbind, F.pad, _T.__setitem__}  # fmt: skip

_KIND: dict[Callable, str] = {}
for _f in list(_SIGNATURES) + list(_BUILTIN_ACT):
    _KIND[_f] = "activation"
for _f in _MAX_POOL:
    _KIND[_f] = "max_pool"
for _f in _CONV | {F.linear}:
    _KIND[_f] = "linear"
for _f in _POOL:
    _KIND[_f] = "pool"
for _f in _SUM:
    _KIND[_f] = "sum"
for _f in _SCALE:
    _KIND[_f] = "scale"
_KIND[F.batch_norm] = "batch_norm"
for _f in _NEUTRAL:
    _KIND[_f] = "neutral"


def is_activation(t) -> bool:
    """A tensor that depends on the attributed input (requires grad; not a parameter)."""
    return isinstance(t, Tensor) and t.requires_grad and not isinstance(t, nn.Parameter)


def _tensors(obj) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _replace(obj, table: dict[int, Tensor]):
    """``obj`` with every tensor whose id is in ``table`` replaced."""
    if isinstance(obj, Tensor):
        return table.get(id(obj), obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace(o, table) for o in obj)
    return obj


def op_name(func) -> str:
    """A readable name for a torch function: ``F.relu``, ``Tensor.mul``, ``torch.cat``."""
    name = getattr(func, "__name__", None) or repr(func)
    if getattr(F, name, None) is func:
        return f"F.{name}"
    if getattr(_T, name, None) is func:
        return f"Tensor.{name}"
    if getattr(torch, name, None) is func:
        return f"torch.{name}"
    return name


# ---------------------------------------------------------------- linear operations
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
    ``kind`` is ``"conv"``, ``"linear"``, ``"pool"`` or ``"sum"``. ``bounds`` is set by a
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


# ---------------------------------------------------------------- policies and the mode
@dataclass
class Op:
    """One intercepted operation: the function, the innermost module running it (dotted
    name, ``":k"`` for the k-th call of a module that runs several times, ``""`` for the
    model itself), whether it was in place and the tensor it was applied to."""

    func: Callable
    name: str
    module: nn.Module | None
    inplace: bool = False
    source: Tensor | None = None

    @property
    def where(self) -> str:
        kind = type(self.module).__name__ if self.module is not None else "?"
        return f"module {self.name or '<model>'!r} ({kind})"


class Policy:
    """What one attribution method does with each kind of operation.

    Each hook returns a replacement result (normally from a custom autograd Function) or
    ``None`` to run the operation unchanged. ``strict`` policies refuse unknown
    differentiable operations on activations (see the module docstring).
    """

    strict = False
    method = "this method"
    track_bounds = False
    #: the kinds of operation the policy acts on; the others run untouched, unclassified
    kinds: frozenset[str] = frozenset(_KIND.values())
    #: whether ops need the module running them (``Op.name``, ``Op.module``): costs a pair
    #: of hooks on every module
    modules = True
    interceptor: Interceptor | None = None  # set by :func:`run`

    def relu(self, z: Tensor, inplace: bool):
        """Fast path for plain ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu(_)``): ``z`` is
        neither cloned nor copied back, so a policy that implements this applies ReLU to
        ``z`` itself when ``inplace`` (never asked for a leaf). ``None``: the general
        :meth:`activation` path."""
        return None

    def activation(self, op: Op, z: Tensor, f: Callable, relu_like: bool):
        """Elementwise ``y = f(z)``; ``relu_like`` for ReLU, ReLU6 and Hardtanh(0, ·)."""
        return None

    def max_pool(self, op: Op, z: Tensor, pool: Callable):
        """``pool(t)`` returns ``(values, flat spatial indices)`` of the max pool."""
        return None

    def linear(self, op: Op, call: LinearCall, inputs: list[Tensor]):
        return None

    def batch_norm(self, op: Op, x: Tensor, f: Callable):
        return None

    def scale(self, op: Op, x: Tensor, f: Callable):
        """``f(x)`` multiplies/divides ``x`` by, or adds, a constant."""
        return None

    def alias(self, src: Tensor, dst: Tensor) -> None:
        """An in-place operation copied ``src`` into ``dst``; ``dst`` now stands for it."""


class _Tracker:
    """Keeps the stack of running modules (forward pre-hook pushes, forward hook pops)."""

    def __init__(self, model: nn.Module, x: Tensor):
        tr = hooks.trace(model, x)  # before any hook: per-module call counts, cached
        self.multi = {n for n, calls in tr.calls.items() if len(calls) > 1}
        self.names: dict[int, str] = {}
        self.modules: list[nn.Module] = []
        for n, m in model.named_modules():
            self.names.setdefault(id(m), n)
            self.modules.append(m)
        self.counts: Counter = Counter()
        self.stack: list[tuple[str, nn.Module]] = []

    def pre(self, module, inputs):
        n = self.names[id(module)]
        k = self.counts[n]
        self.counts[n] += 1
        self.stack.append((f"{n}:{k}" if n in self.multi else n, module))

    def post(self, module, inputs, output):
        if self.stack:
            self.stack.pop()

    def current(self) -> tuple[str, nn.Module | None]:
        return self.stack[-1] if self.stack else ("", None)


class Interceptor(TorchFunctionMode):
    """Routes every torch operation of a forward pass to a :class:`Policy` (see the module
    docstring). ``bounds[id(t)] = (t, low, high)`` carries the value range of the model input
    through neutral and scaling operations when ``policy.track_bounds``."""

    def __init__(self, policy: Policy, tracker: _Tracker | None):
        super().__init__()
        self.policy, self.tracker = policy, tracker
        self.bounds: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def bounds_of(self, t: Tensor) -> tuple[Tensor, Tensor] | None:
        entry = self.bounds.get(id(t))
        return (entry[1], entry[2]) if entry is not None and entry[0] is t else None

    def _op(self, func, inplace=False, source=None) -> Op:
        name, module = self.tracker.current() if self.tracker is not None else ("", None)
        return Op(func, name, module, inplace, source)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _KIND.get(func)
        if kind is None:
            out = func(*args, **kwargs)
            if self.policy.strict:
                self._check_unknown(func, args, kwargs, out)
            return out
        if kind not in self.policy.kinds:
            return func(*args, **kwargs)
        return getattr(self, "_" + kind)(func, args, kwargs)

    # -- helpers
    def _refuse(self, op: Op, why: str):
        raise UnsupportedOperation(
            f"{self.policy.method} cannot propagate through {op_name(op.func)} in {op.where}: "
            f"{why}. Supported: conv/linear/average-pool layers, sums of activations, "
            "elementwise activations, BatchNorm in eval mode, max-pool, and reshaping, "
            "indexing and concatenation. Use a gradient method (e.g. IntegratedGradients) or "
            "Guided Backprop for this model."
        )

    def _check_unknown(self, func, args, kwargs, out):
        acts = [t for t in _tensors((args, kwargs)) if is_activation(t)]
        if not acts:
            return
        name = getattr(func, "__name__", "")
        writes = name.endswith("_") and not name.endswith("__")  # in place, no tensor out
        if writes or any(t.requires_grad for t in _tensors(out)):
            self._refuse(self._op(func), "it has no rule for this operation")

    def _inplace(self, target: Tensor, result: Tensor) -> Tensor:
        target.copy_(result)
        self.policy.alias(result, target)
        return target

    # -- kinds
    def _activation(self, func, args, kwargs):
        if func in _PLAIN_RELU:
            z = args[0] if args else kwargs["input"]
            inplace = func in _INPLACE_RELU or bool(kwargs.get("inplace", args[1:2] == (True,)))
            # torch refuses in-place ops on a leaf that requires grad: general path
            fast = is_activation(z) and not (inplace and z.is_leaf)
            if fast and (out := self.policy.relu(z, inplace)) is not None:
                return out
        if func in _SIGNATURES:
            bound = _SIGNATURES[func].bind(*args, **kwargs)
            z = bound.arguments.pop("input")
            inplace = bool(bound.arguments.pop("inplace", False))
            rest = dict(bound.arguments)

            def f(t, rest=rest):
                return func(t, **rest)

            relu_like = func in _RELU_FUNCS or (func is F.hardtanh and rest.get("min_val") == 0)
        else:
            outofplace, inplace = _BUILTIN_ACT[func]
            z, rest_args = args[0], args[1:]

            def f(t, rest_args=rest_args):
                return outofplace(t, *rest_args, **kwargs)

            lo = rest_args[0] if rest_args else kwargs.get("min_val", -1.0)
            relu_like = func in _RELU_FUNCS or (func is F.hardtanh_ and lo == 0)
        if not is_activation(z):
            return func(*args, **kwargs)
        zin = z.clone() if inplace else z
        out = self.policy.activation(self._op(func, inplace, z), zin, f, relu_like)
        if out is None:
            return func(*args, **kwargs)
        return self._inplace(z, out) if inplace else out

    def _max_pool(self, func, args, kwargs):
        names = ("input", *_MAX_POOL[func])
        kw = dict(zip(names, args))
        kw.update(kwargs)
        z = kw.pop("input")
        if not is_activation(z):
            return func(*args, **kwargs)
        op = self._op(func, source=z)
        if kw.get("return_indices"):
            if self.policy.strict:
                self._refuse(op, "max-pool indices (return_indices=True) are not supported")
            return func(*args, **kwargs)
        kw.pop("return_indices", None)

        def pool(t, kw=kw):
            return func(t, **kw, return_indices=True)

        out = self.policy.max_pool(op, z, pool)
        return func(*args, **kwargs) if out is None else out

    def _linear(self, func, args, kwargs):
        kwargs = dict(kwargs)
        x = args[0] if args else kwargs.pop("input")
        w = args[1] if len(args) > 1 else kwargs.pop("weight")
        b = args[2] if len(args) > 2 else kwargs.pop("bias", None)
        op = self._op(func, source=x)
        if is_activation(w) or is_activation(b):
            if self.policy.strict:
                self._refuse(op, "its weights depend on the input")
            return func(*args, **kwargs) if args else func(x, w, b, **kwargs)
        if not is_activation(x):
            return func(x, w, b, *args[3:], **kwargs)
        call = WeightedCall(func, w, b, tuple(args[3:]), kwargs)
        out = self.policy.linear(op, call, [x])
        return call.forward([x]) if out is None else out

    def _pool(self, func, args, kwargs):
        x, rest = args[0], args[1:]
        if not is_activation(x):
            return func(*args, **kwargs)
        call = PoolCall(func, tuple(rest), dict(kwargs))
        out = self.policy.linear(self._op(func, source=x), call, [x])
        return func(*args, **kwargs) if out is None else out

    def _sum(self, func, args, kwargs):
        sign, outofplace, inplace = _SUM[func]
        if not any(is_activation(t) for t in _tensors((args, kwargs))):
            return func(*args, **kwargs)
        kwargs = dict(kwargs)
        a, b = args[0], (args[1] if len(args) > 1 else kwargs.pop("other"))
        alpha = kwargs.pop("alpha", 1)
        if kwargs or len(args) > 2:  # e.g. out=
            return self._unknown_call(func, args, kwargs)
        if is_activation(a) and is_activation(b):
            shape = torch.broadcast_shapes(a.shape, b.shape)
            if inplace and shape != a.shape:
                return func(*args, **kwargs)
            call = SumCall((1.0, float(sign * alpha)), shape[1:])
            inputs = [a.clone() if inplace else a, b]
            out = self.policy.linear(self._op(func, inplace, a), call, inputs)
            if out is None:
                out = outofplace(inputs[0], b, alpha=alpha)
            return self._inplace(a, out) if inplace else out
        return self._scale_impl(func, a, b, lambda t, u: outofplace(t, u, alpha=alpha), inplace)

    def _unknown_call(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if self.policy.strict:
            self._check_unknown(func, args, kwargs, out)
        return out

    def _scale(self, func, args, kwargs):
        outofplace, inplace = _SCALE[func]
        if len(args) == 1 and not kwargs:  # neg
            a, b = args[0], None
            return self._scale_impl(func, a, b, lambda t, u: outofplace(t), inplace)
        if len(args) != 2 or kwargs:
            return self._unknown_call(func, args, kwargs)
        a, b = args
        if is_activation(a) and is_activation(b):
            return self._unknown_call(func, args, kwargs)  # a product of activations
        if is_activation(b) and outofplace is torch.div:
            return self._unknown_call(func, args, kwargs)  # c / x is not linear in x
        return self._scale_impl(func, a, b, outofplace, inplace)

    def _scale_impl(self, func, a, b, outofplace, inplace):
        """``outofplace(a, b)`` with at most one of ``a``, ``b`` an activation; in place,
        the result is written into ``a``."""
        if is_activation(a):
            x, first = a, True
        elif is_activation(b):  # c * x, c + x, c += x
            x, first = b, False
        else:
            return func(a) if b is None else func(a, b)
        xin = x.clone() if (inplace and first) else x

        def f(t):
            return outofplace(t, b) if first else outofplace(a, t)

        out = self.policy.scale(self._op(func, inplace, x), xin, f)
        if out is None:
            out = f(xin)
        self._carry_bounds(f, xin, out)
        return self._inplace(a, out) if inplace else out

    def _batch_norm(self, func, args, kwargs):
        bound = inspect.signature(F.batch_norm).bind(*args, **kwargs)
        x = bound.arguments.pop("input")
        if not is_activation(x):
            return func(*args, **kwargs)
        op = self._op(func, source=x)
        if bound.arguments.get("training", False) and self.policy.strict:
            self._refuse(op, "BatchNorm in training mode normalizes by batch statistics; call "
                         "model.eval() first")  # fmt: skip
        rest = dict(bound.arguments)
        out = self.policy.batch_norm(op, x, lambda t: func(t, **rest))
        return func(*args, **kwargs) if out is None else out

    def _neutral(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if self.policy.track_bounds and isinstance(out, Tensor) and func in _BOUNDS_THROUGH:
            tracked = [t for t in _tensors(args) if is_activation(t)]
            if tracked and all(self.bounds_of(t) is not None for t in tracked):
                lo = {id(t): self.bounds_of(t)[0] for t in tracked}
                hi = {id(t): self.bounds_of(t)[1] for t in tracked}
                a = func(*_replace(args, lo), **kwargs)
                b = func(*_replace(args, hi), **kwargs)
                self.bounds[id(out)] = (out, torch.minimum(a, b), torch.maximum(a, b))
        return out

    def _carry_bounds(self, f, x, out):
        if self.policy.track_bounds and self.bounds_of(x) is not None:
            lo, hi = self.bounds_of(x)
            a, b = f(lo), f(hi)
            if a.shape == out.shape:
                self.bounds[id(out)] = (out, torch.minimum(a, b), torch.maximum(a, b))


# ---------------------------------------------------------------- drivers
@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad for the block (restored after, also on error), so
    that every tensor requiring grad depends on the attributed input."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def check_eval(model: nn.Module, method: str) -> None:
    """Refuse a model with a BatchNorm in training mode (checked before any forward pass,
    which would update its running statistics)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise UnsupportedOperation(
                f"{method} needs BatchNorm in eval mode, but module {name or '<model>'!r} "
                f"({type(m).__name__}) is in training mode, where it normalizes by batch "
                "statistics. Call model.eval() first."
            )


def _refuse_script(model: nn.Module, method: str) -> None:
    for name, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            raise UnsupportedOperation(
                f"{method} cannot hook TorchScript module {name or '<model>'!r}: its operations "
                "run outside Python. Pass the eager (un-scripted) nn.Module."
            )


def run(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[str],
    policy: Policy,
    *,
    bounds: tuple[Tensor, Tensor] | None = None,
) -> hooks.Activations:
    """Forward ``x`` under ``policy`` and capture ``layers`` (:func:`fvis.hooks.capture`).

    ``bounds`` = (low, high) broadcastable to ``x``: the value range of the input, carried
    through neutral and scaling operations to the first layers (for the zᴮ rule). All
    hooks are removed and parameter flags restored on exit, also on error.
    """
    _refuse_script(model, policy.method)
    tracker = _Tracker(model, x) if policy.modules else None
    mode = Interceptor(policy, tracker)
    policy.interceptor = mode
    if bounds is not None:
        lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device).expand_as(x) for b in bounds)
        mode.bounds[id(x)] = (x, lo, hi)
    with contextlib.ExitStack() as stack:
        stack.callback(mode.bounds.clear)
        stack.enter_context(frozen(model))
        if tracker is not None:
            pairs = [(m, tracker.pre) for m in tracker.modules]
            stack.enter_context(hooks.hooks_on(pairs, kind="forward_pre"))
            stack.enter_context(hooks.hooks_on((m, tracker.post) for m in tracker.modules))
        stack.enter_context(mode)
        return hooks.capture(model, x, layers)


def input_gradient(model: nn.Module, inputs: Tensor, objective, policy: Policy) -> Tensor:
    """``∂ objective / ∂ inputs`` with the backward modified by ``policy``: (B, ...) like
    ``inputs``. Each item's objective depends on its own input only."""
    x = inputs.detach().requires_grad_(True)
    acts = run(model, x, objective.layers, policy)
    s = objective(acts)
    (g,) = torch.autograd.grad(s.sum(), x)
    return g


def local_derivative(f: Callable, z: Tensor) -> Tensor:
    """``f'(z)`` of an elementwise function, by autograd."""
    with torch.enable_grad():
        t = z.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(f(t).sum(), t)
    return d
