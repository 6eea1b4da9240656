"""Model metadata: what fvis needs to know to feed a model images.

Every model that :func:`fvis.load_model` returns carries a :class:`ModelInfo` as
``model.fvis_info``. Images in fvis are float NCHW in [0, 1]; the model sees
``(image - mean) / std`` per channel.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from fvis.errors import NonFiniteError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """Input size ``(C, H, W)``, per-channel normalization and class labels of a model.

    ``layouts``: ``{layer name: "NCHW" | "NHWC" | "tokens" | Layout}`` for layers whose
    detected layout (:mod:`fvis.hooks.layouts`) is wrong."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = field(default=None, repr=False)  # 1000 names: not shown
    name: str = ""
    fixed_size: bool = False  # the model takes only input_size (e.g. flatten → linear head)
    layouts: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        size = tuple(self.input_size)
        if len(size) != 3 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
            raise ValueError(f"input_size must be (C, H, W) of positive integers, not {size}")
        for name in ("mean", "std"):
            stats = getattr(self, name)
            if stats is None:
                continue
            if len(stats) not in (1, size[0]):
                raise ValueError(
                    f"{name} has {len(stats)} values for {size[0]} input channels; give one "
                    "per channel"
                )
            if not all(math.isfinite(float(v)) for v in stats):
                raise NonFiniteError(f"{name} must be finite numbers, not {tuple(stats)}")
        for layer, lay in (self.layouts or {}).items():
            if lay not in ("NCHW", "NHWC", "tokens") and type(lay).__name__ != "Layout":
                raise ValueError(
                    f"layout of {layer!r} must be 'NCHW', 'NHWC', 'tokens' or a "
                    f"fvis.hooks.layouts.Layout, not {lay!r}"
                )
        if self.std is not None and any(float(v) <= 0 for v in self.std):
            raise ValueError(f"std must be > 0 for every channel, not {tuple(self.std)}")

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        mean = torch.tensor(self.mean or (0.0,) * c, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.std or (1.0,) * c, dtype=x.dtype, device=x.device)
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → model input, ``(x - mean) / std``. Shapes (N, C, H, W)."""
        if self.mean is None and self.std is None:
            return images
        mean, std = self._stats(images)
        return (images - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input → images in [0, 1] (the inverse of :meth:`normalize`)."""
        if self.mean is None and self.std is None:
            return x
        mean, std = self._stats(x)
        return x * std + mean

    def valid_range(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high) of the model input that images in [0, 1] map to,
        shaped (1, C, 1, 1) like ``like``."""
        lo = self.normalize(torch.zeros_like(like[:1, :, :1, :1]))
        hi = self.normalize(torch.ones_like(like[:1, :, :1, :1]))
        return lo, hi

    def label_index(self, label: str | int) -> int:
        """Class index of ``label`` (an index, or a name from ``labels``), checked against
        the labels when the model has them."""
        if isinstance(label, int) and not isinstance(label, bool):
            n = len(self.labels) if self.labels else None
            if label < 0 or (n is not None and label >= n):
                valid = f"0..{n - 1}" if n is not None else "≥ 0"
                raise IndexError(f"class {label} is out of range (valid: {valid})")
            return label
        if not isinstance(label, str):
            raise TypeError(f"a class is an index or a label name, not {label!r}")
        if self.labels is None:
            raise ValueError(
                f"Class {label!r} given by name, but this model has no labels; use an index."
            )
        if label in self.labels:
            return self.labels.index(label)
        import difflib

        near = difflib.get_close_matches(label, self.labels, n=5, cutoff=0.5)
        hint = f" Nearest labels: {', '.join(near)}." if near else ""
        if not near and self.labels:
            hint = f" Give an index 0..{len(self.labels) - 1} or a label ({self.labels[0]}, …)."
        raise ValueError(f"Unknown class label {label!r}.{hint}")

    def with_(self, **changes) -> ModelInfo:
        return replace(self, **changes)


def attach(model: nn.Module, info: ModelInfo) -> nn.Module:
    """Store ``info`` on ``model`` (as ``model.fvis_info``) and return the model."""
    model.fvis_info = info
    return model


_GUESSED: weakref.WeakKeyDictionary[nn.Module, ModelInfo] = weakref.WeakKeyDictionary()


def info(model: nn.Module) -> ModelInfo:
    """The model's :class:`ModelInfo`. For a model fvis did not load, read from its own
    config: a timm model's ``pretrained_cfg``, a ``transformers`` model's config (and
    ``preprocessor_config.json`` beside it), a torchvision ViT's or MaxViT's fixed size;
    otherwise a guess: the first conv layer's input channels, 224 px, no normalization.
    Computed once per model."""
    found = getattr(model, "fvis_info", None)
    if isinstance(found, ModelInfo):
        return found
    if model in _GUESSED:
        return _GUESSED[model]
    if is_hf(model):
        from fvis.models.hf_models import info_from

        guess = info_from(model)
    elif isinstance(getattr(model, "pretrained_cfg", None), dict):
        from fvis.models.timm_models import info_from

        guess = info_from(model)
    else:
        channels = 3
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                channels = m.in_channels
                break
        guess = ModelInfo(input_size=(channels, 224, 224), name=type(model).__name__)
        size = torchvision_fixed(model)
        if size is not None:
            guess = guess.with_(fixed_size=True, input_size=(channels, *(size or (224, 224))))
    _GUESSED[model] = guess
    return guess


def is_hf(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers`` model (or a view of one)."""
    inner = getattr(model, "inner", model)
    return type(inner).__module__.startswith("transformers.") and hasattr(inner, "config")


def torchvision_fixed(model: nn.Module) -> tuple[int, ...] | None:
    """``(H, W)`` for a torchvision ViT (its ``image_size``), ``()`` for a MaxViT (fixed
    by its grid partitions, size not stored), ``None`` for other models."""
    module = type(model).__module__
    if module == "torchvision.models.vision_transformer" and hasattr(model, "image_size"):
        return (model.image_size, model.image_size)
    if module == "torchvision.models.maxvit":
        return ()
    return None
