"""Lucid's redirected ReLU: a gradient for the first steps of a render that cannot die.

At a random start many units are off and ``ReLU`` passes no gradient. For each batch
item whose ReLU gradient is all zero, the redirected gradient lets through the part
that would push a negative input *up* (with the loss ``L = -objective``:
``g_redirected = 0 where x < 0 and ∂L/∂y > 0, else ∂L/∂y``). The forward value is the
ordinary ``relu(x)``. Applied to ``nn.ReLU`` modules and to functional ``F.relu`` /
``torch.relu`` calls alike (a ``TorchFunctionMode`` sees both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        neg = x < 0
        relu_grad = grad.masked_fill(neg, 0)
        redirected = grad.masked_fill(neg & (grad > 0), 0)
        dead = relu_grad.flatten(1).norm(dim=1) == 0 if grad.dim() > 1 else relu_grad.norm() == 0
        dead = dead.view(-1, *([1] * (grad.dim() - 1))) if grad.dim() > 1 else dead
        return torch.where(dead, redirected, relu_grad)


_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class redirected_relu(TorchFunctionMode):
    """Context manager: every ReLU in the forward passes inside it uses the redirected
    gradient. In-place variants return a new tensor (callers use the return value, as
    ``nn.ReLU(inplace=True)`` and torchvision's ``F.relu(x, inplace=True)`` do)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return _RedirectedReLU.apply(args[0])
        return func(*args, **(kwargs or {}))
