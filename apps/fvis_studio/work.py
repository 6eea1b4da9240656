"""What a render recipe asks for, as work a :class:`~fvis_studio.jobs.Job` can run.

A recipe here is a plain JSON object (what the studio downloads and loads back):
``model``, ``weights``, ``layer``, ``units`` (indices), ``negative``, ``param``,
``prior``, ``steps``, ``lr`` (null: the parameterization's), ``tv``, ``seed``. The same
recipe gives the same images, bit for bit, on the same device and thread count.
"""

from __future__ import annotations

import torch

import fvis
from fvis import objectives as O
from fvis.hooks import OUTPUT
from fvis_studio.state import Unit

DEFAULTS = {"negative": False, "param": "fft", "prior": "image", "steps": 256, "lr": None,
            "tv": 0.05, "seed": 0}  # fmt: skip


def objective_of(unit: Unit) -> O.Objective:
    """The objective that maximizes ``unit``: a class logit for ``output``, else the
    channel (mean over positions; a neuron of a flat layer)."""
    if unit.layer == OUTPUT:
        return O.class_logit(unit.index)
    return O.channel(unit.layer, unit.index)


def check_units(layer: str, indices: list[int], n: int) -> None:
    bad = [k for k in indices if not 0 <= k < n]
    if bad:
        raise IndexError(f"unit {bad[0]} is out of range: {layer} has units 0–{n - 1}")
    if not indices:
        raise ValueError("choose at least one unit")


def units_of(recipe: dict) -> list[Unit]:
    return [Unit(recipe["layer"], int(k)) for k in recipe["units"]]


def render_work(model, recipe: dict):
    """``(work, steps)``: ``work(callback)`` renders ``recipe`` on ``model`` in one batch
    (item i maximizes unit i, or minimizes it with ``negative``) and returns
    ``(RenderResult, scores)``, ``scores`` one label per item."""
    r = {**DEFAULTS, **recipe}
    units = units_of(r)
    objs = [-objective_of(u) if r["negative"] else objective_of(u) for u in units]
    objective = O.one_per_item(objs)
    if r["tv"]:
        objective = objective - float(r["tv"]) * O.total_variation()
    steps, seed, n = int(r["steps"]), int(r["seed"]), len(units)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")

    def work(callback):
        if r["prior"] == "image":
            param = fvis.param.for_input(model.fvis_info.input_size, n, kind=r["param"], seed=seed)
        else:
            from fvis.codespace import param_for

            param = param_for(r["prior"], model, batch=n, seed=seed)
        result = fvis.render(
            model, objective, param, batch=n, steps=steps, seed=seed, lr=r["lr"],
            progress=False, callback=callback,
        )  # fmt: skip
        return result, scores(model, units, result.images)

    return work, steps


def scores(model, units: list[Unit], images: torch.Tensor) -> list[str]:
    """Per item, what its unit does on the final image: ``p=…`` (softmax) for a class,
    else the unit's activation (mean over positions)."""
    info = model.fvis_info
    device = fvis.hooks.model_device(model)
    layers = sorted({u.layer for u in units} | {OUTPUT})
    with torch.no_grad():
        acts = fvis.capture(model, info.normalize(images.to(device)), layers)
    out = []
    for i, u in enumerate(units):
        a = acts[u.layer][i, u.index]
        if u.layer == OUTPUT:
            out.append(f"p={acts[OUTPUT][i].float().softmax(0)[u.index]:.3f}")
        else:
            out.append(f"act {a.float().mean():.3g}")
    return out


DIVERSITY = 4  # images in a unit's diversity set
DIVERSITY_WEIGHT = 1.0  # weight of fvis.objectives.diversity in the diversity set's objective


def unit_work(model, unit: Unit, steps: int = 256, seed: int = 0, tv: float = 0.05):
    """``(work, total steps)``: ``work(callback)`` renders ``unit``'s positive and negative
    (one batch of 2) and its diversity set (one batch of :data:`DIVERSITY`) and returns a
    :class:`fvis_studio.gallery.UnitRecord`."""
    from fvis_studio.gallery import UnitRecord

    base = {"layer": unit.layer, "units": [unit.index], "steps": steps, "seed": seed, "tv": tv}
    info = model.fvis_info
    penalty = float(tv) * O.total_variation()
    obj = objective_of(unit)

    def work(callback):
        pair = fvis.render(
            model, O.one_per_item([obj, -obj]) - penalty,
            fvis.param.for_input(info.input_size, 2, seed=seed), steps=steps, seed=seed,
            progress=False, callback=callback,
        )  # fmt: skip
        div_layer = unit.layer if unit.layer != OUTPUT else None
        objective = O.one_per_item([obj] * DIVERSITY) - penalty
        if div_layer is not None:
            objective = objective + DIVERSITY_WEIGHT * O.diversity(div_layer)
        div = fvis.render(
            model, objective, fvis.param.for_input(info.input_size, DIVERSITY, seed=seed + 1),
            steps=steps, seed=seed + 1, progress=False,
            callback=lambda s, im, v: callback(steps + s, im, v),
        )  # fmt: skip
        return UnitRecord(
            unit, pair.images[0], pair.images[1], list(div.images),
            pair.history[:, 0].tolist(), {**DEFAULTS, **base, "kind": "unit"},
        )  # fmt: skip

    return work, 2 * steps
