"""Recipes: unit specs, JSON round trip, content hash, and one image from every front end."""

from __future__ import annotations

import hashlib
import inspect

import pytest
import torch

import fvis
from fvis import objectives as O
from fvis.recipes import (
    ExplainRecipe,
    RenderRecipe,
    Unit,
    UnitError,
    parameterization,
    parse_unit,
    parse_units,
)
from fvis.recipes.recipe import _counts

CASES = {
    "conv3[5]": ["conv3[5]"],
    "conv3[0-2]": ["conv3[0]", "conv3[1]", "conv3[2]"],
    "conv3[4,1]": ["conv3[4]", "conv3[1]"],
    "conv3[5]@(4,3)": ["conv3[5]@(4,3)"],
    "conv3[5]@center": ["conv3[5]@center"],
    "class[3]": ["class[3]"],
    "class[7-9]": ["class[7]", "class[8]", "class[9]"],
    "-fc1[2]": ["-fc1[2]"],
    "conv3{3:1,7:-0.5}": ["conv3{3:1,7:-0.5}"],
    "conv3{3:2}@(1,1)": ["conv3{3:2}@(1,1)"],
    "deepdream(conv2)": ["deepdream(conv2)"],
    "layer1.0.relu:1[5]": ["layer1.0.relu:1[5]"],
    "conv1[0] -class[2]": ["conv1[0]", "-class[2]"],
}


@pytest.mark.parametrize("spec", sorted(CASES))
def test_unit_specs_parse_to_canonical_units_that_round_trip(spec):
    units = parse_units(spec)
    assert [str(u) for u in units] == CASES[spec]
    for u in units:
        assert parse_unit(str(u)) == u


def test_unit_fields():
    assert parse_unit("layer1.0.relu:1[5]") == Unit("channel", "layer1.0.relu:1", 5)
    assert parse_unit("-conv3[5]@(4,3)") == Unit("neuron", "conv3", 5, (4, 3), negative=True)
    assert parse_unit("class[cat]") == Unit("class", "output", "cat")
    assert parse_unit("conv3{3:1,7:-0.5}").weights == ((3, 1.0), (7, -0.5))
    assert -parse_unit("conv3[5]") == parse_unit("-conv3[5]")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("conv3:5", r"write channel 5 of conv3 as conv3\[5\] \(Lucent's 'layer:channel'"),
        ("layer1.0.relu:1", r"as layer1.0.relu\[1\]"),
        ("conv3", "names a layer but no unit"),
        ("conv3[-3]", "channel -3 is negative"),
        ("conv3[5-2]", "runs backwards; write 2-5"),
        ("conv3[a]", "'a' is not a whole number"),
        ("conv3[]", "empty channel"),
        ("conv3[*]", "needs the model to count"),
        ("class[1]@(1,1)", "a class has no position"),
        ("conv3{3}", "channel:weight pairs"),
        ("conv3{3:nan}", "not finite"),
        ("conv3[1", "cannot read unit"),
        ("", "no unit given"),
    ],
)
def test_bad_unit_specs_say_how_to_write_them(spec, message):
    with pytest.raises(UnitError, match=message):
        parse_units(spec)


def test_specs_checked_against_a_model(mnist_model):
    counts = _counts(mnist_model)
    assert len(parse_units("conv3[*]", **counts)) == 64
    assert [str(u) for u in parse_units("class[*]", **counts)][-1] == "class[9]"
    with pytest.raises(UnitError, match=r"channel 64 is out of range \(valid: 0..63\)"):
        parse_units("conv3[64]", **counts)
    with pytest.raises(UnitError, match="no class named 'dog'"):
        parse_units("class[dog]", **counts)
    with pytest.raises(fvis.LayerError, match="Nearest names: conv3"):
        parse_units("conv4[0]", **counts)


def test_unit_objectives_match_the_objectives_they_name():
    """Exact values on hand-set activations."""
    a = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).view(2, 4, 3, 3)
    acts = {"l": a, "output": torch.tensor([[1.0, 5.0, -2.0]])}
    assert torch.equal(parse_unit("l[2]").objective()(acts), O.channel("l", 2)(acts))
    assert torch.equal(parse_unit("-l[1]@(2,0)").objective()(acts), -a[:, 1, 0, 2])
    assert torch.equal(parse_unit("l[1]@center").objective()(acts), a[:, 1, 1, 1])
    assert torch.equal(parse_unit("class[1]").objective()({"output": acts["output"]}),
                       torch.tensor([5.0]))  # fmt: skip
    d = parse_unit("l{0:2,3:-1}").objective()(acts)
    assert torch.equal(d, (2 * a[:, 0] - a[:, 3]).flatten(1).mean(1))
    assert torch.equal(d, O.direction("l", [2.0, 0.0, 0.0, -1.0])(acts))
    assert torch.equal(parse_unit("deepdream(l)").objective()(acts), O.layer("l")(acts))


def test_recipe_json_round_trip_and_stable_hash():
    r = RenderRecipe(units=("conv3[0-3]", "-class[2]"), steps=64, tv=0.05, seeds=(1, 2))
    assert RenderRecipe.from_dict(r.to_dict()) == r
    assert RenderRecipe.from_json(r.to_json()) == r
    assert RenderRecipe.from_json(r.to_json()).hash() == r.hash()
    # pinned: the hash is SHA-256 of this canonical JSON, on every machine and run
    canonical = (
        '{"blur":0.0,"decay_power":1.0,"diversity":0.0,"diversity_layer":null,"format":1,'
        '"frequency":0.0,"l1":0.0,"lr":null,"param":"fft","prior":"image","recipe":"render",'
        '"redirected_relu":16,"repeat":1,"seed":0,"seeds":[],"size":null,"steps":64,'
        '"transforms":"standard","tv":0.0,"units":["class[3]"]}'
    )
    assert RenderRecipe(units=("class[3]",), steps=64).hash() == (
        hashlib.sha256(canonical.encode()).hexdigest()
    )
    assert r.replace(tv=0.06).hash() != r.hash()
    assert ExplainRecipe.from_dict(ExplainRecipe(target="3").to_dict()).target == "3"
    with pytest.raises(ValueError, match="unknown render recipe field.*stpes"):
        RenderRecipe.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="'steps' must be int"):
        RenderRecipe.from_dict({"steps": "3"})
    with pytest.raises(ValueError, match="explain' recipe, not a 'render"):
        RenderRecipe.from_dict(ExplainRecipe().to_dict())
    with pytest.raises(ValueError, match="lr must be a finite number"):
        RenderRecipe(lr=float("nan"))


def test_every_default_has_a_source():
    for cls in (RenderRecipe, ExplainRecipe):
        for name, _, source in cls.defaults():
            assert source, f"{cls.__name__}.{name} has no documented source"


def test_redirected_relu_default_is_one_value_everywhere():
    from fvis.cli import build_parser

    render_default = inspect.signature(fvis.render).parameters["redirected_relu_steps"].default
    cli_default = build_parser().parse_args(["render", "--class", "1"]).redirected_relu
    assert render_default == RenderRecipe().redirected_relu == cli_default == 16


def test_per_item_seeds_start_each_item_as_a_batch_of_one(mnist_model):
    for kind in ("fft", "cppn"):
        batch = dict(
            parameterization(mnist_model, 3, kind=kind, seeds=(7, 8, 9)).named_parameters()
        )
        alone = dict(parameterization(mnist_model, 1, kind=kind, seeds=(8,)).named_parameters())
        assert all(torch.equal(batch[n][1], alone[n][0]) for n in alone)
        assert not all(torch.equal(batch[n][0], batch[n][1]) for n in alone)


def test_recipe_renders_what_the_api_renders(mnist_model):
    """RenderRecipe.run is fvis.render with the objective and parameterization spelled out."""
    recipe = RenderRecipe(units=("conv3[1-2]",), steps=4, tv=0.05, seed=3)
    got = recipe.run(mnist_model)
    objective = O.one_per_item([O.channel("conv3", 1), O.channel("conv3", 2)])
    param = fvis.param.for_input((1, 28, 28), 2, seed=3)
    want = fvis.render(mnist_model, objective - 0.05 * O.total_variation(), param, steps=4,
                       seed=3, progress=False)  # fmt: skip
    assert torch.equal(got.images, want.images)
    assert torch.equal(got.history, want.history)


def test_diversity_groups_compare_items_within_their_group_only():
    torch.manual_seed(0)
    a = {"l": torch.randn(6, 3, 4, 4)}
    grouped = O.diversity("l", group=3)(a)
    assert torch.allclose(grouped[:3], O.diversity("l")({"l": a["l"][:3]}), atol=1e-6)
    assert torch.allclose(grouped[3:], O.diversity("l")({"l": a["l"][3:]}), atol=1e-6)
    with pytest.raises(ValueError, match="groups of 4 do not divide a batch of 6"):
        O.diversity("l", group=4)(a)


def test_unit_values_are_the_units_own_values_on_the_final_images(mnist_model):
    """What ``fvis render`` prints per unit: the class logit / channel mean on the image
    as saved — not the optimized objective (a transformed image, penalties and the
    diversity term subtracted)."""
    import torch

    from fvis import hooks
    from fvis.recipes import RenderRecipe

    recipe = RenderRecipe(units=("class[2]", "conv3[1]"), steps=3, tv=0.5, diversity=10.0)
    result = recipe.run(mnist_model)
    got = recipe.unit_values(mnist_model, result.images)
    x = mnist_model.fvis_info.normalize(result.images)
    acts = hooks.capture(mnist_model, x, ["conv3", hooks.OUTPUT])
    want = torch.stack([acts.output[0, 2], acts["conv3"][1, 1].mean()])
    torch.testing.assert_close(got, want)
    assert (got - result.history[-1]).abs().min() > 1  # the penalties are not in it
