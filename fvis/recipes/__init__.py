"""Recipes: what to render or explain, and how, as plain data with one default per
setting — the layer the command line, the studio, the gallery and ``fvis explain``
stand on (Lucid's ``recipes/`` idea).

* :mod:`fvis.recipes.units` — units from short strings: ``conv3[5]``, ``conv3[0-7]``,
  ``conv3[5]@(4,3)``, ``class[3]``, ``-conv3[5]``, ``conv3{3:1,7:-0.5}``.
* :class:`RenderRecipe` / :class:`ExplainRecipe` — frozen dataclasses with
  ``to_dict`` / ``from_dict`` (JSON), a stable content ``hash()``, and ``run(model)``.
* :class:`ModelSpec` / :func:`load_model` — the one way front ends load a model.

>>> recipe = RenderRecipe(units=("conv3[0-3]",), steps=64, tv=0.05)
>>> images = recipe.run(fvis.load_model("fvis:mnist")).images      # (4, 1, 28, 28)
"""

from fvis.recipes.model import ModelSpec, fingerprint, input_image
from fvis.recipes.model import load as load_model
from fvis.recipes.recipe import (
    ExplainRecipe,
    Recipe,
    RenderRecipe,
    parameterization,
    save_render,
)
from fvis.recipes.units import Unit, UnitError, parse_unit, parse_units

__all__ = [
    "ExplainRecipe",
    "ModelSpec",
    "Recipe",
    "RenderRecipe",
    "Unit",
    "UnitError",
    "fingerprint",
    "input_image",
    "load_model",
    "parameterization",
    "parse_unit",
    "parse_units",
    "save_render",
]
