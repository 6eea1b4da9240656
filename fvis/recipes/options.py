"""Command-line options of recipe settings, each declared once.

An option is a recipe field: its default is the recipe's value (a recipe instance is
passed in; :meth:`fvis.recipes.Recipe.defaults` says where each default comes from) and
its type the field's (``int``, ``float``; strings stay strings), so ``fvis render``,
``fvis explain`` and ``fvis gallery`` cannot disagree with the recipe. A table gives
each setting its help, or ``(help, more argparse keywords)``; the flag is ``--setting``
with ``-`` for ``_`` unless the keywords name another (``flag``).

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_options(parser, fvis.recipes.RenderRecipe(), RENDER, ("steps", "tv"))
>>> parser.parse_args(["--tv", "0.05"])
Namespace(steps=512, tv=0.05)
"""

from __future__ import annotations

import dataclasses

from fvis.param import KINDS

__all__ = ["EXPLAIN", "RENDER", "add_options", "flag"]

# RenderRecipe's settings
RENDER = {
    "repeat": ("render one unit this many times (use with --diversity)", {"flag": "--batch"}),
    "diversity": "weight of the batch diversity term on --layer (default 0)",
    "steps": "optimizer steps (default %(default)s)",
    "lr": "Adam learning rate (default: the parameterization's, 0.05 for fft/pixel, "
    "0.1 for maco, 0.001 for cppn)",
    "seed": "random seed (default %(default)s)",
    "size": "image size in pixels (default: the model's input size)",
    "param": (
        "image parameterization (default fft: 1/f spectrum, decorrelated colour; maco: "
        "natural-image magnitude, learned phase; cppn: a coordinate network; pixel)",
        {"choices": KINDS},
    ),
    "decay_power": "Fourier spectrum decay 1/f^p (default %(default)s)",
    "prior": "'image' (default) or generator:NAME to search a generator's code "
    "space (e.g. generator:mnist)",
    "transforms": (
        "random transforms each step (default: Lucid's standard recipe)",
        {"choices": ("standard", "none")},
    ),
    "redirected_relu": (
        "use the redirected ReLU gradient for the first STEPS steps (default "
        "%(default)s; 0 disables)",
        {"metavar": "STEPS"},
    ),
    "tv": "total variation (default %(default)s)",
    "l1": "L1 distance from grey (default %(default)s)",
    "frequency": "high-frequency energy (default %(default)s)",
    "blur": "pull towards a blurred copy (default %(default)s)",
}

# ExplainRecipe's settings
EXPLAIN = {
    "method": "attribution method (default %(default)s)",
    "top": "number of channels shown (default %(default)s)",
    "groups": "show K neuron groups (NMF of the layer's activations) instead of single "
    "channels (PNG only)",
    "steps": "steps of each channel render (default %(default)s)",
    "tv": "total variation of the renders (default %(default)s)",
    "seed": "seed of the renders",
}


def flag(table: dict, name: str) -> str:
    """The command-line flag of setting ``name``: ``--name`` with ``-`` for ``_``, unless
    its keywords in ``table`` name another."""
    keywords = table[name][1] if isinstance(table[name], tuple) else {}
    return keywords.get("flag", "--" + name.replace("_", "-"))


def add_options(parser, recipe, table: dict, names) -> None:
    """Add the options of the settings ``names`` (in that order) to ``parser`` (a parser
    or an argument group), with their help from ``table`` and defaults from ``recipe``."""
    fields = dataclasses.fields(recipe)  # annotations as written: "int", "float | None"
    types = {f.name: getattr(f.type, "__name__", str(f.type)).split(" | ")[0] for f in fields}
    for name in names:
        text, keywords = table[name] if isinstance(table[name], tuple) else (table[name], {})
        keywords = {k: v for k, v in keywords.items() if k != "flag"}
        kind = {"int": int, "float": float}.get(types[name])
        if kind is not None:
            keywords["type"] = kind
        parser.add_argument(flag(table, name), default=getattr(recipe, name), help=text, **keywords)
