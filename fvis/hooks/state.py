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

__all__ = ["channels_last_input", "guard", "refuse_script"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _lock(model: nn.Module) -> threading.RLock:
    with _LOCKS_LOCK:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


_HELD = threading.local()  # .depth: {id(model): how many guards this thread has open}


@contextlib.contextmanager
def guard(model: nn.Module) -> Iterator[nn.Module]:
    """For the block: the model is this thread's alone (among fvis calls) and in eval
    mode; every module's ``training`` flag is restored on exit, also on error.
    Re-entrant: a nested call in the thread that holds the guard takes the lock again
    (it stays protected if the outer one closes first) but snapshots and restores the
    flags only if the model is training (code inside set it so) — so a render step's
    nested guards cost about one."""
    depth = _HELD.__dict__.setdefault("depth", {})
    with _lock(model):
        key = id(model)
        nested = depth.get(key, 0) > 0
        modes = [] if nested and not model.training else [(m, m.training) for m in model.modules()]
        try:
            depth[key] = depth.get(key, 0) + 1
            if any(t for _, t in modes):
                model.eval()
            yield model
        finally:
            depth[key] -= 1
            if not depth[key]:
                del depth[key]
            for m, t in modes:
                if m.training != t:  # nn.Module.__setattr__ is slow; most flags are unchanged
                    m.training = t


_NCHW_ONLY: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def channels_last_input(model: nn.Module, x: torch.Tensor, forward):
    """``forward(x)`` with a 4-D ``x`` stored channels-last, so the model's convolutions
    and pools run in oneDNN's faster layout (values equal up to rounding) — unless the
    model cannot take it: an activation reshaped with ``.view`` (LeNet's ``x.view(B, -1)``)
    fails on that layout, and then ``forward`` gets ``x`` as it was, for this call and,
    remembered per model, every later one. Nothing on the model changes."""
    if x.dim() != 4 or model in _NCHW_ONLY:
        return forward(x)
    try:
        return forward(_nhwc(x))
    except RuntimeError as e:
        if "view size is not compatible" not in str(e):
            raise
        with _LOCKS_LOCK:
            _NCHW_ONLY[model] = True
        return forward(x)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with channels-last strides that PyTorch reads as channels-last.
    With one channel a contiguous ``x`` already counts as channels-last contiguous, so
    ``.contiguous(memory_format=...)`` keeps its NCHW strides (HW, HW, W, 1) and oneDNN
    would run the whole network NCHW; ``clone`` writes (HW, 1, W, 1), which it reads as
    NHWC, so the first convolution's output — and everything after it — is NHWC."""
    if x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.clone(memory_format=torch.channels_last)


def refuse_script(model: nn.Module, method: str) -> None:
    """Refuse a model containing a TorchScript module: its operations run outside Python,
    where the interceptor cannot see them."""
    for name, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            raise UnsupportedOperation(
                f"{method} cannot hook TorchScript module {name or '<model>'!r}: its operations "
                "run outside Python. Pass the eager (un-scripted) nn.Module."
            )
