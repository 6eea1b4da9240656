"""What every attribution method shares: targets, scores and gradients through the hook layer.

``Method(model).attribute(inputs, target=...)`` returns a tensor shaped like
``inputs`` (layer methods: like the layer's activation, or upsampled to the input
with ``upsample=True``). ``inputs`` are model inputs (already normalized, as the
model takes them). ``target`` is an int class, a per-item tensor of classes, any
:class:`fvis.objectives.Objective` (so a hidden channel can be explained), or
``None`` for each item's predicted class; ``(key, classes)`` addresses one entry of a
dict / ``ModelOutput`` / tuple output (``("out", 15)``; otherwise the main one,
:func:`fvis.outputs.select`). :class:`Target` resolves it once on the real
inputs and re-addresses it to expanded batches (IG steps, noise samples), which are
processed in chunks of ``internal_batch_size`` rows (:func:`row_chunks`).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fvis import hooks
from fvis.errors import NonFiniteError, check_int
from fvis.hooks import INPUT, OUTPUT
from fvis.models.metadata import info as model_info
from fvis.objectives import Objective
from fvis.outputs import rows, select

__all__ = [
    "CAPTUM_DIFFERENT",
    "CAPTUM_SPELLINGS",
    "Attribution",
    "Target",
    "check_inputs",
    "gradients",
    "item_sums",
    "resolve_target",
    "scores",
    "upsample",
]


def resolve_target(model: nn.Module, inputs: torch.Tensor, target) -> Objective:
    """The objective an attribution explains for ``inputs`` (see :class:`Target`)."""
    return Target(model, inputs, target).all()


def check_inputs(model: nn.Module, inputs, *, shape: bool = True) -> torch.Tensor:
    """Refuse inputs an attribution cannot explain: not a floating tensor of the model's
    dtype and device, an empty batch, NaN or infinity, or (with ``shape``) images
    (B, C, H, W) whose channels or, for a fixed-size model, size differ from
    ``model.fvis_info``. Returns ``inputs``."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor (B, ...), not {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(
            f"inputs must be floating point model inputs, not {inputs.dtype}; for images in "
            "0..255 use fvis.models.info(model).normalize(x.float() / 255)"
        )
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs of shape {tuple(inputs.shape)} have no items; give a batch (B, ...) with B ≥ 1"
        )
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = weight.device if weight is not None else hooks.model_device(model)
    if inputs.device != device:
        raise ValueError(
            f"inputs are on {inputs.device} but the model is on {device}; use inputs.to('{device}')"
        )
    if weight is not None and inputs.dtype != weight.dtype:
        raise TypeError(
            f"inputs are {inputs.dtype} but the model's weights are {weight.dtype}; use "
            f"inputs.to({weight.dtype})"
        )
    info = getattr(model, "fvis_info", None)
    if shape and info is not None and inputs.dim() == 4:
        c, h, w = info.input_size
        if inputs.shape[1] != c:
            raise ValueError(
                f"inputs have {inputs.shape[1]} channels; {info.name or 'the model'} takes "
                f"{c} (input size {c}×{h}×{w})"
            )
        if info.fixed_size and tuple(inputs.shape[2:]) != (h, w):
            raise ValueError(
                f"inputs are {inputs.shape[2]}×{inputs.shape[3]}; {info.name or 'the model'} "
                f"takes only {h}×{w} (resize them first)"
            )
    finite = torch.isfinite(inputs)
    if not bool(finite.all()):
        items = (~finite.flatten(1).all(1)).nonzero().flatten().tolist()
        raise NonFiniteError(
            f"inputs contain NaN or infinite values (items {items[:8]}); an attribution of "
            "them would mean nothing"
        )
    return inputs


def scores(
    model: nn.Module, inputs: torch.Tensor, objective: Objective, layers=()
) -> tuple[torch.Tensor, hooks.Activations]:
    """``(objective value per item (B,), activations)``, capturing ``objective.layers`` and
    ``layers``; the forward pass stops after the last of them."""
    acts = hooks.capture(model, inputs, list(objective.layers) + list(layers))
    return objective(acts), acts


def gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    layer: str = INPUT,
    *,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d score / d A_layer, A_layer, score)`` for the activation ``A`` of ``layer``
    (``"input"`` by default). Each item's score depends on its own input only, so one
    backward of the summed scores gives every item's gradient."""
    obj = target if isinstance(target, Objective) else resolve_target(model, inputs, target)
    x = inputs.detach().requires_grad_(True)
    s, acts = scores(model, x, obj, [layer])
    a = acts[layer]
    (g,) = torch.autograd.grad(s.sum(), a, create_graph=create_graph)
    return g, a, s


def item_sums(t: torch.Tensor) -> torch.Tensor:
    """``Σ`` over everything but the batch dimension: (B, ...) → (B,); a batch of scalars
    (B,) is returned as it is."""
    return t.reshape(t.shape[0], -1).sum(1)


def upsample(maps: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """Resize maps (B, H, W) or (B, C, H, W) to ``size`` (H', W'): ``"bilinear"``
    (half-pixel centres, ``align_corners=False``) or ``"nearest"``."""
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation mode must be 'bilinear' or 'nearest', not {mode!r}")
    squeeze = maps.dim() == 3
    m = maps.unsqueeze(1) if squeeze else maps
    corners = False if mode == "bilinear" else None
    m = F.interpolate(m, size=tuple(size), mode=mode, align_corners=corners)
    return m.squeeze(1) if squeeze else m


class Attribution:
    """Base class: holds the model and its metadata; subclasses implement ``attribute``.

    Every ``attribute`` also takes captum's spelling of an option where it means the same
    (:data:`CAPTUM_SPELLINGS`), and refuses captum options that mean something else with a
    message naming fvis's (:data:`CAPTUM_DIFFERENT`). ``attribute`` runs inside
    :func:`fvis.hooks.guard` (eval mode, one fvis call per model at a time, modes restored
    after)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.info = model_info(model)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "attribute" in cls.__dict__:
            cls.attribute = _guarded(_captum_spellings(cls.attribute))

    def attribute(self, inputs: torch.Tensor, target=None, **options) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name or type(self.model).__name__})"


# captum's keyword → fvis's, where both mean the same thing.
CAPTUM_SPELLINGS = {
    "n_steps": "steps",  # IntegratedGradients
    "return_convergence_delta": "return_delta",  # IG, DeepLift, SimpleTaylor
    "baselines": "reference",  # DeepLift (IG's is baselines in both)
    "nt_samples": "n",  # NoiseTunnel → SmoothGrad / SmoothGradSquared / VarGrad
    "relu_attributions": "relu",  # LayerGradCam → GradCAM, GradCAMPlusPlus
}
# captum keywords whose meaning fvis does not share: what to use instead.
CAPTUM_DIFFERENT = {
    "stdevs": "captum's stdevs is an absolute noise std; fvis's noise= is the std as a "
    "fraction of the valid input range (noise = stdevs / (max − min))",
    "nt_type": "choose the class instead: SmoothGrad, SmoothGradSquared or VarGrad",
    "additional_forward_args": "fvis calls model(inputs); bind other arguments in a wrapper module",
    "abs": "Saliency is |gradient|; use Gradient for the signed one",
}


def _captum_spellings(attribute):
    """Wrap ``attribute`` to accept :data:`CAPTUM_SPELLINGS` and explain
    :data:`CAPTUM_DIFFERENT`; a method taking ``**options`` passes unknown ones on."""
    params = inspect.signature(attribute).parameters
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    @functools.wraps(attribute)
    def wrapper(self, *args, **kwargs):
        for key in [k for k in kwargs if k not in params]:
            ours = CAPTUM_SPELLINGS.get(key)
            name = f"{type(self).__name__}.attribute"
            if ours in params:
                if ours in kwargs:
                    raise TypeError(f"{name}: give {ours}= or captum's {key}=, not both")
                kwargs[ours] = kwargs.pop(key)
            elif passes_on:
                continue
            elif ours is not None:
                raise TypeError(f"{name} has no {key}= (captum's spelling of {ours}=)")
            elif key in CAPTUM_DIFFERENT:
                raise TypeError(f"{name} does not take captum's {key}=: {CAPTUM_DIFFERENT[key]}")
        return attribute(self, *args, **kwargs)

    return wrapper


def _guarded(attribute):
    @functools.wraps(attribute)
    def guarded(self, *args, **kwargs):
        with hooks.guard(self.model):
            return attribute(self, *args, **kwargs)

    return guarded


# Rows (model inputs) per forward pass when a method expands the batch (steps, noise
# samples, perturbations) and the caller gives no internal_batch_size: at least the
# batch, else the largest multiple of it not above this. 64 MNIST digits or 64 images
# at 224 px through a ResNet-18 with gradients fit in a few GiB.
DEFAULT_ROWS = 64


def default_rows(batch: int) -> int:
    """Rows per forward pass for an expansion of a batch of ``batch`` items."""
    return batch * max(1, DEFAULT_ROWS // batch)


def row_chunks(n_rows: int, size: int | None) -> Iterator[slice]:
    """Consecutive slices of ``range(n_rows)`` of at most ``size`` rows (all if None)."""
    size = n_rows if size is None else check_int("internal_batch_size", size)
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))


class _Classes(Objective):
    """Class logits ``out[r, classes[r]]`` of a batch (of output entry ``key`` when the
    model returns a dict, ``ModelOutput`` or tuple); a spatial output (B, K, H, W) gives
    the class map's mean. Keeps ``classes`` so that an expansion method can re-address it
    to its own rows."""

    __slots__ = ("classes", "key")

    def __init__(self, classes: torch.Tensor, key: str | None = None):
        self.classes = classes
        self.key = key

        def fn(a):
            out = select(a[OUTPUT], key)
            if out.dim() not in (2, 4):
                raise ValueError(
                    f"a class target needs a model output of shape (B, classes) or (B, classes, "
                    f"H, W); this model returns {tuple(out.shape)}. Pass an Objective as target."
                )
            n = out.shape[1]
            if classes.numel() != out.shape[0]:
                raise ValueError(f"target has {classes.numel()} classes for {out.shape[0]} rows")
            bad = (classes >= n) | (classes < 0)
            if bad.any():
                raise IndexError(
                    f"target class {classes[bad][0].item()} is out of range for a model with "
                    f"{n} outputs (valid: 0..{n - 1})"
                )
            picked = out.flatten(2).mean(2) if out.dim() == 4 else out
            return picked.gather(1, classes.to(out.device).view(-1, 1)).squeeze(1)

        shown = classes.tolist() if classes.numel() <= 8 else f"{classes.numel()} classes"
        where = f"{key}: " if key is not None else ""
        super().__init__(fn, [OUTPUT], f"class({where}{shown})")


def _grouped(objective: Objective, batch: int, groups: int) -> Objective:
    """``objective`` evaluated on each of ``groups`` consecutive blocks of ``batch`` rows,
    so an objective that addresses batch positions (``.on(i)``) still sees batch-shaped
    activations."""
    if groups == 1:
        return objective

    def fn(a):
        values = []
        for g in range(groups):
            block = slice(g * batch, (g + 1) * batch)
            values.append(objective(a.map(lambda _, v, block=block: rows(v, block))))
        return torch.cat(values)

    return Objective(fn, objective.layers, objective.name)


def _scattered(objective: Objective, items: torch.Tensor, batch: int) -> Objective:
    """``objective`` for rows where row ``r`` is a copy of item ``items[r]``, in any order
    and number: the rows are placed at their items' positions in batches of ``batch`` rows
    (one batch per repeat of an item; the other positions hold detached copies of a placed
    row) and each row's value is read at its item's position. Exact for objectives whose
    value for item ``i`` depends on item ``i`` alone (``channel``, ``.on(i)``,
    ``one_per_item``)."""
    items = items.cpu()
    order = torch.argsort(items, stable=True)
    ranked = items[order]
    repeat = torch.empty_like(items)  # how many earlier rows copy the same item
    repeat[order] = torch.arange(len(items)) - torch.searchsorted(ranked, ranked)
    blocks = []
    for k in range(int(repeat.max()) + 1):
        rows = (repeat == k).nonzero().flatten()
        fill = rows[:1].repeat(batch)
        fill[items[rows]] = rows
        placed = torch.zeros(batch, dtype=torch.bool)
        placed[items[rows]] = True
        blocks.append((rows, items[rows], fill, placed))
    inverse = torch.argsort(torch.cat([rows for rows, *_ in blocks]))

    def fn(a):
        values = []
        for _, pos, fill, placed in blocks:

            def place(_, t, fill=fill, placed=placed):
                at = t[fill.to(t.device)]
                mask = placed.to(t.device).view(-1, *([1] * (t.dim() - 1)))
                return torch.where(mask, at, at.detach())

            v = objective(a.map(place))
            values.append(v[pos.to(v.device)])
        return torch.cat(values)[inverse.to(values[0].device)]

    return Objective(fn, objective.layers, objective.name)


class Target:
    """A target resolved once on the real inputs ``(B, ...)`` and re-addressed to the
    rows of an expanded batch (each row a perturbed copy of one item).

    ``None`` becomes each item's predicted class (on the unperturbed inputs); an int, a
    class name or a ``(B,)`` tensor becomes per-item classes; any other
    :class:`~fvis.objectives.Objective` is kept and evaluated per block of ``B`` rows
    (exact for any objective when a chunk holds whole blocks; other chunks put each row
    at its item's position in a batch of ``B``, exact for objectives where item ``i``'s
    value depends on item ``i`` alone, ``.on(i)`` included). The inputs are checked
    (:func:`check_inputs`; ``shape=False`` leaves their shape to a wrapped method).
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, target, *, shape: bool = True):
        check_inputs(model, inputs, shape=shape)
        self.batch = inputs.shape[0]
        self.classes: torch.Tensor | None = None
        self.objective: Objective | None = None
        self.key: str | None = None
        if isinstance(target, _Classes):
            self.key, target = target.key, target.classes
        if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
            self.key, target = target  # ("out", 15): class 15 of output entry "out"
            if isinstance(target, str | tuple | Objective):
                raise TypeError(
                    f"target ({self.key!r}, ...) names an output entry, which needs classes, not "
                    f"{target!r}; an Objective names its own layers (pass it alone, e.g. "
                    "objectives.class_region(..., key=...))"
                )
        if isinstance(target, Objective):
            self.objective = target
            return
        if target is None:
            with hooks.guard(model), torch.no_grad():
                out = select(model(inputs), self.key)
            if out.dim() != 2:
                raise ValueError(
                    f"target=None means each item's predicted class, which needs an output of "
                    f"shape (B, classes); this model returns {tuple(out.shape)}. Pass a class "
                    "or an Objective (e.g. objectives.class_region for segmentation)."
                )
            classes = out.argmax(1)
        elif isinstance(target, str):
            classes = torch.tensor([model_info(model).label_index(target)])
        elif isinstance(target, numbers.Integral):
            classes = torch.tensor([int(target)])
        elif isinstance(target, torch.Tensor | Sequence):
            classes = torch.as_tensor(target)
            if classes.is_floating_point() or classes.is_complex():
                raise TypeError(f"target classes must be integers, not {classes.dtype}")
            classes = classes.long().flatten()
        else:
            raise TypeError(
                "target must be None, an int, a class name, a tensor of per-item classes or "
                f"an Objective, not {type(target).__name__}"
            )
        if (classes < 0).any():
            raise IndexError(
                f"target class {classes[classes < 0][0].item()} is negative; classes are "
                "numbered from 0"
            )
        if classes.numel() == 1:
            classes = classes.expand(self.batch)
        if classes.numel() != self.batch:
            raise ValueError(f"target has {classes.numel()} classes for a batch of {self.batch}")
        self.classes = classes.to(inputs.device)

    def rows(self, items: torch.Tensor) -> Objective:
        """The objective for an expanded batch whose row ``r`` is a copy of item
        ``items[r]``."""
        if self.classes is not None:
            return _Classes(self.classes[items.to(self.classes.device)], self.key)
        b, n = self.batch, items.numel()
        if n % b == 0 and torch.equal(items.cpu(), torch.arange(b).repeat(n // b)):
            return _grouped(self.objective, b, n // b)
        return _scattered(self.objective, items, b)

    def all(self) -> Objective:
        """The objective for the unexpanded batch."""
        return self.rows(torch.arange(self.batch))
