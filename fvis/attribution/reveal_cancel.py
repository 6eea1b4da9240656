"""RevealCancel's positive and negative parts ``Δ⁺``, ``Δ⁻`` of every activation, carried
through the forward pass as the reference DeepLIFT carries them (its layers'
``pos_contribs``/``neg_contribs``; Shrikumar et al. 2017, section 3.5).

Each activation ``a`` of the ``2B`` batch (inputs, then references) gets two tensors shaped
like it, ``Δa⁺ + Δa⁻ = Δa`` in its first ``B`` rows and 0 in the reference rows. They are
built, only when a nonlinearity asks for them, from how ``a`` was made:

==========================  ====================================================
``a`` is                    ``Δa⁺``, ``Δa⁻``
==========================  ====================================================
the model input             ``max(Δx, 0)``, ``min(Δx, 0)``
conv / linear ``W u + b``   ``W⁺Δu⁺ + W⁻Δu⁻``, ``W⁻Δu⁺ + W⁺Δu⁻`` with ``Δu^±`` the
                            sign parts of the whole ``Δu`` (eq. 6-7, as the
                            reference's Dense/Conv layers)
average pool, reshaping,    the same operation applied to ``Δu⁺`` and to ``Δu⁻``
slicing, ``cat``, ``pad``   (zero for constant operands)
``Σ_k c_k u_k`` (residual)  ``Σ_k c_k Δu_k^±`` (``c_k < 0`` swaps the parts)
``α u + β`` (scaling,       ``α Δu^±`` where ``α ≥ 0``, ``α Δu^∓`` where ``α < 0``
BatchNorm in eval)
RevealCancel ``f(z)``       ``Δy⁺``, ``Δy⁻`` of the rule (eq. 17-18)
max pool                    the max-pool rule's linear map (multipliers λ or φ/Δz)
                            applied to ``Δz⁺`` and ``Δz⁻``
==========================  ====================================================

They are tensors in the autograd graph, so the multipliers ``m⁺``, ``m⁻`` of a nonlinearity
flow back along them to the conv/linear operation that made them, which turns them into
its inputs' multipliers (eq. 12-13). Where the parts cannot be carried (a value written
into an activation with ``__setitem__``, dropout in training mode, an activation of
unknown origin), a nonlinearity that needs them is refused, naming the operation.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor

from fvis import hooks
from fvis.attribution import algebra

__all__ = ["LinearParts", "Parts", "RevealCancel", "padded", "rescale_multiplier"]

_EPS = 1e-10  # |Δz| below this: use the derivative (captum uses the same threshold)
_T = Tensor
_DROPOUT = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}


def padded(t: Tensor) -> Tensor:
    """``t`` (B, ...) as the first half of a 2B batch whose reference half is 0."""
    return torch.cat([t, torch.zeros_like(t)])


def rescale_multiplier(f, zx: Tensor, zr: Tensor, yx: Tensor, yr: Tensor) -> Tensor:
    """``Δy / Δz``, or ``f'(z)`` where ``|Δz| ≤ 1e-10``."""
    dz, dy = zx - zr, yx - yr
    safe = dz.abs() > _EPS
    return torch.where(safe, dy / torch.where(safe, dz, 1), algebra.local_derivative(f, zx))


class LinearParts(torch.autograd.Function):
    """``(Δz⁺, Δz⁻)`` of a conv/linear call from its input ``u`` (2B rows); backward: the
    input's multipliers from those of ``Δz⁺`` and ``Δz⁻`` (:meth:`LinearCall.split_backward`)."""

    @staticmethod
    def forward(ctx, call, b, u):
        d = u[:b] - u[b:]
        pos, neg = call.split([d])
        ctx.call, ctx.b = call, b
        ctx.save_for_backward(d)
        return padded(pos), padded(neg)

    @staticmethod
    def backward(ctx, gpos, gneg):
        (d,) = ctx.saved_tensors
        (g,) = ctx.call.split_backward([d], gpos[: ctx.b], gneg[: ctx.b])
        return None, None, padded(g)


class RevealCancel(torch.autograd.Function):
    """``y = f(z)`` with the RevealCancel multipliers (eq. 17-19): outputs ``y`` and
    ``(Δy⁺, Δy⁻)``; backward sends ``m⁺·(g_y + g_{Δy⁺})`` to ``Δz⁺`` and
    ``m⁻·(g_y + g_{Δy⁻})`` to ``Δz⁻``, nothing to ``z``."""

    @staticmethod
    def forward(ctx, f, b, z, pos, neg):
        y = f(z)
        zx, r, yx, yr = z[:b], z[b:], y[:b], y[b:]
        dpos, dneg = pos[:b], neg[:b]
        fp, fn = f(r + dpos), f(r + dneg)
        ypos = 0.5 * (fp - yr) + 0.5 * (yx - fn)
        yneg = 0.5 * (fn - yr) + 0.5 * (yx - fp)
        m = rescale_multiplier(f, zx, r, yx, yr)
        sp, sn = dpos.abs() > _EPS, dneg.abs() > _EPS
        mpos = torch.where(sp, ypos / torch.where(sp, dpos, 1), m)
        mneg = torch.where(sn, yneg / torch.where(sn, dneg, 1), m)
        ctx.b = b
        ctx.save_for_backward(mpos, mneg)
        return y, padded(ypos), padded(yneg)

    @staticmethod
    def backward(ctx, gy, gpos, gneg):
        mpos, mneg = ctx.saved_tensors
        b = ctx.b
        gp, gn = mpos * (gy[:b] + gpos[:b]), mneg * (gy[:b] + gneg[:b])
        return None, None, torch.zeros_like(gy), padded(gp), padded(gn)


def _is_float(t) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point()


class Parts:
    """The table of ``(Δ⁺, Δ⁻)`` recipes of one forward pass (module docstring): ``put``
    records how an activation was made, ``get`` builds (once) and returns its parts."""

    def __init__(self, b: int, method: str):
        self.b, self.method = b, method
        self.input: Tensor | None = None
        self.table: dict[int, list] = {}

    def put(self, t: Tensor, recipe) -> None:
        """``recipe()`` → ``(Δt⁺, Δt⁻)``, or a string: why they cannot be carried."""
        self.table[id(t)] = [t, recipe, None]

    def alias(self, src: Tensor, dst: Tensor) -> None:
        entry = self.table.pop(id(src), None)
        self.table.pop(id(dst), None)
        if entry is not None and entry[0] is src:
            self.table[id(dst)] = [dst, entry[1], entry[2]]

    def ref(self, t: Tensor, where: str):
        """A thunk for ``t``'s parts as ``t`` stands now (an in-place operation may later
        give ``t`` a new recipe that reads the old one)."""
        entry = self.table.get(id(t))
        if entry is None or entry[0] is not t:
            if t is self.input:
                d = t[: self.b] - t[self.b :]
                return lambda: (padded(d.clamp(min=0)), padded(d.clamp(max=0)))
            return lambda: self._refuse(
                where, "its input was made by an operation without a rule for them"
            )

        def build():
            if isinstance(entry[1], str):
                self._refuse(where, entry[1])
            if entry[2] is None:
                entry[2] = entry[1]()
            return entry[2]

        return build

    def get(self, t: Tensor, where: str) -> tuple[Tensor, Tensor]:
        return self.ref(t, where)()

    def _refuse(self, where: str, why: str):
        raise hooks.UnsupportedOperation(
            f"{self.method} cannot carry the positive and negative parts of Δ to the "
            f"nonlinearity in {where}: {why}. Use rule='rescale' for this model."
        )

    # -- recipes
    def linear(self, op, call, inputs: list[Tensor], out: Tensor) -> None:
        if call.kind in ("conv", "linear"):
            self.put(out, lambda: LinearParts.apply(call, self.b, inputs[0]))
            return
        srcs = [self.ref(op.source if (op.inplace and k == 0) else a, op.where)
                for k, a in enumerate(inputs)]  # fmt: skip
        if call.kind == "pool":  # positive weights: each part pooled

            def pooled():
                pos, neg = srcs[0]()
                return call.forward([pos], bias=False), call.forward([neg], bias=False)

            self.put(out, pooled)
        else:  # sum Σ c_k u_k

            def summed():
                pos = neg = 0
                for k, src in enumerate(srcs):
                    p, n = src()
                    if call.coeffs[k] < 0:
                        p, n = n, p
                    pos, neg = pos + call.part(k, p), neg + call.part(k, n)
                return pos, neg

            self.put(out, summed)

    def affine(self, op, f, out: Tensor) -> None:
        """``out = f(x) = α x + β`` elementwise (scaling, shifting, BatchNorm in eval)."""
        x, src = op.source, self.ref(op.source, op.where)

        def scaled():
            with torch.no_grad():
                alpha = f(torch.ones_like(x)) - f(torch.zeros_like(x))
            pos, neg = src()
            up = alpha >= 0
            return (torch.where(up, alpha * pos, alpha * neg),
                    torch.where(up, alpha * neg, alpha * pos))  # fmt: skip

        self.put(out, scaled)

    def mapped(self, op, z: Tensor, fn, out: Tensor) -> None:
        """``out``'s parts are ``fn`` (a linear map, 2B rows to 2B rows) of ``z``'s."""

        src = self.ref(z, op.where)

        def apply():
            pos, neg = src()
            return fn(pos), fn(neg)

        self.put(out, apply)

    def neutral(self, op, args: tuple, kwargs: dict, out) -> None:
        """Reshaping, indexing, concatenation, padding: the same call on each part, with
        0 for constant operands."""
        func = op.func
        if func is _T.__setitem__:
            target = args[0]
            self.put(target, f"{hooks.op_name(func)} in {op.where} wrote into it")
            return
        if func in _DROPOUT and _dropout_training(func, args, kwargs):
            why = f"{hooks.op_name(func)} in {op.where} drops at random (training mode)"
            for t in _outputs(out):
                self.put(t, why)
            return
        if func is F.pad:
            bound = inspect.signature(F.pad).bind(*args, **kwargs)
            bound.arguments["value"] = 0.0  # the padding has Δ = 0
            args, kwargs = bound.args, bound.kwargs

        refs: dict[int, object] = {}  # each activation's parts as it stands now
        _map((args, kwargs), lambda t: hooks.is_activation(t)
             and refs.setdefault(id(t), self.ref(t, op.where)))  # fmt: skip

        def parts(k: int | None):
            def part(which):
                def sub(t):
                    if id(t) in refs and hooks.is_activation(t):
                        return refs[id(t)]()[which]
                    return torch.zeros_like(t) if _is_float(t) else t

                res = func(*_map(args, sub), **_map(kwargs, sub))
                return res if k is None else res[k]

            return lambda: (part(0), part(1))

        if isinstance(out, Tensor):
            self.put(out, parts(None))
        elif isinstance(out, (tuple, list)):
            for k, t in enumerate(out):
                if isinstance(t, Tensor):
                    self.put(t, parts(k))


def _map(obj, fn):
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _outputs(out):
    return [out] if isinstance(out, Tensor) else [t for t in out if isinstance(t, Tensor)]


def _dropout_training(func, args, kwargs) -> bool:
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return bool(bound.arguments.get("training", True)) and bound.arguments.get("p", 0) > 0
