"""The attention probabilities of one forward pass, as the model computed them.

:func:`attention_probabilities` runs the model under a :class:`~fvis.hooks.Policy` that
acts on softmax and fused attention only: fused attention (``F.scaled_dot_product_attention``,
``F.multi_head_attention_forward``) is written out (:mod:`fvis.hooks.attention`), so each
attention's ``A = softmax(q kᵀ · scale + mask)`` passes through ``F.softmax`` as a
written-out one does (timm's ``fused_attn=False``, Hugging Face). Every softmax over the
last dimension of a square score tensor ``(B, H, N, N)`` (or ``(B, N, N)``) is recorded,
in execution order; others (a classifier's softmax) are not. Values are those the
forward pass used, detached; the model's output is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fvis.hooks.forward import run
from fvis.hooks.intercept import Op, Policy

__all__ = ["attention_probabilities"]


class _Record(Policy):
    """Keeps the softmax outputs that are attention probabilities (module docstring)."""

    method = "attention recording"
    kinds = frozenset({"softmax", "attention"})
    modules = False

    def __init__(self):
        self.maps: list[Tensor] = []

    def softmax(self, op: Op, z: Tensor, dim: int, f):
        out = f(z)
        if z.dim() >= 3 and z.shape[-1] == z.shape[-2] and dim % z.dim() == z.dim() - 1:
            self.maps.append(out.detach())
        return out


def attention_probabilities(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The attention probabilities of each attention call of ``model(x)``, in execution
    order: ``(B, H, N, N)`` (rows sum to 1; ``(B, N, N)`` where the model has no head
    dimension). An empty list for a model without attention."""
    policy = _Record()
    with torch.enable_grad():  # the interceptor routes operations on input-dependent tensors
        run(model, x.detach().requires_grad_(True), [], policy)
    return [m.unsqueeze(1) if m.dim() == 3 else m for m in policy.maps]
