"""The model-state guard: what a call may change on the model, and how it is restored.

:func:`frozen` turns parameter gradients off for a block and restores the flags;
:func:`check_eval` refuses a BatchNorm in training mode before any forward pass;
:func:`refuse_script` refuses TorchScript modules, whose operations the hook layer
cannot see.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fvis.hooks.intercept import UnsupportedOperation

__all__ = ["check_eval", "frozen", "refuse_script"]


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


def refuse_script(model: nn.Module, method: str) -> None:
    for name, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            raise UnsupportedOperation(
                f"{method} cannot hook TorchScript module {name or '<model>'!r}: its operations "
                "run outside Python. Pass the eager (un-scripted) nn.Module."
            )
