"""``timm:NAME`` models: built by ``timm.create_model``, described by ``pretrained_cfg``.

The input size, mean, std and whether the size is fixed (ViTs) come from the model's
``pretrained_cfg`` (a ViT's patch embedding overrides the size when built with another
``img_size``); labels from timm's ImageNet tables when the class count matches one.
``weights``: ``None`` (random init), a local file (``.safetensors``, ``.pth``, ``.bin``,
read weights-only and loaded strictly, through timm's converter for the architecture if
needed), or ``"DEFAULT"``: the model's weights from the Hugging Face or torch hub cache
on this machine. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from fvis.models.metadata import ModelInfo
from fvis.models.optional import require

__all__ = ["cached_weights", "info_from", "load"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def load(name: str, weights, **kwargs) -> tuple[nn.Module, ModelInfo]:
    """``timm.create_model(name, **kwargs)`` with ``weights`` (see the module docstring)."""
    timm = require("timm", "timm", f"timm:{name}")
    if not timm.is_model(name):
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        hint = f"Nearest: {', '.join(near)}" if near else "timm.list_models() lists them"
        raise ValueError(f"timm has no model {name!r}. {hint}.")
    model = timm.create_model(name, pretrained=False, **kwargs)
    if weights is not None:
        path = cached_weights(name) if weights == "DEFAULT" else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"No weights file at {path} for timm:{name}; pass an existing file, "
                "weights='DEFAULT' (from the local cache) or weights=None."
            )
        _load_file(model, path, f"timm:{name}")
    return model, info_from(model, f"timm:{name}")


def _load_file(model: nn.Module, path: Path, spec: str) -> None:
    """Load ``path`` into ``model`` strictly (weights only): as saved, else through the
    architecture's ``checkpoint_filter_fn`` (timm's converter for other releases), else
    fail naming the mismatch. Unlike timm's pretrained loading, a classifier of another
    size is an error, not silently left random."""
    import sys

    from timm.models import load_checkpoint

    if path.suffix == ".npz":  # the original ViT release: the model's own reader
        model.load_pretrained(str(path))
        return
    try:
        load_checkpoint(model, str(path), strict=True)
        return
    except RuntimeError as e:
        error = e
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        try:
            load_checkpoint(model, str(path), strict=True, filter_fn=convert)
            return
        except (RuntimeError, KeyError, ValueError) as e:
            error = e
    first = str(error).strip().splitlines()[0:2]
    raise ValueError(
        f"{path} does not fit {spec} as built ({' '.join(first)}). Pass the constructor "
        "arguments it was trained with (e.g. num_classes=...), or weights=None."
    ) from None


def cached_weights(name: str) -> Path:
    """The file of ``name``'s default weights in the Hugging Face hub cache or torch's hub
    cache; ``FileNotFoundError`` saying where to put it when it is in neither."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise FileNotFoundError(f"timm:{name} has no pretrained weights; use weights=None.")
    looked = []
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id
        for fname in (cfg.hf_hub_filename,) if cfg.hf_hub_filename else WEIGHT_FILES:
            found = try_to_load_from_cache(repo, fname)
            if isinstance(found, str):
                return Path(found)
        looked.append(f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}")
    if cfg.url:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if hub.is_file():
            return hub
        looked.append(str(hub))
    where = f" (Hugging Face model {cfg.hf_hub_id})" if cfg.hf_hub_id else ""
    raise FileNotFoundError(
        f"Weights for timm:{name}{where} are not on this machine: looked in "
        f"{' and '.join(looked)}. This machine cannot download them. On one that can, run "
        f"`timm.create_model({name!r}, pretrained=True)` and copy its cache here, or pass "
        "weights='/path/to/model.safetensors', or weights=None for a random init "
        "(--weights PATH / --weights none on the command line)."
    )


def _labels(model: nn.Module, cfg: dict) -> tuple[str, ...] | None:
    names = cfg.get("label_descriptions") or cfg.get("label_names")
    if names:
        return tuple(names)
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        return None
    # "tench, Tinca tinca" -> "tench", as torchvision names the classes
    return tuple(d.split(",")[0] for d in ImageNetInfo(subset).label_descriptions())


def info_from(model: nn.Module, name: str = "") -> ModelInfo:
    """A timm model's :class:`ModelInfo` from its ``pretrained_cfg`` (see the module
    docstring)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = tuple(cfg.get("input_size") or (3, 224, 224))
    fixed = bool(cfg.get("fixed_input_size", False))
    embed = getattr(model, "patch_embed", None)
    img_size = getattr(embed, "img_size", None)
    if img_size is not None:  # built with its own img_size; strict: that size only
        size = (size[0], *img_size)
        fixed = bool(getattr(embed, "strict_img_size", fixed)) and not getattr(
            embed, "dynamic_img_pad", False
        )
    channels = getattr(model, "in_chans", None) or size[0]
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is not None and len(mean) != channels:
        mean = std = None  # ImageNet statistics do not fit other channel counts
    return ModelInfo(
        input_size=(channels, *size[1:]),
        mean=tuple(mean) if mean is not None else None,
        std=tuple(std) if std is not None else None,
        labels=_labels(model, cfg),
        name=name or f"timm:{cfg.get('architecture', type(model).__name__)}",
        fixed_size=fixed,
    )
