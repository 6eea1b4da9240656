"""Hypothesis fuzzing of what a user types or computes: unit specs, recipe values and
objective arithmetic. Each input either works (a unit, a render with finite images, a
finite objective value) or is refused with a documented user-error type
(:func:`fvis.errors.user_errors`); nothing else may escape. Derandomized with few
examples each, so CI runs the same cases every time.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

import fvis
from fvis import objectives as O
from fvis.errors import one_line, user_errors
from fvis.recipes import RenderRecipe
from fvis.recipes.units import UnitError, parse_unit, parse_units

NAN, INF = float("nan"), float("inf")
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def documented(error: BaseException) -> None:
    """``error`` is a user error with a message (else re-raise it: a crash)."""
    if not isinstance(error, user_errors()):
        raise error
    assert one_line(error) != type(error).__name__, f"{type(error).__name__} without a message"


# ---------------------------------------------------------------- unit specs
LAYERS = ["conv1", "conv3", "relu2", "fc1", "class", "output", "input", "nope", "conv3:1", ""]
ITEM = st.one_of(
    st.integers(0, 20).map(str),
    st.integers(-3, 3).map(str),
    st.sampled_from(["*", "0-3", "5-2", "3-3", "0-99999999999", "9" * 30, "7", "seven", ""]),
    st.sampled_from(["1.5", "٣", "²", " 2", "0x1", "1e3", "-0"]),
)
POS = st.sampled_from(["", "@center", "@(1,2)", "@( 3 , 4 )", "@(99,0)", "@(-1,2)", "@", "@()"])
WEIGHT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1", "-0.5", "nan", "inf", "1e400", "x", "", "1_0"]),
)


@st.composite
def near_valid_spec(draw) -> str:
    """A spec built from the grammar's parts with odd values, then maybe mutated."""
    neg = draw(st.sampled_from(["", "-", "--"]))
    layer = draw(st.sampled_from(LAYERS))
    kind = draw(st.sampled_from(["items", "direction", "deepdream"]))
    if kind == "deepdream":
        spec = f"{neg}deepdream({layer})"
    elif kind == "direction":
        pairs = draw(st.lists(st.tuples(ITEM, WEIGHT), min_size=0, max_size=3))
        spec = f"{neg}{layer}{{{','.join(f'{c}:{w}' for c, w in pairs)}}}{draw(POS)}"
    else:
        items = draw(st.lists(ITEM, min_size=0, max_size=3))
        spec = f"{neg}{layer}[{','.join(items)}]{draw(POS)}"
    if draw(st.booleans()):  # one character deleted or inserted
        i = draw(st.integers(0, len(spec)))
        spec = (
            spec[:i]
            + draw(st.sampled_from(["", "[", "]", "{", "}", ":", ",", " ", "@"]))
            + (spec[i + 1 :] if draw(st.booleans()) else spec[i:])
        )
    return spec


SPECS = st.one_of(
    near_valid_spec(),
    st.text(alphabet="conv3[]{}()@,:-*.0123456789 clasdeepr\t٣", max_size=24),
)


@FUZZ
@given(spec=SPECS)
@example(spec="conv3[0-99999999999]")
@example(spec="conv3{0:1000001.0}")
def test_fuzz_unit_spec_parses_or_is_a_unit_error(spec):
    """Without a model: units whose canonical spec reads back as the same unit, or a
    :class:`UnitError` (never another exception, never a runaway range)."""
    try:
        units = parse_units(spec)
    except UnitError as e:
        assert one_line(e).strip()
        return
    assert units and len(units) <= 4096
    for u in units:
        assert parse_unit(str(u)) == u, (spec, str(u))


@pytest.fixture(scope="module")
def mnist_acts(mnist_model):
    """Every layer's activation of the bundled model on two digits' worth of noise."""
    names = [li.name for li in fvis.layers(mnist_model)]
    return fvis.capture(mnist_model, torch.rand(2, 1, 28, 28), names)


@FUZZ
@given(spec=SPECS)
@example(spec="conv3[0-99999999999]")
@example(spec="conv3[2]@(99,0)")
def test_fuzz_unit_spec_on_the_bundled_model(spec, mnist_model, mnist_acts):
    """Against a model (ranges and layers checked, objectives evaluated): a finite value
    per batch item, or a documented error."""
    try:
        objective = RenderRecipe(units=(spec,)).objective(mnist_model)
    except Exception as e:
        return documented(e)
    batch = len(RenderRecipe(units=(spec,)).unit_list(mnist_model))
    acts = {k: v[:1].expand(batch, *v.shape[1:]) for k, v in mnist_acts.items()}
    try:
        value = objective(acts)
    except Exception as e:  # e.g. a neuron position outside the layer
        return documented(e)
    assert value.shape == (batch,) and torch.isfinite(value).all(), spec


# ---------------------------------------------------------------- recipe values
NUMBERS = st.one_of(
    st.integers(-2, 4),  # plausible values, so that some recipes render
    st.floats(0, 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, -0.0, 1, 2, 3, 2.5, 1e308, -1e308, 5e-324, 10**30, True, "3", None]),
)
SETTINGS = ["steps", "lr", "seed", "decay_power", "size", "redirected_relu", "tv", "l1",
            "frequency", "blur", "diversity", "repeat"]  # fmt: skip
BASE = {"units": ("conv1[3]",), "steps": 2, "redirected_relu": 1, "transforms": "none"}


@FUZZ
@given(values=st.dictionaries(st.sampled_from(SETTINGS), NUMBERS, min_size=1, max_size=3),
       seeds=st.lists(NUMBERS, max_size=2))  # fmt: skip
@example(values={"repeat": 10**12}, seeds=[])
@example(values={"steps": NAN}, seeds=[])
def test_fuzz_recipe_values_refused_or_render_finite(values, seeds, mnist_model):
    """Any numbers in a render recipe's settings: refused when the recipe is built or
    run, with a documented error, or a render whose images and history are finite.
    Renders stay tiny (≤ 3 steps, ≤ 4 images; a valid recipe beyond that is only built)."""
    kw = {**BASE, **values}
    if seeds:
        kw["seeds"] = seeds
    try:
        recipe = RenderRecipe(**kw)
        assert RenderRecipe.from_json(recipe.to_json()) == recipe
        units = recipe.unit_list(mnist_model)
        if recipe.steps > 3 or len(units) > 4 or (recipe.size or 28) > 28:
            recipe.objective(mnist_model)
            return event("valid, built only")
        result = recipe.run(mnist_model)
    except Exception as e:
        event(f"refused: {type(e).__name__}")
        return documented(e)
    event("rendered")
    assert torch.isfinite(result.images).all() and torch.isfinite(result.history).all()
    assert ((result.images >= 0) & (result.images <= 1)).all()


# ---------------------------------------------------------------- objective arithmetic
_X = {"image": torch.rand(2, 1, 5, 5), "output": torch.randn(2, 4)}
_BASE = [O.class_logit(0), O.class_logit(3), O.total_variation(), O.l2(constant=0.5)]
_NUMBER = st.one_of(
    st.floats(-1e6, 1e6).filter(lambda v: v == 0 or abs(v) > 1e-6),
    st.integers(-(10**6), 10**6),
    st.sampled_from([NAN, INF, -INF, 0.0, 0]),
)


@st.composite
def _expression(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(_BASE))
    left = draw(_expression(depth=depth - 1))
    op = draw(st.sampled_from(["+", "-", "*", "/", "neg", "+obj", "-obj"]))
    if op in ("+obj", "-obj"):
        right = draw(_expression(depth=depth - 1))
        return left + right if op == "+obj" else left - right
    if op == "neg":
        return -left
    k = draw(_NUMBER)
    nonfinite = not math.isfinite(k) or (op == "/" and k == 0)
    try:
        value = {"+": lambda: left + k, "-": lambda: k - left, "*": lambda: k * left,
                 "/": lambda: left / k}[op]()  # fmt: skip
    except ValueError as e:  # NonFiniteError included
        assert nonfinite, f"{op} {k} refused: {e}"
        documented(e)
        return left
    assert not nonfinite, f"{op} {k} accepted"
    return value


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(_expression())
def test_fuzz_objective_arithmetic_never_gives_nan(objective):
    """Arithmetic with any number either refuses a non-finite one (NonFiniteError) or
    divides by zero with a ValueError; what it builds is always finite, shape (B,)."""
    value = objective(_X)
    assert value.shape == (2,) and torch.isfinite(value).all(), objective.name
