"""Deconvnet (Zeiler & Fergus 2014) and Guided Backprop (Springenberg et al. 2015).

Both are the gradient of the objective with respect to the input, with the backward pass
of every ReLU-like unit ``y = f(z)`` (ReLU, ReLU6, Hardtanh(0, ·); module or functional,
each call of a reused module separately) replaced:

* gradient:        ``∂/∂z = f'(z) · g``
* Deconvnet:       ``∂/∂z = max(g, 0)``              (ignores the forward activation)
* Guided Backprop: ``∂/∂z = max(f'(z) · g, 0)``      (= ``1[z > 0] · max(g, 0)`` for ReLU)

with ``g`` the modified gradient arriving at the unit's output. Max-pooling keeps its
gradient (Zeiler & Fergus' "switches"); every other operation, including other
nonlinearities (sigmoid, SiLU, GELU, ...), keeps its plain gradient; a network in which no
ReLU-like unit runs (a ViT's GELUs) is refused (``fvis.hooks.UnsupportedOperation``), as the
result would be the plain gradient. The result is shaped
like the input, not multiplied by it.
"""

from __future__ import annotations

import torch

from fvis import hooks
from fvis.attribution import algebra
from fvis.attribution.base import Attribution, resolve_target

__all__ = ["Deconvnet", "GuidedBackprop"]


class _ReluBackward(torch.autograd.Function):
    """Any ReLU-like ``y = f(z)``: the derivative ``f'(z)`` is taken by autograd."""

    @staticmethod
    def forward(ctx, z, f, guided):
        ctx.guided = guided
        if guided:
            ctx.save_for_backward(algebra.local_derivative(f, z))
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


class _Policy(hooks.Policy):
    kinds = frozenset({"activation"})
    modules = False

    def __init__(self, guided: bool):
        self.guided = guided
        self.method = "Guided Backprop" if guided else "Deconvnet"
        self.modified = 0  # ReLU-like calls whose backward was replaced
        self.others: set[str] = set()  # other nonlinearities seen (plain gradient)

    def activation(self, op, z, f, relu_like):
        if not relu_like:
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
        policy = _Policy(self.guided)
        grad = hooks.input_gradient(self.model, inputs, objective, policy)
        if not policy.modified:
            seen = f" (it ran {', '.join(sorted(policy.others))})" if policy.others else ""
            raise hooks.UnsupportedOperation(
                f"{policy.method} found no ReLU-like unit between the input and the target "
                f"in {type(self.model).__name__}{seen}, so its result would be the plain "
                "gradient under another name; use Gradient"
            )
        return grad


class Deconvnet(_ModifiedGradient):
    """Deconvnet: ReLU backward ``max(g, 0)``, ignoring the forward pass (module docstring).

    >>> Deconvnet(model).attribute(x, target=3).shape   # like the input
    torch.Size([2, 1, 28, 28])
    """

    guided = False


class GuidedBackprop(_ModifiedGradient):
    """Guided Backprop: ReLU backward ``1[z > 0]·max(g, 0)`` (module docstring).

    >>> GuidedBackprop(model).attribute(x, target=3).shape   # like the input
    torch.Size([2, 1, 28, 28])
    """

    guided = True
