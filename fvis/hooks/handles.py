"""Hook registration: the only place fvis calls ``register_forward(_pre)_hook``.

Hooks are registered for the duration of a ``with`` block and removed in ``finally``
(also when registering one of them fails, or the block raises), and act only in the
thread that registered them: a forward pass of the same model in another thread runs
as if they were not there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

__all__ = ["check_no_hooks", "hooks_on", "hookable"]


def hookable(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of the modules hooks can be registered on: all but TorchScript
    modules and what they contain (their calls run outside Python)."""
    out: dict[str, nn.Module] = {}
    scripted: list[str] = []
    for name, m in model.named_modules():  # remove_duplicate: a shared module once
        if any(name == s or name.startswith(s + ".") or s == "" for s in scripted):
            continue
        if isinstance(m, torch.jit.ScriptModule):
            scripted.append(name)
            continue
        out[name] = m
    return out


def _this_thread(fn: Callable) -> Callable:
    owner = threading.get_ident()

    def hook(*args):
        return fn(*args) if threading.get_ident() == owner else None

    return hook


@contextlib.contextmanager
def hooks_on(
    pairs: Iterable[tuple[nn.Module, Callable]], *, kind: str = "forward"
) -> Iterator[None]:
    """Register ``(module, hook)`` pairs of one kind (``forward`` or ``forward_pre``)
    for the duration of the block; always removed, also on error. Each hook acts only in
    the calling thread."""
    if kind not in ("forward", "forward_pre"):
        raise ValueError(f"kind must be 'forward' or 'forward_pre', not {kind!r}")
    handles = []
    try:
        for module, fn in pairs:
            if kind == "forward":
                handles.append(module.register_forward_hook(_this_thread(fn)))
            else:
                handles.append(module.register_forward_pre_hook(_this_thread(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def check_no_hooks(model: nn.Module) -> list[str]:
    """Names of modules that still carry hooks (empty when the model is clean)."""
    dirty = []
    for name, m in model.named_modules():
        if (
            m._forward_hooks
            or m._forward_pre_hooks
            or m._backward_hooks
            or getattr(m, "_backward_pre_hooks", None)
        ):
            dirty.append(name or "<model>")
    return dirty
