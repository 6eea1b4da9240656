"""Models by spec string, each carrying its :class:`ModelInfo`.

======================  ==========================================================
spec                    model
======================  ==========================================================
``fvis:mnist``          bundled MNIST CNN (offline; weights in ``fvis/models/weights``)
``fvis:mnist-mlp``      bundled MNIST MLP, an independent second classifier
``torchvision:NAME``    ``torchvision.models.NAME`` (classifiers and segmentation)
``timm:NAME``           ``timm.create_model(NAME)`` (:mod:`fvis.models.timm_models`)
``hf:FOLDER_OR_NAME``   a ``transformers`` image classifier (:mod:`fvis.models.hf_models`)
``PATH.pt``             a checkpoint written by :func:`save` (loaded ``weights_only``)
======================  ==========================================================

``weights`` is ``"DEFAULT"`` (the bundled weights, or the library's default weights
from the local cache; nothing is downloaded), ``None`` (random init, seeded with
:data:`INIT_SEED`, so the same in every process), a path to a
weights file, or for torchvision a weights enum or its name. Other keyword arguments
go to the model's constructor (``load_model("timm:vit_tiny_patch16_224", depth=2)``).

Models come back in eval mode with ``requires_grad`` off for every parameter. A module
passed in is set to eval mode and, unless it carries a :class:`ModelInfo`, described
from its own config (timm's ``pretrained_cfg``, a ``transformers`` config, a torchvision
ViT's image size); a ``transformers`` model comes back as a view returning its logits.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fvis.models.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, attach, info
from fvis.outputs import OutputView

__all__ = [
    "check_device",
    "default_device",
    "ModelInfo",
    "info",
    "attach",
    "load_model",
    "load_weights",
    "save",
    "BUNDLED",
    "WEIGHTS_DIR",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
INIT_SEED = 0  # torch's seed while a model with weights=None is built
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


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine; ``ValueError`` saying
    what is available for an unknown string or a CUDA device that is not there."""
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"unknown device {device!r}; use cpu, cuda or cuda:N (available: {_available()})"
            ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"CUDA requested ({device}) but not available; available: cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{dev} requested but not available; available: {_available()}")
    elif dev.type not in ("cpu", "meta") and not _backend_available(dev.type):
        raise ValueError(f"{dev.type} requested but not available; available: {_available()}")
    return dev


def _backend_available(kind: str) -> bool:
    module = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    return bool(getattr(module, "is_available", lambda: False)())


def _available() -> str:
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ", ".join(["cpu", *cuda])


def _prepare(
    model: nn.Module, meta: ModelInfo, device, spec: str = "", kwargs: dict | None = None
) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    attach(model, meta)
    model.fvis_source = {"spec": spec, "kwargs": dict(kwargs or {})}  # for save()
    return model.to(device) if device is not None else model


def load_model(spec: str | nn.Module, *, weights="DEFAULT", device=None, **kwargs) -> nn.Module:
    """Load a model by spec (see the module docstring). An ``nn.Module`` is set to eval
    mode and returned (a ``transformers`` model as a view returning its logits), with
    metadata read from its config attached if it had none."""
    if device is not None:
        device = check_device(device)
    if isinstance(spec, nn.Module):
        return _adopt(spec, device)
    kind, _, name = spec.partition(":")
    weights = None if _is_none(weights) else weights
    if kind == "fvis":
        if name not in BUNDLED:
            raise ValueError(
                f"Unknown bundled model {spec!r}; bundled: "
                f"{', '.join('fvis:' + n for n in BUNDLED)}."
            )
        make, fname, meta = BUNDLED[name]
        with _seeded():
            model = make()
        if weights is None:
            return _prepare(model, meta, device, spec)
        path = WEIGHTS_DIR / fname if weights == "DEFAULT" else Path(weights)
        if not path.exists():
            raise FileNotFoundError(
                f"Weights {path} for {spec} are missing; "
                + (
                    "recreate them with `python scripts/train_mnist.py` or reinstall fvis."
                    if weights == "DEFAULT"
                    else "pass an existing file, weights='DEFAULT' or weights=None "
                    "(--weights PATH / default / none on the command line)."
                )
            )
        load_weights(model, _state_dict(path), path)
        return _prepare(model, meta, device, spec)
    if kind in ("torchvision", "timm", "hf"):
        if kind == "torchvision":
            build = _torchvision
        elif kind == "timm":
            from fvis.models.timm_models import load as build
        else:
            from fvis.models.hf_models import load as build
        with _seeded():
            model, meta = build(name, weights, **kwargs)
        return _prepare(model, meta, device, spec, kwargs)
    if _is_checkpoint(spec):
        return _from_checkpoint(Path(spec), device)
    raise ValueError(
        f"Cannot read model spec {spec!r}. Use 'fvis:mnist', 'torchvision:resnet18', "
        "'timm:resnet18', 'hf:FOLDER' or a path to a checkpoint written by fvis.models.save."
    )


@contextlib.contextmanager
def _seeded():
    """Torch's generator at :data:`INIT_SEED` for the block and restored after it: a random
    init (and the init under loaded weights) is the same model in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        yield


def _adopt(model: nn.Module, device) -> nn.Module:
    """A module passed in: eval mode, a logits view for ``transformers`` models, and
    its info (see :func:`fvis.models.info`) attached unless it has one."""
    from fvis.models.metadata import is_hf

    if is_hf(model) and not isinstance(model, OutputView):
        view = OutputView(model, "logits")
        if hasattr(model, "fvis_info"):
            attach(view, model.fvis_info)
        model = view
    model.eval()
    if not hasattr(model, "fvis_info"):
        attach(model, info(model))
    return model.to(device) if device is not None else model


def _torchvision(name: str, weights, **kwargs) -> tuple[nn.Module, ModelInfo]:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        import difflib

        names = torchvision.models.list_models(module=torchvision.models)
        near = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        lister = "torchvision.models.list_models() lists them"
        hint = f"Nearest: {', '.join(near)}" if near else lister
        raise ValueError(f"torchvision has no model {name!r}. {hint}.") from None
    size = 299 if name.startswith("inception") else 224
    meta = ModelInfo(
        input_size=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD, name=f"torchvision:{name}"
    )
    if "weights_backbone" in inspect.signature(builder).parameters:
        # segmentation/detection: never fetch ImageNet weights for the backbone
        kwargs = {"weights_backbone": None, **kwargs}
    if weights is None:
        if name == "googlenet":
            kwargs = {"aux_logits": False, "init_weights": True, **kwargs}
        model = builder(weights=None, **kwargs)
        return model, meta.with_(**_fixed_size(model, meta.input_size))
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and _looks_like_path(weights)):
        if not os.path.exists(weights):
            raise FileNotFoundError(f"No weights file at {weights} for torchvision:{name}.")
        model = builder(weights=None, **kwargs)
        load_weights(model, _state_dict(weights), weights)
        return model, meta.with_(**_fixed_size(model, meta.input_size))
    enum = torchvision.models.get_model_weights(name)
    if isinstance(weights, str):
        if weights != "DEFAULT" and weights not in enum.__members__:
            names = [n for n, member in enum.__members__.items() if member.name == n]
            raise ValueError(
                f"torchvision:{name} has no weights {weights!r}; choose 'DEFAULT', None, "
                f"a path, or one of: {', '.join(names)} (on the command line: --weights "
                "default / none / PATH / NAME)."
            )
        weights = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    w = weights
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    if not cached.exists():
        raise FileNotFoundError(
            f"Weights {w} for torchvision:{name} are not on this machine: looked for {cached}. "
            f"This machine cannot download them. Copy the file from {w.url} to that path "
            f"(or set TORCH_HOME), or pass weights='/path/to/file.pth', or weights=None for "
            f"a randomly initialised model (--weights PATH / --weights none on the command "
            f"line)."
        )
    # Build as torchvision's builder would for these weights, but load the file ourselves,
    # weights_only (torchvision's loader unpickles anything).
    kwargs = {**_pretrained_kwargs(name, w), **kwargs}
    aux = kwargs.get("aux_logits")
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = True  # the files hold the auxiliary heads; dropped below
    model = builder(weights=None, **kwargs)
    load_weights(model, _state_dict(cached), cached)
    if aux is False:
        model.aux_logits = False
        for head in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, head):
                setattr(model, head, None)
    crop = getattr(w.transforms(), "crop_size", None)  # the size the weights were evaluated at
    if crop:
        meta = meta.with_(input_size=(3, crop[0], crop[0]))
    meta = meta.with_(labels=tuple(w.meta["categories"]))
    return model, meta.with_(**_fixed_size(model, meta.input_size))


def _fixed_size(model: nn.Module, size: tuple[int, int, int]) -> dict:
    """``ModelInfo`` changes for torchvision models that take one input size: ViT (its
    ``image_size``) and MaxViT (its grid partitions; the size it was built for)."""
    from fvis.models.metadata import torchvision_fixed

    found = torchvision_fixed(model)
    if found is None:
        return {}
    return {"fixed_size": True, "input_size": (size[0], *(found or size[1:]))}


def _pretrained_kwargs(name: str, w) -> dict:
    """The constructor arguments torchvision's builder fixes when given weights ``w``
    (see ``_ovewrite_named_param`` in ``torchvision/models``); fvis models keep no
    auxiliary heads unless asked."""
    kwargs: dict = {"num_classes": len(w.meta["categories"])}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, init_weights=False, aux_logits=False)
    elif name.startswith(("fcn_", "deeplabv3_")):
        kwargs["aux_loss"] = True  # the files hold the auxiliary head
    elif name.startswith("vit_"):
        kwargs["image_size"] = w.meta["min_size"][0]
    elif name.startswith("maxvit"):
        kwargs["input_size"] = w.meta["min_size"]
    return kwargs


def _is_checkpoint(spec: str) -> bool:
    return os.path.splitext(spec)[1] in (".pt", ".pth", ".ckpt") or os.path.exists(spec)


def _is_none(weights) -> bool:
    return weights is None or (isinstance(weights, str) and weights.lower() == "none")


def _looks_like_path(s: str) -> bool:
    return (
        os.sep in s
        or "/" in s
        or os.path.splitext(s)[1] in (".pt", ".pth", ".ckpt")
        or os.path.exists(s)
    )


def _read(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` with a message for a file it cannot read."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip nor a pickle
        raise ValueError(
            f"{path} is not a torch file (it starts with {head!r}, not a zip archive or a "
            "pickle). Write weights with torch.save(model.state_dict(), path) or "
            "fvis.models.save(model, path, spec)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # pickled modules and TorchScript are not loadable safely
        raise ValueError(
            f"{path} is not a weights-only checkpoint (it pickles Python objects). fvis loads "
            "checkpoints with weights_only=True; write one with fvis.models.save(model, path, "
            "spec), or pass your nn.Module object to the Python API directly."
        ) from None
    except (OSError, EOFError, RuntimeError, KeyError) as e:
        raise ValueError(
            f"{path} is not a readable torch file: it is truncated or corrupt "
            f"({type(e).__name__}). Write it again with torch.save or fvis.models.save."
        ) from None


def _state_dict(path: str | os.PathLike) -> dict:
    """The state dict in a weights file: a bare one, or the ``"state_dict"`` entry of a
    checkpoint (loaded ``weights_only``)."""
    ckpt = _read(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return ckpt["state_dict"]
    return ckpt


def load_weights(model: nn.Module, state, source) -> nn.Module:
    """``model.load_state_dict(state)``; ``ValueError`` listing the missing and unexpected
    keys and mismatched shapes when ``state`` (read from ``source``) is not the model's."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{source} does not hold a state dict ({type(state).__name__})")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and getattr(state[k], "shape", None) != own[k].shape
    ]
    problems = [
        f"{what} ({len(keys)}): {', '.join(keys[:5])}{', …' if len(keys) > 5 else ''}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shapes differ (file vs model)", shapes),
        )
        if keys
    ]
    if problems:
        name = info(model).name or type(model).__name__
        raise ValueError(
            f"the weights in {source} do not fit {name}: {'; '.join(problems)}. Load them "
            "with the architecture they were saved from."
        )
    model.load_state_dict(state)
    return model


def save(model: nn.Module, path: str | os.PathLike, spec: str | None = None) -> None:
    """Write a checkpoint that ``load_model(path)`` reads back (``weights_only``): the
    architecture's spec (e.g. ``"torchvision:resnet18"``; by default the one the model
    was loaded with, or read from a timm or ``transformers`` model), the constructor
    arguments it was loaded with, a ``transformers`` model's config, its weights and
    its info. Written atomically."""
    from fvis.io import atomic_save

    meta = info(model)
    source = _source(model, spec)
    atomic_save(
        {
            "fvis_format": 1,
            **source,
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


_PLAIN = (str, int, float, bool, type(None))


def _plain(value) -> bool:
    """Whether ``value`` is data a weights-only load can read (no classes, no code)."""
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _source(model: nn.Module, spec: str | None) -> dict:
    """``{"spec", "kwargs"[, "hf_config"]}``: how :func:`load_model` rebuilds ``model``."""
    from fvis.models.metadata import is_hf

    known = getattr(model, "fvis_source", None) or {}
    kwargs = known.get("kwargs", {}) if spec in (None, known.get("spec")) else {}
    extra = {}
    if is_hf(model):
        from fvis.models.hf_models import config_dict

        spec = spec or known.get("spec") or "hf:" + getattr(model.config, "model_type", "")
        extra = {"hf_config": config_dict(getattr(model, "inner", model))}
    elif spec is None and known.get("spec"):
        spec = known["spec"]
    elif spec is None and isinstance(getattr(model, "pretrained_cfg", None), dict):
        spec = f"timm:{model.pretrained_cfg['architecture']}"
        kwargs = {"num_classes": model.num_classes}
    if not spec:
        raise ValueError(
            f"save() cannot tell how to rebuild this {type(model).__name__}; pass its spec, "
            "e.g. save(model, path, 'torchvision:resnet18')."
        )
    if not _plain(kwargs):
        raise ValueError(
            f"the model was built with arguments a weights-only checkpoint cannot hold "
            f"({kwargs}); save its state_dict and rebuild it yourself."
        )
    return {"spec": spec, "kwargs": dict(kwargs), **extra}


def _from_checkpoint(path: Path, device) -> nn.Module:
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    ckpt = _read(path)
    if not isinstance(ckpt, dict) or "spec" not in ckpt:
        raise ValueError(
            f"{path} is not an fvis checkpoint: it holds a bare state dict (or other data) "
            "with no 'spec' naming the architecture. Load it into your model and pass the "
            "model object, pass it as weights= of the matching spec (e.g. "
            "load_model('torchvision:resnet18', weights=path)), or re-save it with "
            "fvis.models.save(model, path, spec)."
        )
    spec, kwargs = ckpt["spec"], ckpt.get("kwargs") or {}
    if not isinstance(spec, str) or _is_checkpoint(spec):
        raise ValueError(
            f"{path} names its architecture {spec!r}; a checkpoint's spec must name an "
            "architecture (e.g. fvis:mnist, torchvision:resnet18), not a checkpoint file"
        )
    if "hf_config" in ckpt:
        from fvis.models.hf_models import from_config

        model = from_config(ckpt["hf_config"])
    else:
        model = load_model(spec, weights=None, **kwargs)
    load_weights(model, ckpt.get("state_dict"), path)
    m = ckpt.get("info") or {}
    meta = ModelInfo(
        input_size=tuple(m.get("input_size", info(model).input_size)),
        mean=tuple(m["mean"]) if m.get("mean") else None,
        std=tuple(m["std"]) if m.get("std") else None,
        labels=tuple(m["labels"]) if m.get("labels") else None,
        name=m.get("name", str(path)),
        fixed_size=bool(m.get("fixed_size", False)),
    )
    return _prepare(model, meta, device, spec, kwargs)
