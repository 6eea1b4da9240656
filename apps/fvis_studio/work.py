"""Recipes (:mod:`fvis.recipes`, :mod:`fvis.gallery`) as work for a background
:class:`~fvis_studio.jobs.Job`: ``work(callback)`` runs the recipe with
``callback`` as ``fvis.render``'s, so the job sees every step."""

from __future__ import annotations

import torch

import fvis
from fvis.hooks import OUTPUT
from fvis.recipes import RenderRecipe, Unit, parse_unit


def render_work(model, recipe: RenderRecipe):
    """``(work, steps)``: ``work`` renders ``recipe`` and returns ``(RenderResult, units,
    scores)``. The units are checked against the model first (:class:`UnitError`)."""
    units = recipe.unit_list(model)

    def work(callback):
        result = recipe.run(model, callback=callback)
        return result, units, scores(model, units, result.images)

    return work, recipe.steps


def scores(model, units: list[Unit], images: torch.Tensor) -> list[str]:
    """Per item, what its unit does on the final image (no transforms): ``p=…`` (the
    softmax) for a class, else the value of the unit's objective."""
    info = model.fvis_info
    objectives = [u.objective(info.labels) for u in units]
    layers = sorted({n for o in objectives for n in o.layers} | {OUTPUT})
    device = fvis.hooks.model_device(model)
    with torch.no_grad():
        acts = fvis.capture(model, info.normalize(images.to(device)), layers)
        out = []
        for i, (u, o) in enumerate(zip(units, objectives)):
            if u.kind == "class":
                k = u.index if isinstance(u.index, int) else info.label_index(u.index)
                out.append(f"p={acts[OUTPUT][i].float().softmax(0)[k]:.3f}")
            else:
                out.append(f"{o(acts)[i]:.3g}")
    return out


def phased(callback, steps: int):
    """``callback`` for work made of several renders of ``steps`` each: the steps of the
    k-th render are reported as ``k·steps + step``."""
    state = {"offset": 0, "last": 0}

    def cb(step, images, values):
        if step <= state["last"]:
            state["offset"] += steps
        state["last"] = step
        callback(state["offset"] + step, images, values)

    return cb


def unit_work(model, unit, gallery, steps: int | None = None):
    """``(work, total steps)``: ``work`` renders one unit as the gallery renders each
    (:func:`fvis.gallery.build.render_batch` with the gallery's recipe, ``steps``
    changed if given) and returns ``(files, record)`` for :meth:`Gallery.add`."""
    from fvis.gallery.build import Job, render_batch

    recipe = gallery.recipe
    if steps is not None:
        recipe = recipe.replace(render=recipe.render.replace(steps=int(steps)))
    info = model.fvis_info
    if tuple(info.input_size) != (1, 28, 28):
        recipe = recipe.replace(examples=0)  # the bundled digits only fit MNIST models
    spec = parse_unit(str(unit))
    device = str(fvis.hooks.model_device(model))
    job = Job(recipe=recipe, threads=torch.get_num_threads(), device=device, labels=info.labels)
    renders = 1 + recipe.negative + bool(recipe.diversity)

    def work(callback):
        return render_batch(
            job, model, unit.layer, 0, [spec], callback=phased(callback, recipe.render.steps)
        )

    return work, renders * recipe.render.steps
