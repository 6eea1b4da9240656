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
ReLU of :mod:`fvis.redirect` run in this light mode. Linear operations reach
``Policy.linear`` described by the classes a policy names in ``Policy.calls`` (the rule
algebra, :mod:`fvis.attribution.algebra`), which recompute them with modified weights.

Kinds of operation and what the policies do with them:

==============  ===========================================  ============================
kind            operations                                   used by
==============  ===========================================  ============================
activation      relu, relu6/hardtanh, sigmoid, tanh, silu,   Guided/Deconvnet (rectifiers
                gelu, elu, leaky_relu, ... (elementwise)     only), DeepLIFT, LRP (pass)
max_pool        max_pool1-3d, adaptive_max_pool1-3d          DeepLIFT (others: gradient,
                                                             i.e. winner takes all)
linear          conv1-3d, conv_transpose1-3d, linear         LRP rules, RevealCancel
pool            avg_pool1-3d, adaptive_avg_pool1-3d, mean    LRP rules, RevealCancel
                and sum over non-batch dimensions
sum             ``a + b``, ``a - b`` of two activations      LRP (proportional split),
                                                             RevealCancel
scale           ``a * c``, ``a / c``, ``a + c``, ``-a`` for  LRP (pass)
                a constant ``c``
batch_norm      ``F.batch_norm``                             LRP (pass)
layer_norm      ``F.layer_norm``                             LRP (LN-rule), DeepLIFT
softmax         ``F.softmax``, ``Tensor.softmax``            LRP (AH-rule), DeepLIFT
matmul          ``@``, ``matmul``, ``bmm``, two-operand      LRP rules, RevealCancel
                ``einsum``: with a constant factor a         (constant factor); LRP,
                linear operation, of two activations a       DeepLIFT (products)
                *product*, as is ``a * b``
attention       ``F.scaled_dot_product_attention``,          policies acting on softmax
                ``F.multi_head_attention_forward``           or products: written out
neutral         reshaping, indexing, ``cat``, ``roll``,      nobody (gradient is right)
                dropout, ...
==============  ===========================================  ============================

Fused attention is run as written out in :mod:`fvis.hooks.attention` (projections,
``q kᵀ``, softmax, ``A v``) with the interceptor active, so the policy sees its parts.

An *activation* here is a tensor that depends on the input (requires grad; the interceptor
detaches parameters, so nothing else does). A policy with ``strict = True`` (DeepLIFT, LRP)
refuses any other differentiable operation on activations, such as a quotient of two
activations or a group norm, and a layer norm, softmax or product of activations that its
hook declines (returns ``None`` for), with an :class:`UnsupportedOperation` naming the
operation and the module that ran it, instead of silently propagating a plain gradient through it.
TorchScript modules run outside Python and cannot be intercepted; they are refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from fvis.hooks import attention

if TYPE_CHECKING:
    from fvis.hooks.calls import CallTracker

__all__ = [
    "Interceptor",
    "LayerNorm",
    "LinearCalls",
    "Op",
    "Policy",
    "UnsupportedOperation",
    "is_activation",
    "op_name",
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
_SIGNATURES = {f: inspect.signature(f) for f in [*_PY_ACT, F.softmax]}
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
    F.dropout3d, F.alpha_dropout, F.pad, _T.__setitem__, torch.roll, _T.roll, torch.swapaxes,
    _T.swapaxes, torch.swapdims, _T.swapdims, torch.movedim, _T.movedim, torch.moveaxis,
    _T.moveaxis,
}  # fmt: skip
# means and sums over given dimensions other than the batch: linear, like average pools
_REDUCE = {torch.mean, _T.mean, torch.sum, _T.sum}
_SOFTMAX = {F.softmax, torch.softmax, _T.softmax}
_MATMUL = {torch.matmul, _T.matmul, _T.__matmul__, torch.bmm, _T.bmm, torch.einsum}
# fused attention, run as written out in fvis.hooks.attention for policies acting on it
_ATTENTION = {F.scaled_dot_product_attention: attention.sdpa,
              F.multi_head_attention_forward: attention.mha}  # fmt: skip
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
for _f in _POOL | _REDUCE:
    _KIND[_f] = "pool"
for _f in _SUM:
    _KIND[_f] = "sum"
for _f in _SCALE:
    _KIND[_f] = "scale"
_KIND[F.batch_norm] = "batch_norm"
_KIND[F.layer_norm] = "layer_norm"
for _f in _SOFTMAX:
    _KIND[_f] = "softmax"
for _f in _MATMUL:
    _KIND[_f] = "matmul"
for _f in _ATTENTION:
    _KIND[_f] = "attention"
for _f in _NEUTRAL:
    _KIND[_f] = "neutral"


def is_activation(t) -> bool:
    """A tensor that depends on the attributed input (requires grad; not a parameter)."""
    return isinstance(t, Tensor) and t.requires_grad and not isinstance(t, nn.Parameter)


def tensors_in(obj) -> Iterator[Tensor]:
    """The tensors in ``obj``, also inside lists, tuples and dicts (any depth)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors_in(o)


def _detached(obj):
    """``obj`` with an ``nn.Parameter`` (also one in a list or tuple) detached: within the
    interceptor only tensors that depend on the input require grad, without changing the
    parameters' flags, which other threads may rely on."""
    if type(obj) in _NOT_PARAMETERS:  # the common arguments, without the slow
        return obj  # Parameter metaclass check
    if isinstance(obj, nn.Parameter):
        return obj.detach()
    if isinstance(obj, (list, tuple)) and any(_is_parameter(o) for o in obj):
        return type(obj)(o.detach() if _is_parameter(o) else o for o in obj)
    return obj


_NOT_PARAMETERS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device})


def _is_parameter(o) -> bool:
    return type(o) not in _NOT_PARAMETERS and isinstance(o, nn.Parameter)


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


class LayerNorm(NamedTuple):
    """The arguments of ``F.layer_norm`` after its input: ``y = (x − μ)/√(σ² + eps) · weight +
    bias`` over the trailing ``normalized_shape`` dimensions."""

    normalized_shape: tuple[int, ...]
    weight: Tensor | None
    bias: Tensor | None
    eps: float

    def __call__(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class LinearCalls(NamedTuple):
    """How a policy wants intercepted linear operations described to :meth:`Policy.linear`:
    ``weighted(func, weight, bias, args, kwargs)`` for a convolution or ``F.linear``,
    ``pool(func, args, kwargs)`` for an average pool, ``sum(coeffs, shape)`` for a sum of
    activations, ``product(f, const, first)`` for ``f(const, x)`` (``first``) or
    ``f(x, const)``, a product (``@``, ``*``) with one constant factor (the rule algebra's
    classes, :mod:`fvis.attribution.algebra`)."""

    weighted: Callable
    pool: Callable
    sum: Callable
    product: Callable


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
    #: the descriptions of linear operations :meth:`linear` receives; ``None``: linear
    #: operations run untouched
    calls: LinearCalls | None = None
    interceptor: Interceptor | None = None  # set by :func:`fvis.hooks.run`

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
        """``pool(t)`` returns ``(values, flat spatial indices)`` of the max pool;
        ``pool.func`` and ``pool.options`` are the call without its input."""
        return None

    def linear(self, op: Op, call, inputs: list[Tensor]):
        return None

    def batch_norm(self, op: Op, x: Tensor, f: Callable):
        return None

    def scale(self, op: Op, x: Tensor, f: Callable):
        """``f(x)`` multiplies/divides ``x`` by, or adds, a constant."""
        return None

    def layer_norm(self, op: Op, x: Tensor, norm: LayerNorm):
        """``F.layer_norm(x, *norm)``; ``None`` runs it (a strict policy: refuses it)."""
        return None

    def softmax(self, op: Op, z: Tensor, dim: int, f: Callable):
        """``f(z) = softmax(z, dim)``; ``None`` runs it (a strict policy: refuses it)."""
        return None

    def product(self, op: Op, a: Tensor, b: Tensor, f: Callable):
        """``f(a, b)``, ``a * b`` or ``a @ b`` of two activations; ``None`` runs it (a strict
        policy: refuses it)."""
        return None

    def alias(self, src: Tensor, dst: Tensor) -> None:
        """An in-place operation copied ``src`` into ``dst``; ``dst`` now stands for it."""

    def neutral(self, op: Op, args: tuple, kwargs: dict, out) -> None:
        """A reshaping, indexing or concatenation ``out = op.func(*args, **kwargs)`` ran on
        activations (``out`` is ``None`` for ``__setitem__``, which wrote into ``args[0]``);
        for a policy that carries something through it."""


class Interceptor(TorchFunctionMode):
    """Routes every torch operation of a forward pass to a :class:`Policy` (see the module
    docstring). ``bounds[id(t)] = (t, low, high)`` carries the value range of the model input
    through neutral and scaling operations when ``policy.track_bounds``."""

    def __init__(self, policy: Policy, tracker: CallTracker | None):
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
        args = tuple(_detached(a) for a in args)
        kwargs = {k: _detached(v) for k, v in kwargs.items()} if kwargs else {}
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
            "elementwise activations, BatchNorm in eval mode, max-pool, layer norm and "
            "attention (LRP, DeepLIFT Rescale), and reshaping, indexing and concatenation. "
            "Use a gradient method (e.g. IntegratedGradients) or Guided Backprop for this "
            "model."
        )

    def _check_unknown(self, func, args, kwargs, out):
        acts = [t for t in tensors_in((args, kwargs)) if is_activation(t)]
        if not acts:
            return
        name = getattr(func, "__name__", "")
        writes = name.endswith("_") and not name.endswith("__")  # in place, no tensor out
        if writes or any(t.requires_grad for t in tensors_in(out)):
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

        pool.func, pool.options = func, kw  # the window geometry (fvis.attribution.pooling)
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
        if not is_activation(x) or self.policy.calls is None:
            return func(x, w, b, *args[3:], **kwargs)
        call = self.policy.calls.weighted(func, w, b, tuple(args[3:]), kwargs)
        out = self.policy.linear(op, call, [x])
        return call.forward([x]) if out is None else out

    def _pool(self, func, args, kwargs):
        x, rest = args[0], args[1:]
        if not is_activation(x) or self.policy.calls is None:
            return func(*args, **kwargs)
        if func in _REDUCE:
            dim = rest[0] if rest else kwargs.get("dim")
            dims = (dim,) if isinstance(dim, int) else tuple(dim or ())
            if not dims or any(d % x.dim() == 0 for d in dims):  # over the batch: items mix
                return self._unknown_call(func, args, kwargs)
        call = self.policy.calls.pool(func, tuple(rest), dict(kwargs))
        out = self.policy.linear(self._op(func, source=x), call, [x])
        return func(*args, **kwargs) if out is None else out

    def _sum(self, func, args, kwargs):
        sign, outofplace, inplace = _SUM[func]
        if not any(is_activation(t) for t in tensors_in((args, kwargs))):
            return func(*args, **kwargs)
        kwargs = dict(kwargs)
        a, b = args[0], (args[1] if len(args) > 1 else kwargs.pop("other"))
        alpha = kwargs.pop("alpha", 1)
        if kwargs or len(args) > 2:  # e.g. out=
            return self._unknown_call(func, args, kwargs)
        if is_activation(a) and is_activation(b):
            shape = torch.broadcast_shapes(a.shape, b.shape)
            if (inplace and shape != a.shape) or self.policy.calls is None:
                return func(*args, **kwargs)
            call = self.policy.calls.sum((1.0, float(sign * alpha)), shape[1:])
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
            if outofplace is torch.mul and not inplace:
                return self._product(func, a, b, torch.mul)
            return self._unknown_call(func, args, kwargs)  # a quotient or in-place product
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

    def _layer_norm(self, func, args, kwargs):
        bound = inspect.signature(F.layer_norm).bind(*args, **kwargs)
        x = bound.arguments.pop("input")
        if not is_activation(x):
            return func(*args, **kwargs)
        a = bound.arguments
        norm = LayerNorm(tuple(a["normalized_shape"]), a.get("weight"), a.get("bias"),
                         float(a.get("eps", 1e-5)))  # fmt: skip
        out = self.policy.layer_norm(self._op(func, source=x), x, norm)
        return self._unknown_call(func, args, kwargs) if out is None else out

    def _softmax(self, func, args, kwargs):
        if func is F.softmax:
            kw = dict(_SIGNATURES[F.softmax].bind(*args, **kwargs).arguments)
            kw.pop("_stacklevel", None)
            z, rest = kw.pop("input"), []
        else:
            kw = dict(kwargs)
            z, rest = (args[0], list(args[1:])) if args else (kw.pop("input"), [])
        dim = rest.pop(0) if rest else kw.pop("dim", None)
        dtype = rest.pop(0) if rest else kw.pop("dtype", None)
        if not is_activation(z):
            return func(*args, **kwargs)
        if dim is None or rest or any(v is not None for v in kw.values()):
            return self._unknown_call(func, args, kwargs)

        def f(t, dim=dim, dtype=dtype):  # dtype: a cast first (Hugging Face's float32)
            return torch.softmax(t if dtype is None else t.to(dtype), dim)

        out = self.policy.softmax(self._op(func, source=z), z, dim, f)
        return self._unknown_call(func, args, kwargs) if out is None else out

    def _matmul(self, func, args, kwargs):
        f, operands = torch.matmul, args
        if func is torch.einsum and args and isinstance(args[0], str):
            ops = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]

            def f(a, b, equation=args[0]):
                return torch.einsum(equation, a, b)

            operands = tuple(ops)
        if len(operands) != 2 or kwargs:
            return self._unknown_call(func, args, kwargs)
        a, b = operands
        if is_activation(a) and is_activation(b):
            return self._product(func, a, b, f)
        if not (is_activation(a) or is_activation(b)) or self.policy.calls is None:
            return func(*args)
        first = not is_activation(a)  # the constant is the first factor
        x, const = (b, a) if first else (a, b)
        call = self.policy.calls.product(f, const, first)
        out = self.policy.linear(self._op(func, source=x), call, [x])
        return call.forward([x]) if out is None else out

    def _product(self, func, a, b, f):
        out = self.policy.product(self._op(func, source=a), a, b, f)
        return self._unknown_call(func, (a, b), {}) if out is None else out

    def _attention(self, func, args, kwargs):
        if not any(is_activation(t) for t in tensors_in((args, kwargs))):
            return func(*args, **kwargs)
        try:
            with self:  # the written-out form's operations reach the policy
                return _ATTENTION[func](*args, **kwargs)
        except NotImplementedError as e:
            if not self.policy.strict:
                return func(*args, **kwargs)
            self._refuse(self._op(func), f"it is written out only without {e}")

    def _neutral(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if any(is_activation(t) for t in tensors_in(args)):
            self.policy.neutral(self._op(func), args, kwargs, out)
        if self.policy.track_bounds and isinstance(out, Tensor) and func in _BOUNDS_THROUGH:
            tracked = [t for t in tensors_in(args) if is_activation(t)]
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
