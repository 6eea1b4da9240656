"""Lucid's redirected ReLU: a gradient for the first steps of a render that cannot die.

At a random start many units are off and ``ReLU`` passes no gradient. For each batch
item whose ReLU gradient is all zero, the redirected gradient lets through the part
that would push a negative input *up* (with the loss ``L = -objective``:
``g_redirected = 0 where x < 0 and ∂L/∂y > 0, else ∂L/∂y``). The forward value is the
ordinary ``relu(x)``, in place where the model asks for it. Applied to ``nn.ReLU``
modules and functional ``F.relu`` / ``torch.relu`` calls alike, by the hook layer's
interceptor (:mod:`fvis.hooks.intercept`) in its light mode (ReLUs only, no module tracking).
"""

from __future__ import annotations

import torch

from fvis import hooks

# How many first steps of a render use it, everywhere (render, recipes, CLI, gallery,
# studio). Lucid overrides the ReLU gradient for the whole render; the redirected
# gradient only acts while an item's ReLU gradient is all zero, i.e. at the start.
REDIRECTED_RELU_STEPS = 16


# dtypes whose NaNs threshold_backward passes bit for bit on the CPU (it computes
# bfloat16 and float16 in float32 and writes every bfloat16 NaN back as 0xffff)
_EXACT = (torch.float32, torch.float64)


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, inplace):
        ctx.save_for_backward(torch.lt(x, 0).logical_not_())  # where ReLU's gradient passes
        if inplace:
            ctx.mark_dirty(x)
            return x.relu_()
        return x.relu()

    @staticmethod
    def backward(ctx, grad):
        (passes,) = ctx.saved_tensors
        if grad.numel() == 0:
            return grad.clone(), None
        if grad.device.type != "cpu" or grad.dim() < 2 or grad.dtype not in _EXACT:
            # the branch-free form: on an accelerator (a branch on values waits for the
            # device), for a single item, and where threshold_backward is not exact
            return _everywhere(passes, grad), None
        # where(x < 0, 0, g), bit for bit, in a vectorized kernel: torch.where's CPU kernel
        # is not vectorized (~10x slower on the large activations of a render's first steps)
        relu_grad = torch.ops.aten.threshold_backward(grad, passes.view(torch.uint8), 0)
        dead = _all_zero(relu_grad)
        if not dead.any():  # the common case: the ordinary ReLU gradient, one pass
            return relu_grad, None
        items = dead.nonzero().squeeze(1)  # passes over the dead items only
        g, p = grad.index_select(0, items), passes.index_select(0, items)
        return relu_grad.index_copy_(0, items, _redirected(p, g)), None


def _all_zero(t):
    """(B,): whether each item of ``t`` is all zero; for a 0-/1-D ``t`` (one item), one
    bool. Exact (no norm whose squares underflow); NaN counts as non-zero."""
    per_item = tuple(range(1, t.dim()))
    if not per_item:
        return (t.amax() == 0) & (t.amin() == 0)
    return (t.amax(per_item) == 0) & (t.amin(per_item) == 0)


def _redirected(passes, grad):
    """Lucid's redirected gradient: ``0 where x < 0 and g > 0, else g``."""
    return torch.where(~passes & (grad > 0), 0, grad)


def _everywhere(passes, grad):
    """The rule with no branch on values: the redirected gradient of every item, kept
    where the item's ReLU gradient is all zero (a 0-/1-D tensor is one item)."""
    relu_grad = torch.where(passes, grad, 0)
    dead = _all_zero(relu_grad)
    dead = dead.view(-1, *([1] * (grad.dim() - 1))) if dead.dim() else dead
    return torch.where(dead, _redirected(passes, grad), relu_grad)


class _Redirect(hooks.Policy):
    method = "redirected ReLU"
    kinds = frozenset({"activation"})
    modules = False

    def relu(self, z, inplace):
        return _RedirectedReLU.apply(z, inplace)


def redirected_relu() -> hooks.Interceptor:
    """Context manager: every ReLU in the forward passes inside it uses the redirected
    gradient (other operations are untouched)."""
    return hooks.Interceptor(_Redirect(), None)
