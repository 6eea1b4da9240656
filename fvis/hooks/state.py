"""The model-state guard: what an fvis call may change on the model, and how it is restored.

Every fvis call on a model runs inside :func:`guard`: it holds the model's re-entrant
lock, so fvis calls on one model run one at a time (calls on different models run in
parallel), and runs the model in eval mode, restoring each module's mode on exit, also
on error. Parameters' ``requires_grad`` flags are never changed: gradients are taken
with ``torch.autograd.grad`` with respect to the image or the inputs only, and the
interceptor detaches parameters for its own forward pass.

Why a lock per model and not only per-call hooks: two things an fvis call needs are
model-wide and visible to any forward pass of the model, whatever thread runs it —
the modes of a training-mode model (BatchNorm must use its running statistics, Dropout
must be off) and the canonizers' reversible weight rewrites (BatchNorm folding). No
thread-local mechanism hides them, so calls that share a model are serialized; results
are then exactly those of a sequential run. Hooks are thread-aware as well (they act
only in the thread that registered them, :func:`fvis.hooks.hooks_on`), so a forward pass
that the user runs in another thread is never touched by fvis's hooks; it does see a
training-mode model in eval mode while an fvis call runs.

Long calls hold the guard in slices: ``render`` takes it for each optimization step, so
another session's call on the same model waits one step, not a whole render (the studio
relies on this); the model is exactly as found between steps.

:func:`refuse_script` refuses TorchScript modules, whose operations the interceptor
cannot see.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from fvis.hooks.intercept import UnsupportedOperation

__all__ = ["channels_last", "guard", "refuse_script"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _lock(model: nn.Module) -> threading.RLock:
    with _LOCKS_LOCK:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def guard(model: nn.Module) -> Iterator[nn.Module]:
    """For the block: the model is this thread's alone (among fvis calls) and in eval
    mode; every module's ``training`` flag is restored on exit, also on error.
    Re-entrant: nested calls in one thread share the outer guard."""
    with _lock(model):
        modes = [(m, m.training) for m in model.modules()]
        try:
            if any(t for _, t in modes):
                model.eval()
            yield model
        finally:
            for m, t in modes:
                m.training = t


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[nn.Module]:
    """For the block, inside :func:`guard`: every 4-D parameter (convolution kernels) is
    stored channels-last, so convolutions and pools run in oneDNN's fast layout even on
    one-channel input — such a tensor is both layouts at once, and PyTorch then keeps the
    whole network in NCHW, where a max pool on CPU runs ~10× slower (the bundled MNIST
    CNN: forward 1.6× slower). Values are unchanged (outputs equal up to rounding); on
    exit each parameter gets back its own tensor (``.data``), also on error. A forward
    pass that the user runs meanwhile in another thread sees the same values; an
    in-place update of the parameters from another thread during the block (training
    the model while fvis runs on it, which its eval mode already forbids) is lost."""
    cl = torch.channels_last
    with guard(model):
        saved = [
            (p, p.data)
            for p in model.parameters()
            if p.dim() == 4 and not p.data.is_contiguous(memory_format=cl)
        ]
        try:
            for p, data in saved:
                p.data = data.contiguous(memory_format=cl)
            yield model
        finally:
            for p, data in saved:
                p.data = data


def refuse_script(model: nn.Module, method: str) -> None:
    """Refuse a model containing a TorchScript module: its operations run outside Python,
    where the interceptor cannot see them."""
    for name, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            raise UnsupportedOperation(
                f"{method} cannot hook TorchScript module {name or '<model>'!r}: its operations "
                "run outside Python. Pass the eager (un-scripted) nn.Module."
            )
