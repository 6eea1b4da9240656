"""Model outputs that are not one tensor: dicts, Hugging Face ``ModelOutput``, tuples.

torchvision's segmentation models return ``{"out": (B, K, H, W), "aux": ...}``, Hugging
Face models a ``ModelOutput`` with ``.logits``, Inception with auxiliary heads a named
tuple. :func:`select` picks one tensor from such an output:

* ``key=None`` (the main output): the tensor itself; for a mapping its ``"logits"``,
  else its ``"out"``, else its only tensor value; for a tuple or list its first element.
* ``key="out"``: that entry of a mapping or named tuple; ``key=1``: that element of a
  tuple.

>>> select({"out": torch.zeros(2, 21, 8, 8), "aux": torch.zeros(2, 21, 8, 8)}).shape
torch.Size([2, 21, 8, 8])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["MAIN_KEYS", "OutputView", "describe", "probabilities", "rows", "select"]

MAIN_KEYS = ("logits", "out")  # Hugging Face, torchvision segmentation


def describe(out) -> str:
    """A short description of an output's structure, for error messages."""
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys {list(out.keys())}"
    if isinstance(out, Sequence):
        fields = getattr(out, "_fields", None)
        inner = f"fields {list(fields)}" if fields else f"{len(out)} elements"
        return f"{type(out).__name__} with {inner}"
    return type(out).__name__


def select(out, key: str | int | None = None) -> torch.Tensor:
    """The tensor named ``key`` in a model output (the main one for ``None``; see the
    module docstring). Raises ``ValueError`` naming the keys there are."""
    if key is None:
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping):
            for k in MAIN_KEYS:
                if isinstance(out.get(k), torch.Tensor):
                    return out[k]
            tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
            if len(tensors) == 1:
                return out[tensors[0]]
        elif isinstance(out, Sequence) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise ValueError(
            f"the model returns {describe(out)}; fvis cannot tell which is the main output. "
            "Name it in the target, e.g. target=('out', 15), or use an Objective."
        )
    if isinstance(out, Mapping) and key in out:
        found = out[key]
    elif isinstance(key, str) and key in (getattr(out, "_fields", None) or ()):
        found = getattr(out, key)
    elif isinstance(key, int) and isinstance(out, Sequence) and -len(out) <= key < len(out):
        found = out[key]
    else:
        raise ValueError(f"the model output has no entry {key!r}; it is {describe(out)}.")
    if not isinstance(found, torch.Tensor):
        raise ValueError(f"output entry {key!r} is {type(found).__name__}, not a tensor.")
    return found


def rows(out, index):
    """``out`` with every tensor in it indexed along the batch dimension by ``index``
    (a slice or index tensor), keeping the structure (dict, ``ModelOutput``, tuple)."""
    if isinstance(out, torch.Tensor):
        return out[index]
    if isinstance(out, Mapping):
        return {k: rows(v, index) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    if isinstance(out, tuple | list):
        items = [rows(v, index) if isinstance(v, torch.Tensor) else v for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    return out


class OutputView(nn.Module):
    """``model`` with its forward returning one tensor, ``select(model(x), key)``.

    A view, not a wrapper: it shares the model's submodules, parameters and buffers under
    the same names, so layer names and ``state_dict`` keys are those of ``model``, and
    other attributes (``.config``) are read from ``model``. Hugging Face classifiers are
    loaded as ``OutputView(model, "logits")``.
    """

    def __init__(self, model: nn.Module, key: str | int | None = None):
        super().__init__()
        object.__setattr__(self, "inner", model)  # not a submodule: no "inner." prefix
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self.key = key

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return select(self.inner(*args, **kwargs), self.key)

    def train(self, mode: bool = True):
        self.inner.training = mode
        return super().train(mode)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner":  # not yet set (while copying)
                raise
            return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"OutputView({self.key!r}) of {self.inner!r}"


def probabilities(model: nn.Module, x: torch.Tensor, key: str | int | None = None) -> torch.Tensor:
    """``softmax`` over the classes of the model's (main, or ``key``) output for the
    normalized inputs ``x``: (B, K); a spatial output (B, K, H, W) gives each class's mean
    probability over the pixels. Run in eval mode under the model's guard, without
    gradients (what a report or a caption shows next to an explanation)."""
    from fvis import hooks

    with hooks.guard(model), torch.no_grad():
        p = select(model(x), key).softmax(1)
    return p.mean(tuple(range(2, p.dim()))) if p.dim() > 2 else p
