"""Models by spec string, each carrying its :class:`ModelInfo`.

======================  ==========================================================
spec                    model
======================  ==========================================================
``fvis:mnist``          bundled MNIST CNN (offline; weights in ``fvis/models/weights``)
``fvis:mnist-mlp``      bundled MNIST MLP, an independent second classifier
``torchvision:NAME``    ``torchvision.models.NAME``
``PATH.pt``             a checkpoint written by :func:`save` (loaded ``weights_only``)
======================  ==========================================================

``weights`` is ``"DEFAULT"`` (the bundled weights, or torchvision's default weights
from the local torch hub cache; nothing is downloaded), ``None`` (random init), a
path to a state dict, or for torchvision a weights enum or its name.

Models come back in eval mode with ``requires_grad`` off for every parameter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fvis.models.info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, attach, info

__all__ = [
    "default_device",
    "ModelInfo",
    "info",
    "attach",
    "load_model",
    "save",
    "BUNDLED",
    "WEIGHTS_DIR",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
DIGITS = tuple(str(i) for i in range(10))
# mean/std: the usual MNIST statistics; the bundled models end in flatten → linear.
MNIST_INFO = ModelInfo(
    input_size=(1, 28, 28), mean=(0.1307,), std=(0.3081,), labels=DIGITS, fixed_size=True
)


def _mnist_cnn() -> nn.Module:
    from fvis.models.mnist import MnistCNN

    return MnistCNN()


def _mnist_mlp() -> nn.Module:
    from fvis.models.mnist import MnistMLP

    return MnistMLP()


# name -> (constructor, weight file, info). Weights are made by scripts/train_mnist.py.
BUNDLED: dict[str, tuple[Callable[[], nn.Module], str, ModelInfo]] = {
    "mnist": (_mnist_cnn, "mnist.pt", MNIST_INFO.with_(name="fvis:mnist")),
    "mnist-mlp": (_mnist_mlp, "mnist_mlp.pt", MNIST_INFO.with_(name="fvis:mnist-mlp")),
}


def default_device() -> str:
    """``"cuda"`` (the current CUDA device) when one is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _prepare(model: nn.Module, meta: ModelInfo, device) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    attach(model, meta)
    return model.to(device) if device is not None else model


def load_model(spec: str | nn.Module, *, weights="DEFAULT", device=None, **kwargs) -> nn.Module:
    """Load a model by spec (see the module docstring); an ``nn.Module`` is returned as is
    (with inferred metadata attached if it had none)."""
    if isinstance(spec, nn.Module):
        if not hasattr(spec, "fvis_info"):
            attach(spec, info(spec))
        return spec.to(device) if device is not None else spec
    kind, _, name = spec.partition(":")
    if kind == "fvis":
        if name not in BUNDLED:
            raise ValueError(
                f"Unknown bundled model {spec!r}; bundled: "
                f"{', '.join('fvis:' + n for n in BUNDLED)}."
            )
        make, fname, meta = BUNDLED[name]
        model = make()
        if _is_none(weights):
            return _prepare(model, meta, device)
        path = WEIGHTS_DIR / fname if weights == "DEFAULT" else Path(weights)
        if not path.exists():
            raise FileNotFoundError(
                f"Weights {path} for {spec} are missing; "
                + (
                    "recreate them with `python scripts/train_mnist.py` or reinstall fvis."
                    if weights == "DEFAULT"
                    else "pass an existing file, weights='DEFAULT' or weights=None."
                )
            )
        model.load_state_dict(_state_dict(path))
        return _prepare(model, meta, device)
    if kind == "torchvision":
        return _prepare(*_torchvision(name, weights, **kwargs), device)
    if os.path.splitext(spec)[1] in (".pt", ".pth", ".ckpt") or os.path.exists(spec):
        return _from_checkpoint(Path(spec), device)
    raise ValueError(
        f"Cannot read model spec {spec!r}. Use 'fvis:mnist', 'torchvision:resnet18' or a "
        "path to a checkpoint written by fvis.models.save."
    )


def _torchvision(name: str, weights, **kwargs) -> tuple[nn.Module, ModelInfo]:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        import difflib

        names = torchvision.models.list_models(module=torchvision.models)
        near = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        raise ValueError(
            f"torchvision has no model {name!r}. Nearest: {', '.join(near) or '-'}."
        ) from None
    size = 299 if name.startswith("inception") else 224
    meta = ModelInfo(
        input_size=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD, name=f"torchvision:{name}"
    )
    if _is_none(weights):
        if name == "googlenet":
            kwargs = {"aux_logits": False, "init_weights": True, **kwargs}
        return builder(weights=None, **kwargs), meta
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and _looks_like_path(weights)):
        if not os.path.exists(weights):
            raise FileNotFoundError(f"No weights file at {weights} for torchvision:{name}.")
        model = builder(weights=None, **kwargs)
        model.load_state_dict(_state_dict(weights))
        return model, meta
    enum = torchvision.models.get_model_weights(name)
    if isinstance(weights, str):
        if weights != "DEFAULT" and weights not in enum.__members__:
            names = [n for n, member in enum.__members__.items() if member.name == n]
            raise ValueError(
                f"torchvision:{name} has no weights {weights!r}; choose 'DEFAULT', None, "
                f"a path, or one of: {', '.join(names)}."
            )
        weights = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    w = weights
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    if not cached.exists():
        raise FileNotFoundError(
            f"Weights {w} for torchvision:{name} are not on this machine: looked for {cached}. "
            f"This machine cannot download them. Copy the file from {w.url} to that path "
            f"(or set TORCH_HOME), or pass weights='/path/to/file.pth', or weights=None for "
            f"a randomly initialised model."
        )
    # Build as torchvision's builder would for these weights, but load the file ourselves,
    # weights_only (torchvision's loader unpickles anything).
    kwargs = {**_pretrained_kwargs(name, w), **kwargs}
    aux = kwargs.get("aux_logits")
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = True  # the files hold the auxiliary heads; dropped below
    model = builder(weights=None, **kwargs)
    model.load_state_dict(_state_dict(cached))
    if aux is False:
        model.aux_logits = False
        for head in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, head):
                setattr(model, head, None)
    crop = getattr(w.transforms(), "crop_size", None)  # the size the weights were evaluated at
    if crop:
        meta = meta.with_(input_size=(3, crop[0], crop[0]))
    return model, meta.with_(labels=tuple(w.meta["categories"]))


def _pretrained_kwargs(name: str, w) -> dict:
    """The constructor arguments torchvision's builder fixes when given weights ``w``
    (see ``_ovewrite_named_param`` in ``torchvision/models``); fvis models keep no
    auxiliary heads unless asked."""
    kwargs: dict = {"num_classes": len(w.meta["categories"])}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, init_weights=False, aux_logits=False)
    elif name.startswith("vit_"):
        kwargs["image_size"] = w.meta["min_size"][0]
    elif name.startswith("maxvit"):
        kwargs["input_size"] = w.meta["min_size"]
    return kwargs


def _is_none(weights) -> bool:
    return weights is None or (isinstance(weights, str) and weights.lower() == "none")


def _looks_like_path(s: str) -> bool:
    return (
        os.sep in s
        or "/" in s
        or os.path.splitext(s)[1] in (".pt", ".pth", ".ckpt")
        or os.path.exists(s)
    )


def _state_dict(path: str | os.PathLike) -> dict:
    """The state dict in a weights file: a bare one, or the ``"state_dict"`` entry of a
    checkpoint (loaded ``weights_only``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return ckpt["state_dict"]
    return ckpt


def save(model: nn.Module, path: str | os.PathLike, spec: str) -> None:
    """Write a checkpoint that ``load_model(path)`` reads back: the architecture's spec
    (e.g. ``"fvis:mnist"`` or ``"torchvision:resnet18"``), its weights and its info.
    Written atomically."""
    from fvis.io import atomic_save

    meta = info(model)
    atomic_save(
        {
            "fvis_format": 1,
            "spec": spec,
            "state_dict": model.state_dict(),
            "info": {
                "input_size": list(meta.input_size),
                "mean": list(meta.mean) if meta.mean else None,
                "std": list(meta.std) if meta.std else None,
                "labels": list(meta.labels) if meta.labels else None,
                "name": meta.name,
                "fixed_size": meta.fixed_size,
            },
        },
        path,
    )


def _from_checkpoint(path: Path, device) -> nn.Module:
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled modules and TorchScript are not loadable safely
        raise ValueError(
            f"{path} is not a weights-only checkpoint ({type(e).__name__}). fvis loads "
            "checkpoints with weights_only=True; write one with fvis.models.save(model, path, "
            "spec), or pass your nn.Module object to the Python API directly."
        ) from None
    if not isinstance(ckpt, dict) or "spec" not in ckpt:
        raise ValueError(
            f"{path} is not an fvis checkpoint: it holds a bare state dict (or other data) "
            "with no 'spec' naming the architecture. Load it into your model and pass the "
            "model object, pass it as weights= of the matching spec (e.g. "
            "load_model('torchvision:resnet18', weights=path)), or re-save it with "
            "fvis.models.save(model, path, spec)."
        )
    model = load_model(ckpt["spec"], weights=None)
    model.load_state_dict(ckpt["state_dict"])
    m = ckpt.get("info") or {}
    meta = ModelInfo(
        input_size=tuple(m.get("input_size", info(model).input_size)),
        mean=tuple(m["mean"]) if m.get("mean") else None,
        std=tuple(m["std"]) if m.get("std") else None,
        labels=tuple(m["labels"]) if m.get("labels") else None,
        name=m.get("name", str(path)),
        fixed_size=bool(m.get("fixed_size", False)),
    )
    return _prepare(model, meta, device)
