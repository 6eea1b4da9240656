"""Naming and tracing: which activations a model has and what they are called.

Layers are addressed by the dotted names of ``model.named_modules()``, plus two
special names: ``"input"`` (the tensor given to the model) and ``"output"`` (what
the model returns, e.g. logits). A module that runs more than once per forward
pass (torchvision's ``BasicBlock`` calls ``self.relu`` twice) is addressed per
call, ``"layer1.0.relu:0"`` and ``"layer1.0.relu:1"``; its bare name is refused
with an error that lists those, because "which call?" has no right default.
:func:`trace` runs one probe forward pass per model and input shape (cached) and
records every module call, its output shape and its layout (:mod:`.layouts`: which
dimension holds the features); an unknown name lists the nearest valid names.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fvis.hooks.handles import hookable, hooks_on
from fvis.hooks.intercept import tensors_in
from fvis.hooks.layouts import Layout, detect, patch_grid, prefix_tokens
from fvis.hooks.layouts import parse as parse_layout
from fvis.hooks.state import guard
from fvis.models.metadata import info as model_info
from fvis.outputs import select

__all__ = [
    "INPUT",
    "OUTPUT",
    "LayerError",
    "LayerInfo",
    "Trace",
    "layers",
    "layout",
    "locate",
    "model_device",
    "module_for",
    "parse",
    "trace",
]

INPUT = "input"
OUTPUT = "output"


class LayerError(KeyError):
    """A layer name that does not address exactly one activation of the model."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class LayerInfo:
    """One addressable activation: its name, module type, shape (without batch) and
    :class:`~fvis.hooks.layouts.Layout`."""

    name: str
    type: str
    shape: tuple[int, ...]
    layout: Layout = field(default=Layout(), compare=False)

    @property
    def features(self) -> int:
        """The number of units: channels (NCHW), the last dim (NHWC, tokens)."""
        return self.layout.features(self.shape)

    channels = features  # the name units and the CLI have always used

    @property
    def grid(self) -> tuple[int, ...]:
        """The positions a neuron can sit at: ``(H, W)``, the token grid, or ``()``."""
        return self.layout.spatial(self.shape)

    @property
    def layout_name(self) -> str:
        """``str(layout)``, or ``vector`` for a flat (features,) activation."""
        return str(self.layout) if len(self.shape) > 1 else "vector"

    def __repr__(self) -> str:
        return (
            f"LayerInfo(name={self.name!r}, type={self.type!r}, shape={self.shape}, "
            f"layout={self.layout_name!r}, features={self.features}, grid={self.grid})"
        )


@dataclass(frozen=True)
class Trace:
    """What one forward pass of the model does, for one input shape.

    ``calls[name]`` is the list of output shapes (without batch), one per call of
    the module named ``name`` (``""`` is the model itself), in execution order.
    ``feeds``: ``((module, call), (producer, call), uses)`` for each module call whose
    first input is the very tensor another module call returned (the innermost module
    that returned it), with ``uses`` the number of torch operations of the whole forward
    pass that took that tensor (the canonizers fold a BatchNorm into the layer feeding it
    only when the BatchNorm is its one use).
    """

    calls: dict[str, list[tuple[int, ...] | None]]
    types: dict[str, str]
    input_shape: tuple[int, ...]
    finished: tuple[tuple[str, int], ...] = ()  # (module, call) in the order calls end
    feeds: tuple[tuple[tuple[str, int], tuple[str, int], int], ...] = ()
    layouts: dict[tuple[str, int], Layout] = field(default_factory=dict, compare=False)
    prefix: int | None = None  # leading non-patch tokens the model declares

    def label(self, module: str, call: int) -> str:
        """The layer name of one call: ``module``, or ``module:call`` if it runs twice."""
        return module if len(self.calls.get(module, ())) <= 1 else f"{module}:{call}"

    def execution_order(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """``(layer name, module name, output shape)`` of every call with a tensor output,
        in the order the calls finish (a container after its children; not the model)."""
        return [
            (self.label(m, c), m, self.calls[m][c])
            for m, c in self.finished
            if m and self.calls[m][c] is not None
        ]

    def addressable(self, declared: Mapping[str, object] | None = None) -> list[LayerInfo]:
        """Every name :func:`capture` accepts, in execution order, with its layout
        (``declared``: ``{layer name: layout}`` overriding the detected ones)."""
        out = [LayerInfo(INPUT, "input", self.input_shape)]
        for name, shapes in self.calls.items():
            if name == "":
                continue
            for i, s in enumerate(shapes):
                if s is not None:
                    label = self.label(name, i)
                    lay = self.layout(label, declared)
                    out.append(LayerInfo(label, self.types[name], s, lay))
        root = self.calls.get("", [None])[0]
        if root is not None:
            out.append(LayerInfo(OUTPUT, self.types[""], root, self.layout(OUTPUT, declared)))
        return out

    def layout(self, name: str, declared: Mapping[str, object] | None = None) -> Layout:
        """The :class:`~fvis.hooks.layouts.Layout` of the activation ``name``: the one
        ``declared`` for it (``{layer name: "NCHW" | "NHWC" | "tokens" | Layout}``), else
        the detected one (:func:`fvis.hooks.layouts.detect`)."""
        shape = self.shape(name)
        if declared and name in declared:
            image = self.input_shape[-2:] if len(self.input_shape) == 3 else (0, 0)
            return parse_layout(
                declared[name], shape, lambda sh: patch_grid(sh, image, self.prefix)
            )
        module, call = locate(self, name)
        if module is None:
            module, call = ("", 0) if name != INPUT else (None, None)
        return self.layouts.get((module, call), Layout())

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape (without batch) of the activation ``name`` (validated)."""
        module, call = locate(self, name)
        if module is None:
            return self.input_shape if name == INPUT else self.calls[""][0]
        return self.calls[module][call or 0]


_TRACES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _first_tensor(x) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    return None


def _main_output(out) -> torch.Tensor | None:
    """The model's main output tensor (:func:`fvis.outputs.select`), if it has one: a dict
    or ``ModelOutput`` output stays addressable as ``"output"``."""
    try:
        return select(out)
    except ValueError:
        return None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def trace(model: nn.Module, example: torch.Tensor | Sequence[int]) -> Trace:
    """Run one forward pass (no grad, eval mode) recording every module call and output
    shape (TorchScript modules are opaque: their insides are not recorded).

    ``example`` is an input tensor or an input shape without batch, e.g. ``(1, 28, 28)``.
    Cached per model and input shape; the cache dies with the model.
    """
    if isinstance(example, torch.Tensor):
        shape = tuple(example.shape[1:])
    else:
        shape = tuple(int(s) for s in example)
    cached = _TRACES.get(model, {}).get(shape)
    if cached is not None:  # no lock: another thread's long call on the model need not end
        return cached
    with guard(model):  # one thread per model: the cache entry is computed once
        cache = _TRACES.setdefault(model, {})
        if shape not in cache:
            cache[shape] = _trace(model, example, shape)
        return cache[shape]


def _trace(model: nn.Module, example, shape: tuple[int, ...]) -> Trace:
    if isinstance(example, torch.Tensor):
        x = example[:1].detach()
    else:
        x = torch.zeros((1, *shape), device=model_device(model))
    calls: dict[str, list] = {}
    types: dict[str, str] = {}
    finished: list[tuple[str, int]] = []
    modules = hookable(model)
    for name, module in modules.items():
        types[name] = type(module).__name__
        calls.setdefault(name, [])

    uses = _Uses()
    feeds: list[tuple[tuple[str, int], tuple[str, int]]] = []

    def hook(name):
        def record(mod, inp, out):
            t = _first_tensor(out) if name else _main_output(out)
            call = (name, len(calls[name]))
            finished.append(call)
            calls[name].append(tuple(t.shape[1:]) if t is not None else None)
            source = uses.producer(inp[0] if inp else None)
            if source is not None:
                feeds.append((call, source))
            if t is not None:
                uses.watch(t, call)

        return record

    with hooks_on((m, hook(n)) for n, m in modules.items()), torch.no_grad(), uses:
        model(x)
    calls = {n: s for n, s in calls.items() if s}
    feeds = tuple((call, src, uses.count(src)) for call, src in feeds)
    return Trace(
        calls=calls,
        types=types,
        input_shape=shape,
        finished=tuple(finished),
        feeds=feeds,
        layouts=detect(model, finished, calls, feeds, shape),
        prefix=prefix_tokens(model),
    )


class _Uses(TorchFunctionMode):
    """Counts, for the tensors module calls return, the torch operations that produce a
    tensor from them (thread-local, like every ``TorchFunctionMode``)."""

    def __init__(self):
        super().__init__()
        self.watched: dict[int, tuple[torch.Tensor, tuple[str, int]]] = {}  # id -> (t, call)
        self.uses: dict[tuple[str, int], int] = {}

    def watch(self, t: torch.Tensor, call: tuple[str, int]) -> None:
        if self.producer(t) is None:  # the innermost module that returned it
            self.watched[id(t)] = (t, call)  # holding t: its id cannot be reused

    def producer(self, t) -> tuple[str, int] | None:
        entry = self.watched.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is t else None

    def count(self, call: tuple[str, int]) -> int:
        return self.uses.get(call, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) or (
            isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor)
        ):
            for t in tensors_in((args, kwargs)):
                call = self.producer(t)
                if call is not None:
                    self.uses[call] = self.uses.get(call, 0) + 1
        return out


def parse(name: str) -> tuple[str, int | None]:
    """Split ``"layer1.0.relu:1"`` into ``("layer1.0.relu", 1)``; no index gives ``None``."""
    base, sep, idx = name.rpartition(":")
    if sep and idx.isdigit():
        return base, int(idx)
    return name, None


def _nearest(name: str, candidates: Iterable[str], n: int = 6) -> list[str]:
    candidates = list(candidates)
    near = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    prefix = [c for c in candidates if c.startswith(name) and c not in near]
    return (near + prefix)[:n]


def locate(tr: Trace, name: str) -> tuple[str | None, int | None]:
    """Return (module name, call index) for ``name``; ``None`` module for input/output."""
    base, call = parse(name)
    if base not in tr.calls:
        if name in (INPUT, OUTPUT):
            return None, None
        valid = [li.name for li in tr.addressable()]
        near = _nearest(name, valid)
        hint = f" Nearest names: {', '.join(near)}." if near else ""
        raise LayerError(
            f"Unknown layer {name!r}.{hint} `fvis.layers(model)` or `fvis layers --model ...` "
            "lists every layer with its shape."
        )
    n_calls = len(tr.calls[base])
    if call is None:
        if n_calls > 1:
            per_call = ", ".join(f"{base}:{i}" for i in range(n_calls))
            raise LayerError(
                f"Module {base!r} runs {n_calls} times in one forward pass, so its name alone "
                f"is ambiguous. Address one call: {per_call}."
            )
        call = 0 if base else None
    elif call >= n_calls:
        raise LayerError(
            f"Module {base!r} runs {n_calls} time(s) per forward pass; call index {call} is out "
            f"of range 0..{n_calls - 1}."
        )
    if tr.calls[base][call or 0] is None:
        raise LayerError(
            f"Module {base!r} returns {tr.types[base]} output that is not a tensor; address one "
            "of its submodules instead."
        )
    if base == "":
        return None, None
    return base, call


def module_for(model: nn.Module, name: str) -> nn.Module:
    """The module a layer name refers to (the model itself for ``"output"``)."""
    base, _ = parse(name)
    if name == OUTPUT or base == "":
        return model
    mods = dict(model.named_modules())
    if base not in mods:
        near = _nearest(base, mods)
        raise LayerError(f"Unknown layer {name!r}. Nearest names: {', '.join(near)}.")
    return mods[base]


def layers(model: nn.Module, input_size: Sequence[int] | None = None) -> list[LayerInfo]:
    """Every addressable layer with its output shape, layout, number of features and
    spatial grid, for one input of ``input_size`` (C, H, W).

    ``input_size`` defaults to the model's metadata (see :func:`fvis.models.info`).
    """
    info = model_info(model)
    if input_size is None:
        input_size = info.input_size
    return trace(model, input_size).addressable(info.layouts)


def layout(model: nn.Module, example: torch.Tensor | Sequence[int], name: str) -> Layout:
    """The layout of layer ``name`` for inputs like ``example``: declared in the model's
    ``ModelInfo.layouts``, else detected (:mod:`fvis.hooks.layouts`)."""
    return trace(model, example).layout(name, model_info(model).layouts)
