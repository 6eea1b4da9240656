"""``hf:FOLDER_OR_NAME`` models: Hugging Face ``transformers`` image classifiers, offline.

``FOLDER_OR_NAME`` is a folder written by ``model.save_pretrained(folder)`` (plus,
optionally, the image processor's ``save_pretrained``, which gives the mean and std), or
a model name already in the local Hugging Face cache. The model comes back as an
:class:`~fvis.outputs.OutputView` returning ``.logits`` (B, classes), with the layer
names of the ``transformers`` model. ``weights=None`` builds the folder's config with
random weights. Labels come from ``config.id2label`` (unless they are the placeholder
``LABEL_i``); the input size from ``config.image_size``; a model that refuses another
size (ViT) is marked fixed-size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from fvis.models.metadata import ModelInfo
from fvis.models.optional import require
from fvis.outputs import OutputView

__all__ = ["from_config", "info_from", "load", "resolve"]


def resolve(name: str) -> Path:
    """The local folder of ``name``: itself if it is a folder, else its snapshot in the
    Hugging Face cache; ``FileNotFoundError`` saying what to do otherwise."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or not a valid repo id
        raise FileNotFoundError(
            f"hf:{name} is neither a folder nor in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}). This machine cannot download models. On one that "
            "can, save the model and its image processor with .save_pretrained(FOLDER), "
            "copy FOLDER here and use hf:FOLDER."
        ) from None


def load(name: str, weights, **kwargs) -> tuple[nn.Module, ModelInfo]:
    """The image classifier in ``name`` (see the module docstring)."""
    transformers = require("transformers", "hf", f"hf:{name}")
    folder = resolve(name)
    auto = transformers.AutoModelForImageClassification
    try:
        if weights is None:
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            model = auto.from_config(config, **kwargs)
        elif weights == "DEFAULT":
            model = auto.from_pretrained(folder, local_files_only=True, **kwargs)
        else:
            raise ValueError(
                f"hf:{name} takes weights='DEFAULT' (the folder's) or None, not {weights!r}; "
                "for other weights, save them into a folder with save_pretrained."
            )
    except (OSError, KeyError) as e:
        raise ValueError(f"hf:{name}: {folder} holds no image classifier ({e})") from None
    return OutputView(model, "logits"), info_from(model, f"hf:{name}", folder)


def from_config(config: dict) -> nn.Module:
    """A randomly initialised classifier for a config dict (``config.to_dict()``), as an
    :class:`~fvis.outputs.OutputView` returning logits; used to read checkpoints back."""
    transformers = require("transformers", "hf", "a checkpoint of a Hugging Face model")
    cfg = transformers.AutoConfig.for_model(**config)
    return OutputView(transformers.AutoModelForImageClassification.from_config(cfg), "logits")


def config_dict(model: nn.Module) -> dict:
    """The model's config as plain data (what ``config.json`` holds)."""
    return json.loads(model.config.to_json_string(use_diff=False))


def _processor(folder: Path | None) -> dict:
    path = folder / "preprocessor_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text())


def _fixed(model: nn.Module, size: tuple[int, int, int]) -> bool:
    """Whether ``model`` refuses an input 16 px larger than ``size`` (ViT does) while it
    takes ``size`` itself; a model that fails at ``size`` too raises that error."""
    c, h, w = size
    device = next(model.parameters()).device
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            try:
                model(torch.zeros(1, c, h + 16, w + 16, device=device))
                return False
            except (ValueError, RuntimeError, AssertionError):
                pass
            model(torch.zeros(1, c, h, w, device=device))  # raises unless it is the size
            return True
    finally:
        model.train(training)


def info_from(model: nn.Module, name: str = "", folder: Path | None = None) -> ModelInfo:
    """A ``transformers`` model's :class:`ModelInfo` from its config and, if found, the
    ``preprocessor_config.json`` beside it (see the module docstring)."""
    inner = getattr(model, "inner", model)
    config = inner.config
    if folder is None and getattr(config, "_name_or_path", ""):
        folder = Path(config._name_or_path) if Path(config._name_or_path).is_dir() else None
    proc = _processor(folder)
    if folder is not None and not proc:
        warnings.warn(
            f"{folder} has no preprocessor_config.json, so fvis feeds inputs unnormalized "
            "(mean 0, std 1): copy the model's processor config there, or attach a "
            "ModelInfo with its mean and std (fvis.models.attach)",
            stacklevel=2,
        )
    size = getattr(config, "image_size", None) or proc.get("size") or 224
    if isinstance(size, dict):  # the processor's {"height", "width"} or {"shortest_edge"}
        edge = size.get("shortest_edge")
        size = (size.get("height") or edge, size.get("width") or edge)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    channels = getattr(config, "num_channels", 3)
    labels = None
    id2label = getattr(config, "id2label", None) or {}
    if id2label and not all(str(v) == f"LABEL_{k}" for k, v in id2label.items()):
        labels = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    mean, std = proc.get("image_mean"), proc.get("image_std")
    info = ModelInfo(
        input_size=(channels, int(h), int(w)),
        mean=tuple(mean) if mean and proc.get("do_normalize", True) else None,
        std=tuple(std) if std and proc.get("do_normalize", True) else None,
        labels=labels,
        name=name or f"hf:{getattr(config, 'model_type', type(inner).__name__)}",
    )
    return info.with_(fixed_size=_fixed(inner, info.input_size))
