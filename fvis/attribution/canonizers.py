"""Canonizers: reversible rewrites of a model into an equivalent one that rules handle
better (zennit's idea). ``with canonizer.apply(model, x): ...`` rewrites the model for the
block and restores it exactly on exit, also when the block raises; the model output is
unchanged up to float rounding.

:class:`MergeBatchNorm` folds each eval-mode BatchNorm into the convolution or linear
layer whose output it normalizes, so that LRP rules and DeepLIFT's RevealCancel see one
linear layer ``z = W'x + b'`` instead of a linear layer followed by an affine map.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from fvis import hooks

__all__ = ["Canonizer", "MergeBatchNorm", "canonized", "default_canonizers"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, *_TRANSPOSED)


class Canonizer:
    """A reversible model rewrite. ``apply(model, x)`` is a context manager; ``x`` is an
    example input (the rewrite may depend on what the forward pass does)."""

    def apply(self, model: nn.Module, x: Tensor) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MergeBatchNorm(Canonizer):
    """Fold BatchNorm into the preceding conv/linear layer.

    A BatchNorm ``y = γ (z − μ)/√(σ² + ε) + β`` whose input ``z = W x + b`` is the output
    of a ``Conv1-3d``/``ConvTranspose1-3d``/``Linear`` module that nothing else uses becomes
    part of it: ``W' = s·W`` (per output channel; a transposed convolution's weight is
    ``(in, out/groups, ...)``, its output channel ``g·out/groups + j`` for group ``g``),
    ``b' = s·(b − μ) + β`` with ``s = γ/√(σ² + ε)``, and the BatchNorm returns its input
    unchanged (a forward hook). Pairs are read from the model's trace (which module call
    feeds which, and how often a tensor is used), so sequential, residual and functional
    architectures are handled alike; a module called more than once is left alone.
    BatchNorms in training mode are left alone (the attribution methods run the model in
    eval mode). Parameters are changed in place and copied back on exit; the attribution
    methods hold the model's guard meanwhile (:func:`fvis.hooks.guard`), so no other fvis
    call sees the folded weights.
    """

    def pairs(self, model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
        """``(conv or linear name, batchnorm name)`` for every foldable pair, read from the
        model's trace (:attr:`fvis.hooks.Trace.feeds`, cached per model and input shape)."""
        tr = hooks.trace(model, x)
        mods = dict(model.named_modules())
        result = []
        for (bn_name, _), (lin_name, _), uses in tr.feeds:
            conv, bn = mods[lin_name], mods[bn_name]
            if not (isinstance(conv, _LINEAR) and isinstance(bn, _BN)):
                continue
            out_channels = conv.out_channels if hasattr(conv, "out_channels") else conv.out_features
            if (
                len(tr.calls[lin_name]) == len(tr.calls[bn_name]) == 1
                and uses == 1  # only the BatchNorm's own batch_norm call
                and not bn.training
                and bn.running_mean is not None
                and bn.num_features == out_channels
            ):
                result.append((lin_name, bn_name))
        return result

    @contextlib.contextmanager
    def apply(self, model: nn.Module, x: Tensor) -> Iterator[list[tuple[str, str]]]:
        """Fold every pair for the block; yields the list of ``(layer, batchnorm)`` names."""
        pairs = self.pairs(model, x)
        mods = dict(model.named_modules())
        undo: list = []
        try:
            for lin_name, bn_name in pairs:
                _fold(mods[lin_name], mods[bn_name], undo)
            with hooks.hooks_on((mods[bn], _identity) for _, bn in pairs):
                yield pairs
        finally:
            with torch.no_grad():
                for step in reversed(undo):
                    step()


def _identity(module, inputs, output):
    return inputs[0]


@torch.no_grad()
def _fold(lin: nn.Module, bn: nn.Module, undo: list) -> None:
    w = lin.weight
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    scale, shift = scale.to(w.dtype), shift.to(w.dtype)
    old_w = w.detach().clone()
    undo.append(lambda: w.copy_(old_w))
    if isinstance(lin, _TRANSPOSED):  # (in, out/groups, ...): scale by the output channel
        g = lin.groups
        per = scale.view(g, 1, -1).expand(g, w.shape[0] // g, -1).reshape(w.shape[0], -1)
        w.mul_(per.view(*per.shape, *([1] * (w.dim() - 2))))
    else:
        w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
    if lin.bias is None:
        undo.append(lambda: setattr(lin, "bias", None))
        lin.bias = nn.Parameter(shift.clone(), requires_grad=False)
    else:
        b = lin.bias
        old_b = b.detach().clone()
        undo.append(lambda: b.copy_(old_b))
        b.mul_(scale).add_(shift)


def default_canonizers() -> tuple[Canonizer, ...]:
    """The canonizers LRP and RevealCancel use unless told otherwise: (MergeBatchNorm(),)."""
    return (MergeBatchNorm(),)


@contextlib.contextmanager
def canonized(model: nn.Module, x: Tensor, canonizers: Sequence[Canonizer]) -> Iterator[None]:
    """Apply ``canonizers`` in order for the block; undone in reverse order on exit."""
    with contextlib.ExitStack() as stack:
        for c in canonizers:
            stack.enter_context(c.apply(model, x))
        yield
