"""The one way front ends load a model: a spec string, weights and a device.

``ModelSpec("torchvision:resnet18", weights="none")`` is what a command line, the
studio and the gallery record; ``.load()`` gives the model (:func:`fvis.load_model`)
and ``.fingerprint(model)`` a hash of its weights, so a gallery knows when they change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelSpec", "load", "fingerprint", "input_image"]


@dataclass(frozen=True)
class ModelSpec:
    """``spec``: ``fvis:mnist``, ``torchvision:NAME`` or a checkpoint path (see
    :mod:`fvis.models`). ``weights``: ``"DEFAULT"``, ``"none"`` (random init), an enum
    name or a state-dict path. ``device``: ``None`` picks CUDA when available."""

    spec: str = "fvis:mnist"
    weights: str = "DEFAULT"
    device: str | None = None

    def to_dict(self) -> dict:
        return {"spec": self.spec, "weights": self.weights}

    def load(self) -> nn.Module:
        return load(self.spec, self.weights, self.device)


def load(spec: str = "fvis:mnist", weights: str | None = "DEFAULT", device=None) -> nn.Module:
    """:func:`fvis.load_model` with the front ends' conventions: ``weights`` ``"none"``
    (any case) or ``None`` is random init; ``device`` ``None`` is
    :func:`fvis.models.default_device`."""
    from fvis.models import default_device, load_model

    weights = None if weights is None or str(weights).lower() == "none" else weights
    return load_model(spec, weights=weights, device=device or default_device())


def fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex, 16 digits) of every parameter and buffer, by name: equal for equal
    weights on any device."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def input_image(model: nn.Module, path=None, digit: int = 0) -> torch.Tensor:
    """The input front ends explain: the image file at ``path`` resized to the model's
    input, else held-out MNIST digit ``digit`` (models taking 1×28×28 inputs).
    (1, C, H, W) in [0, 1]."""
    from fvis.models import info as model_info

    info = model_info(model)
    if path is not None:
        from fvis.image import load_image

        return load_image(path, size=tuple(info.input_size[1:]), channels=info.channels)
    if tuple(info.input_size) != (1, 28, 28):
        raise ValueError("give an image (--image) for a model that does not take MNIST digits")
    from fvis.data import mnist

    images = mnist("test")[0]
    if not 0 <= digit < len(images):
        raise ValueError(f"digit {digit} is out of range (valid: 0..{len(images) - 1})")
    return images[digit : digit + 1]
