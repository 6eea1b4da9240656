"""Deconvnet (Zeiler & Fergus 2014) and Guided Backprop (Springenberg et al. 2015).

Both are the gradient of the objective with respect to the input, with the backward pass
of every rectifier ``y = f(z)`` replaced (module or functional, each call of a reused
module separately), ``g`` being the modified gradient arriving at the unit's output:

* gradient:        ``∂/∂z = f'(z) · g``
* Deconvnet:       ``∂/∂z = max(g, 0)``                      (ignores the forward pass)
* Guided Backprop: ``∂/∂z = 1[z > 0] · max(f'(z) · g, 0)``   (guided by the sign of z)

Rectifiers are ReLU, ReLU6 and Hardtanh(0, ·) — for which both rules are the papers' —
and their smooth or leaky variants GELU, SiLU, Mish, Hardswish, Softplus, ELU, CELU,
SELU and LeakyReLU, for which these are the definitions fvis uses: Guided Backprop keeps
the local gradient where the unit's input is positive and the product ``f'(z) · g`` is,
Deconvnet passes the positive backward signal. For GELU at ``z = 1``, ``g = 2``:
gradient ``2 f'(1) = 2.166``, Guided Backprop 2.166, Deconvnet 2; at ``z = −1``: gradient
``2 f'(−1) = −0.166``, Guided Backprop 0, Deconvnet 2.

Max-pooling keeps its gradient (Zeiler & Fergus' "switches"); every other operation,
including the saturating nonlinearities (sigmoid, tanh, hardsigmoid), softmax and layer
norms, keeps its plain gradient; a network in which no rectifier runs is refused
(``fvis.hooks.UnsupportedOperation``), as the result would be the plain gradient. The
result is shaped like the input, not multiplied by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fvis import hooks
from fvis.attribution import algebra
from fvis.attribution.base import Attribution, resolve_target

__all__ = ["Deconvnet", "GuidedBackprop"]


# the smooth and leaky rectifiers (ReLU, ReLU6, Hardtanh(0, ·): ``relu_like``)
_RECTIFIERS = {
    F.gelu, F.silu, F.mish, F.hardswish, F.softplus, F.elu, F.elu_, F.celu, F.selu,
    F.leaky_relu, F.leaky_relu_,
}  # fmt: skip


class _ReluBackward(torch.autograd.Function):
    """Any rectifier ``y = f(z)``: the derivative ``f'(z)`` is taken by autograd."""

    @staticmethod
    def forward(ctx, z, f, guided):
        ctx.guided = guided
        if guided:
            d = algebra.local_derivative(f, z)
            ctx.save_for_backward(torch.where(z > 0, d, 0))  # 1[z > 0] f'(z)
        return f(z)

    @staticmethod
    def backward(ctx, g):
        if ctx.guided:
            (d,) = ctx.saved_tensors
            return (d * g).clamp(min=0), None, None
        return g.clamp(min=0), None, None


class _Relu(torch.autograd.Function):
    """Plain ReLU, in place when asked (as ``nn.ReLU(inplace=True)``: no copy of ``z``);
    ``1[z > 0] = 1[y > 0]`` comes from the output."""

    @staticmethod
    def forward(ctx, z, inplace, guided):
        ctx.guided = guided
        if inplace:
            ctx.mark_dirty(z)
            y = z.relu_()
        else:
            y = z.relu()
        if guided:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clamp(min=0)
        if ctx.guided:
            (y,) = ctx.saved_tensors
            g = torch.ops.aten.threshold_backward(g, y, 0)  # g where y > 0, else 0
        return g, None, None


class _GuidedPolicy(hooks.Policy):
    kinds = frozenset({"activation"})
    modules = False

    def __init__(self, guided: bool):
        self.guided = guided
        self.method = "Guided Backprop" if guided else "Deconvnet"
        self.modified = 0  # rectifier calls whose backward was replaced
        self.others: set[str] = set()  # other nonlinearities seen (plain gradient)

    def activation(self, op, z, f, relu_like):
        if not (relu_like or op.func in _RECTIFIERS):
            self.others.add(hooks.op_name(op.func))
            return None
        self.modified += 1
        return _ReluBackward.apply(z, f, self.guided)

    def relu(self, z, inplace):
        self.modified += 1
        return _Relu.apply(z, inplace, self.guided)


class _ModifiedGradient(Attribution):
    guided = False

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        """The modified gradient ``(B, ...)`` like ``inputs`` for ``target`` (int class,
        per-item classes, an :class:`~fvis.objectives.Objective`, or ``None`` = predicted)."""
        objective = resolve_target(self.model, inputs, target)
        policy = _GuidedPolicy(self.guided)
        grad = hooks.input_gradient(self.model, inputs, objective, policy)
        if not policy.modified:
            seen = f" (it ran {', '.join(sorted(policy.others))})" if policy.others else ""
            raise hooks.UnsupportedOperation(
                f"{policy.method} found no ReLU-like unit (ReLU, GELU, SiLU, ...) between the "
                f"input and the target "
                f"in {type(self.model).__name__}{seen}, so its result would be the plain "
                "gradient under another name; use Gradient"
            )
        return grad


class Deconvnet(_ModifiedGradient):
    """Deconvnet: rectifier backward ``max(g, 0)``, ignoring the forward pass (module
    docstring).

    >>> Deconvnet(model).attribute(x, target=3).shape   # like the input
    torch.Size([2, 1, 28, 28])
    """

    guided = False


class GuidedBackprop(_ModifiedGradient):
    """Guided Backprop: rectifier backward ``1[z > 0]·max(f'(z)·g, 0)`` (module docstring).

    >>> GuidedBackprop(model).attribute(x, target=3).shape   # like the input
    torch.Size([2, 1, 28, 28])
    """

    guided = True
