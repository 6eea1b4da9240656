"""fvis explain: the report library (fvis.explain) and its command, both from ExplainRecipe."""

from __future__ import annotations

import torch

from fvis.cli import main
from fvis.explain import building_blocks
from fvis.recipes import ExplainRecipe, input_image


def test_explain_recipe_is_the_library_report(mnist_model):
    image = input_image(mnist_model, digit=3)
    recipe = ExplainRecipe(method="gradient_x_input", layer="conv3", top=2, steps=3, tv=0.1)
    got = recipe.run(mnist_model, image)
    want = building_blocks(mnist_model, image, method="gradient_x_input", layer="conv3",
                           top=2, steps=3, tv=0.1)  # fmt: skip
    assert got.channels == want.channels and len(got.channels) == 2
    assert torch.equal(got.visualizations, want.visualizations)
    assert torch.equal(got.attribution, want.attribution)
    other = recipe.replace(tv=0.0).run(mnist_model, image)
    assert not torch.equal(other.visualizations, got.visualizations)  # tv reaches the renders


def test_explain_command(tmp_path, capsys, mnist_model):
    out = tmp_path / "r.html"
    args = ["explain", "--model", "fvis:mnist", "--device", "cpu", "--digit", "3", "-q"]
    args += ["--layer", "conv3", "--top", "2", "--steps", "3", "--method", "gradient_x_input"]
    assert main([*args, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    image = input_image(mnist_model, digit=3)
    report = ExplainRecipe(method="gradient_x_input", layer="conv3", top=2, steps=3).run(
        mnist_model, image
    )
    for c in report.channels:
        assert f"conv3[{c}]  attribution" in text
    assert f"class {report.label}" in text and out.read_text().startswith("<!doctype html>")


def test_explain_bad_input_is_one_line(tmp_path, capsys):
    base = ["explain", "--model", "fvis:mnist", "--device", "cpu", "-q"]
    for flags, message in [
        (["--digit", "1000"], "digit 1000 is out of range (valid: 0..999)"),
        (["--method", "gradcam_nope"], "unknown attribution method 'gradcam_nope'"),
        (["--groups", "2", "-o", str(tmp_path / "g.html")], "--groups writes a picture"),
        (["--top", "0"], "top must be at least 1"),
    ]:
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_building_blocks_of_a_vector_layer_have_no_maps(mnist_model):
    """fc1 has neurons, not positions: their scores rank them, there is no map to draw."""
    image = input_image(mnist_model, digit=3)
    report = building_blocks(mnist_model, image, method="saliency", layer="fc1", top=3, steps=2)
    assert report.channel_maps is None and len(report.channels) == 3
    assert report.channel_scores.shape == (3,) and report.visualizations.shape[0] == 3
    assert [c for c, _ in report.tiles()][2:] == [
        f"fc1:{c} ({s:+.3g})" for c, s in zip(report.channels, report.channel_scores)
    ]
    assert report.figure().size[0] > 0
