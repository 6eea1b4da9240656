"""Recipes as data: what to render and how, with one default per setting.

A recipe is a frozen dataclass of plain values. ``to_dict()`` / ``from_dict()``
round-trip it through JSON, and ``hash()`` is a stable content hash (SHA-256 of the
canonical JSON: sorted keys, no whitespace), the same on every machine and version
while the recipe's fields are unchanged. The command line, the studio, the gallery and
``fvis explain`` all build their work from recipes, so the same recipe gives the same
image everywhere (on the same device and thread count).

>>> recipe = RenderRecipe(units=("conv3[5]",), steps=256, tv=0.05)
>>> result = recipe.run(model)                   # an fvis.RenderResult
>>> RenderRecipe.from_dict(recipe.to_dict()) == recipe
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fvis.recipes.units import parse_units
from fvis.redirect import REDIRECTED_RELU_STEPS

__all__ = ["Recipe", "RenderRecipe", "ExplainRecipe", "parameterization", "save_render"]

FORMAT = 1  # bump when a field's meaning changes (the hash covers it)


class Recipe:
    """JSON round trip and content hash shared by the recipe dataclasses."""

    kind = ""
    SOURCES: dict[str, str] = {}

    def to_dict(self) -> dict:
        """Every field (tuples as lists), plus ``recipe`` (the kind) and ``format``."""
        out = {"recipe": self.kind, "format": FORMAT}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict):
        """The recipe ``to_dict`` wrote; unknown fields, another kind or a wrong type of
        value are refused with the field named (missing fields take their defaults)."""
        data = dict(data)
        kind, fmt = data.pop("recipe", cls.kind), data.pop("format", FORMAT)
        if kind != cls.kind:
            raise ValueError(f"this is a {kind!r} recipe, not a {cls.kind!r} recipe")
        if fmt != FORMAT:
            raise ValueError(f"recipe format {fmt} is not supported (this fvis reads {FORMAT})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown {cls.kind} recipe field(s) {', '.join(unknown)}; "
                f"known: {', '.join(fields)}"
            )
        values = {}
        for name, v in data.items():
            default = fields[name].default
            if default is dataclasses.MISSING:
                default = fields[name].default_factory()
            values[name] = _coerce(name, v, default)
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "the recipe"):
        """The recipe in JSON ``text``; ``source`` names it in the error for bad JSON."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{source} is not JSON ({e.msg} at line {e.lineno}, column {e.colno}); a "
                f"recipe is what --save-recipe or the studio's recipe download writes"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{source} holds a JSON {type(data).__name__}, not a recipe object")
        return cls.from_dict(data)

    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def defaults(cls) -> list[tuple[str, object, str]]:
        """``(setting, default, where the default comes from)`` for every setting."""
        default = cls()
        return [
            (f.name, getattr(default, f.name), cls.SOURCES.get(f.name, ""))
            for f in dataclasses.fields(cls)
        ]


def _coerce(name: str, value, default):
    """JSON values back to the field's type (lists → tuples, ints → floats, dicts →
    nested recipes)."""
    if isinstance(default, Recipe) and isinstance(value, dict):
        return type(default).from_dict(value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"recipe field {name!r} must be a list, not {value!r}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"recipe field {name!r} must be true or false, not {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if default is not None and value is not None and not isinstance(value, type(default)):
        raise ValueError(f"recipe field {name!r} must be {type(default).__name__}, not {value!r}")
    return value


# ---------------------------------------------------------------- render recipe


@dataclass(frozen=True)
class RenderRecipe(Recipe):
    """What to render (``units``: unit specs of :mod:`fvis.recipes.units`, one image
    each) and how. Every default and its source is in :attr:`SOURCES`
    (``RenderRecipe.defaults()`` lists them)."""

    kind = "render"

    units: tuple[str, ...] = ()
    steps: int = 512
    lr: float | None = None
    seed: int = 0
    param: str = "fft"
    decay_power: float = 1.0
    size: int | None = None
    prior: str = "image"
    transforms: str = "standard"
    redirected_relu: int = REDIRECTED_RELU_STEPS
    tv: float = 0.0
    l1: float = 0.0
    frequency: float = 0.0
    blur: float = 0.0
    diversity: float = 0.0
    diversity_layer: str | None = None
    repeat: int = 1
    seeds: tuple[int, ...] = field(default_factory=tuple)

    SOURCES = {
        "units": "none: say what to render, e.g. conv3[5] or class[3]",
        "steps": "Lucid: render_vis(thresholds=(512,))",
        "lr": "the parameterization's Adam rate: 0.05 fft/pixel (Lucid: Adam(0.05)), "
        "0.1 MACO (Fel et al.), 0.001 CPPN (Lucid's CPPN notebook)",
        "seed": "fvis: 0",
        "param": "Lucid: param.image(fft=True, decorrelate=True)",
        "decay_power": "Lucid: fft_image(decay_power=1)",
        "size": "the model's input size (fvis_info.input_size)",
        "prior": "image: no generator (code-space priors: generator:NAME)",
        "transforms": "Lucid: transform.standard_transforms",
        "redirected_relu": "fvis: the first 16 steps. Lucid overrides the ReLU gradient "
        "for the whole render (relu_gradient_override=True), but the redirected gradient "
        "only acts while an item's ReLU gradient is all zero, i.e. at the start",
        "tv": "Lucid: no penalty (render_vis adds none)",
        "l1": "Lucid: no penalty",
        "frequency": "Lucid: no penalty",
        "blur": "Lucid: no penalty",
        "diversity": "Lucid: off; its diversity notebook uses 1e2. With repeat > 1 each "
        "unit's copies are compared among themselves",
        "diversity_layer": "the first unit's layer (the penultimate layer for classes)",
        "repeat": "1: each unit once (use more with diversity)",
        "seeds": "none: the whole batch's start from `seed`; per item, item i starts from "
        "seeds[i] whatever else is in the batch (the gallery)",
    }

    def __post_init__(self):
        from fvis.errors import check_finite, check_int
        from fvis.param import MAX_BATCH, MAX_SIDE

        def whole(name, value, minimum, maximum):
            v = check_int(f"render recipe: {name}", value, minimum)
            if v > maximum:
                raise ValueError(f"render recipe: {name} must be in {minimum}..{maximum}, not {v}")
            return v

        seed_range = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
        object.__setattr__(self, "units", tuple(str(u) for u in self.units))
        object.__setattr__(self, "seeds", tuple(whole("seeds", s, *seed_range) for s in self.seeds))
        for name in ("lr", "decay_power", "tv", "l1", "frequency", "blur", "diversity"):
            if getattr(self, name) is not None:
                check_finite(f"render recipe: {name}", getattr(self, name))
        whole("seed", self.seed, *seed_range)
        whole("steps", self.steps, 1, math.inf)
        whole("repeat", self.repeat, 1, MAX_BATCH)  # each unit's copies are batch items
        whole("redirected_relu", self.redirected_relu, 0, math.inf)
        if self.size is not None:
            whole("size", self.size, 1, MAX_SIDE)
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"render recipe: lr must be positive, not {self.lr}")
        if self.transforms not in ("standard", "none"):
            raise ValueError(
                f"render recipe: transforms must be 'standard' or 'none', not {self.transforms!r}"
            )
        from fvis.param import KINDS

        if self.param not in KINDS:
            raise ValueError(
                f"render recipe: unknown parameterization {self.param!r}; known: {', '.join(KINDS)}"
            )

    # ---- what the recipe builds ----

    def unit_list(self, model: nn.Module | None = None):
        """The units (:class:`fvis.recipes.Unit`), each ``repeat`` times in a row."""
        units = []
        for spec in self.units:
            units += parse_units(spec, **_counts(model))
        if not units:
            raise ValueError("render recipe: no units; say what to render, e.g. conv3[5]")
        return [u for u in units for _ in range(self.repeat)]

    def unit_values(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(B,): each item's own unit objective on ``images`` (B, C, H, W) in [0, 1] as
        they are — no transforms, penalties or diversity term (what the optimized
        objective adds); ``images`` are fitted to a fixed-size model's input."""
        from fvis import hooks
        from fvis import objectives as O
        from fvis.models import info as model_info
        from fvis.transforms import model_input

        labels = model_info(model).labels
        objective = O.one_per_item([u.objective(labels) for u in self.unit_list(model)])
        x = model_input(model, images.to(hooks.model_device(model)))
        with torch.no_grad():
            return objective(hooks.capture(model, x, list(objective.layers)))

    def objective(self, model: nn.Module):
        """One objective per batch item, with the penalties and diversity subtracted."""
        from fvis import objectives as O
        from fvis.models import info as model_info

        units = self.unit_list(model)
        labels = model_info(model).labels
        objective = O.one_per_item([u.objective(labels) for u in units])
        if self.diversity:
            layer = self.diversity_layer or _diversity_layer(model, units[0].layer)
            group = self.repeat if self.repeat > 1 else None  # each unit's copies
            objective = objective + self.diversity * O.diversity(layer, group)
        for weight, penalty in (
            (self.tv, O.total_variation()),
            (self.l1, O.l1(constant=0.5)),
            (self.frequency, O.frequency()),
            (self.blur, O.blur()),
        ):
            if weight:
                objective = objective - weight * penalty
        return objective

    def run(
        self,
        model: nn.Module,
        *,
        device=None,
        progress: bool = False,
        thresholds=(),
        importance: bool = False,
        callback=None,
    ):
        """Render the recipe on ``model``: an :class:`fvis.RenderResult` (``callback``: as
        :func:`fvis.render`'s, called after every step)."""
        import fvis

        objective = self.objective(model)
        batch = len(self.unit_list(model))
        param = parameterization(
            model,
            batch,
            kind=self.param,
            prior=self.prior,
            size=self.size,
            decay_power=self.decay_power,
            seed=self.seed,
            seeds=self.seeds or None,
        )
        return fvis.render(
            model,
            objective,
            param,
            transforms=None if self.transforms == "none" else "standard",
            steps=self.steps,
            lr=self.lr,
            seed=self.seed,
            device=device,
            redirected_relu_steps=self.redirected_relu,
            progress=progress,
            thresholds=thresholds,
            importance=importance,
            callback=callback,
        )


def _counts(model) -> dict:
    """``count`` / ``labels`` for :func:`parse_units` from a model (nothing without one)."""
    if model is None:
        return {}
    from fvis.hooks import trace
    from fvis.models import info as model_info

    info = model_info(model)
    tr = trace(model, info.input_size)

    def count(layer):  # the features of the layer's layout (a ViT's embedding dims)
        return tr.layout(layer, info.layouts).features(tr.shape(layer))

    return {"count": count, "labels": info.labels}


def _diversity_layer(model, layer: str) -> str:
    """The unit's layer, or for classes the last layer before the output."""
    from fvis.hooks import OUTPUT, layers

    if layer != OUTPUT:
        return layer
    names = [li.name for li in layers(model) if li.name not in ("input", "output")]
    return names[-1]


def parameterization(
    model: nn.Module,
    batch: int,
    *,
    kind: str = "fft",
    prior: str = "image",
    size: int | None = None,
    decay_power: float = 1.0,
    seed: int = 0,
    seeds=None,
) -> nn.Module:
    """The images a render optimizes, for ``model``: ``prior="image"`` gives
    :func:`fvis.param.for_input` of ``kind`` at ``size`` (default the model's input
    size), ``"generator:NAME"`` a generator's code space (:func:`fvis.codespace.param_for`).

    ``seeds`` (one per item): item ``i`` starts from exactly the values a batch of one
    made with ``seeds[i]`` has, whatever else is in the batch; otherwise the batch's
    start comes from ``seed``.
    """
    from fvis.models import info as model_info

    info = model_info(model)

    def make(n: int, s: int) -> nn.Module:
        if prior != "image":
            from fvis.codespace import param_for

            return param_for(prior, model, batch=n, seed=s)
        from fvis.param import for_input

        hw = tuple(info.input_size[1:]) if size is None else (size, size)
        return for_input((info.channels, *hw), n, kind=kind, decay_power=decay_power, seed=s)

    if seeds is None:
        return make(batch, seed)
    seeds = list(seeds)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}; give one per item")
    param = make(batch, seeds[0])
    trained = [(n, p) for n, p in param.named_parameters() if p.requires_grad]
    for name, p in trained:
        if p.dim() == 0 or p.shape[0] != batch:
            raise ValueError(
                f"per-item seeds need parameters with the batch first; {name} is "
                f"{tuple(p.shape)} for a batch of {batch}"
            )
    with torch.no_grad():
        for i, s in enumerate(seeds):
            own = dict(make(1, s).named_parameters())
            for name, p in trained:
                p[i].copy_(own[name][0])
    return param


def save_render(result, path, *, ncol: int | None = None, scale: int | None = None) -> Path:
    """Save a render's images as one grid at ``path`` (and ``STEM_importance`` /
    ``STEM_stepN`` beside it when the result has them); ``scale`` defaults to enlarging
    small images to at least 128 px. Returns ``path``."""
    from fvis.image import grid
    from fvis.io import save_image

    path = Path(path)
    scale = scale or max(1, 128 // max(result.images.shape[-2:]))
    save_image(grid(result.images, ncol=ncol, scale=scale), path)
    if result.importance is not None:
        from fvis.heatmap import colorize

        maps = colorize(result.importance, "inferno", signed=False, vmax=1.0)
        side = path.with_name(f"{path.stem}_importance{path.suffix}")
        save_image(grid(maps, ncol=ncol, scale=scale), side)
    for step, snap in sorted(result.snapshots.items()):
        side = path.with_name(f"{path.stem}_step{step}{path.suffix}")
        save_image(grid(snap, ncol=ncol, scale=scale), side)
    return path


# ---------------------------------------------------------------- explain recipe


@dataclass(frozen=True)
class ExplainRecipe(Recipe):
    """A building-blocks report (:func:`fvis.explain.building_blocks`) or, with
    ``groups > 0``, neuron groups (:func:`fvis.groups.neuron_groups`) for one input."""

    kind = "explain"

    method: str = "integrated_gradients"
    layer: str | None = None
    target: int | str | None = None
    top: int = 6
    groups: int = 0
    steps: int = 256
    tv: float = 0.05
    seed: int = 0

    SOURCES = {
        "method": "Sundararajan et al. 2017 (the method the building-blocks paper pairs "
        "with attribution)",
        "layer": "the last convolutional layer",
        "target": "the predicted class",
        "top": "fvis: 6 channels",
        "groups": "0: single channels (K > 0: K neuron groups, Olah et al. 2018)",
        "steps": "fvis: 256 render steps per channel (a report, not a poster)",
        "tv": "fvis: 0.05, the README's recipe",
        "seed": "fvis: 0",
    }

    def __post_init__(self):
        from fvis.attribution import METHODS

        if self.method not in METHODS:
            raise ValueError(
                f"unknown attribution method {self.method!r}; known: {', '.join(sorted(METHODS))}"
            )
        if self.top < 1:
            raise ValueError(f"explain recipe: top must be at least 1, not {self.top}")
        if self.groups < 0:
            raise ValueError(f"explain recipe: groups must be ≥ 0, not {self.groups}")
        if self.steps < 1:
            raise ValueError(f"explain recipe: steps must be at least 1, not {self.steps}")
        if not math.isfinite(self.tv):
            raise ValueError(f"explain recipe: tv must be a finite number, not {self.tv}")

    def run(self, model: nn.Module, image: torch.Tensor, *, progress: bool = False):
        """The report for ``image`` (1, C, H, W) in [0, 1]: a
        :class:`fvis.explain.BuildingBlocks` or :class:`fvis.groups.NeuronGroups`."""
        if self.groups:
            from fvis.groups import neuron_groups

            return neuron_groups(
                model,
                image,
                self.target,
                layer=self.layer,
                k=self.groups,
                steps=self.steps,
                progress=progress,
            )
        from fvis.explain import building_blocks

        return building_blocks(
            model,
            image,
            self.target,
            method=self.method,
            layer=self.layer,
            top=self.top,
            steps=self.steps,
            tv=self.tv,
            seed=self.seed,
            progress=progress,
        )
