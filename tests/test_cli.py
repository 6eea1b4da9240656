"""The command line: argument parsing only, everything else from the recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fvis.cli import build_parser, explain_recipe, main, render_recipe, studio_app
from fvis.gallery.options import recipe_from
from fvis.image import grid
from fvis.recipes import ExplainRecipe, RenderRecipe

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--model", "fvis:mnist", "--device", "cpu", "--steps", "3", "-q"]


def test_unit_options_and_unit_specs_build_the_same_recipe():
    parse = build_parser().parse_args
    for flags, spec in [
        (["--layer", "conv3", "--channel", "0-7"], "conv3[0-7]"),
        (["--layer", "fc1", "--channel", "5", "--negative"], "-fc1[5]"),
        (
            ["--layer", "conv2", "--channel", "1", "--neuron", "--x", "2", "--y", "3"],
            "conv2[1]@(2,3)",
        ),  # fmt: skip
        (["--layer", "conv2", "--channel", "1", "--neuron"], "conv2[1]@center"),
        (["--class", "all"], "class[*]"),
        (["--class", "3,d"], "class[3,d]"),
        (["--layer", "conv3", "--deepdream"], "deepdream(conv3)"),
    ]:
        assert render_recipe(parse(["render", *flags])).units == (spec,)
        assert render_recipe(parse(["render", f"--unit={spec}"])).units == (spec,)


def test_several_units_space_separated_quoted_or_repeated():
    parse = build_parser().parse_args
    want = ("conv3[1]", "class[2]")
    for flags in (
        ["--unit", "conv3[1]", "class[2]"],
        ["--unit", "conv3[1] class[2]"],
        ["--unit", "conv3[1]", "--unit", "class[2]"],
    ):
        assert render_recipe(parse(["render", *flags, "-o", "x.png"])).units == want, flags


def test_setting_options_default_to_the_recipe_and_take_its_types():
    """fvis render, explain and gallery declare their settings once (fvis.recipes.options):
    with no options each builds its recipe's defaults; values parse to the field's type."""
    parse = build_parser().parse_args
    assert render_recipe(parse(["render", "--unit", "conv3[5]"])) == RenderRecipe(
        units=("conv3[5]",)
    )
    assert explain_recipe(parse(["explain"])) == ExplainRecipe()
    gallery = recipe_from(parse(["gallery", "--layers", "conv3"]))
    assert gallery.render == RenderRecipe() and gallery == type(gallery)()
    args = parse(["render", "--unit", "conv3[5]", "--steps", "7", "--tv", "1", "--batch", "2"])
    assert (args.steps, args.tv, args.batch) == (7, 1.0, 2)
    assert type(args.steps) is int and type(args.tv) is float
    args = parse(["gallery", "--layers", "conv3", "--lr", "0.5", "--size", "32"])
    assert (args.lr, args.size) == (0.5, 32) and type(args.size) is int


def test_cli_image_is_the_recipe_image(tmp_path, capsys):
    """`fvis render` and RenderRecipe.run give the same picture; --save-recipe and
    --recipe reproduce it."""
    out, again, saved = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "r.json"
    args = ["render", *FAST, "--unit", "conv3[2] -fc1[4]", "--tv", "0.05", "--scale", "1"]
    assert main([*args, "--save-recipe", str(saved), "-o", str(out)]) == 0
    recipe = RenderRecipe.from_json(saved.read_text())
    assert recipe.units == ("conv3[2]", "-fc1[4]") and recipe.tv == 0.05 and recipe.steps == 3
    printed = capsys.readouterr().out
    assert "[0] conv3[2] = " in printed and "[1] -fc1[4] = " in printed
    assert printed.count("(optimized objective with penalties ") == 2  # --tv 0.05
    assert f"recipe {recipe.hash()[:12]}" in printed
    import fvis

    want = grid(recipe.run(fvis.load_model("fvis:mnist", device="cpu")).images)
    got = Image.open(out)
    assert got.tobytes() == want.convert(got.mode).tobytes()
    assert main(["render", "--recipe", str(saved), "--scale", "1", "-q", "-o", str(again)]) == 0
    assert Image.open(again).tobytes() == got.tobytes()


def test_user_errors_are_one_line_with_exit_2(tmp_path, capsys):
    out = str(tmp_path / "x.png")
    cases = [
        (["--unit", "conv3:5"], "conv3[5] (Lucent's 'layer:channel'"),
        (["--layer", "conv3", "--channel", "5-2"], "runs backwards"),
        (["--layer", "conv3", "--channel", "64"], "valid: 0..63"),
        (["--layer", "conv3"], "--layer needs --channel"),
        (["--class", "3", "--layer", "conv3"], "one of --unit, --class or --layer"),
        ([], "say what to visualize"),
        (["--unit", "conv3[1]", "--lr", "nan"], "lr must be a finite number"),
        (["--unit", "conv4[1]"], "Nearest names: conv3"),
    ]
    for flags, message in cases:
        assert main(["render", *FAST, *flags, "-o", out]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("fvis render: error:") and message in err, (flags, err)
        assert err.count("\n") == 1
    assert not Path(out).exists()


def test_layers_command(capsys):
    assert main(["layers", "--model", "fvis:mnist", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "type", "features", "grid", "layout", "shape"]
    assert any(ln.split() == ["conv3", "Conv2d", "64", "14×14", "NCHW", "64×14×14"] for ln in lines)
    assert any(ln.split() == ["fc1", "Linear", "128", "-", "vector", "128"] for ln in lines)


def test_studio_command_runs_streamlit_on_the_packaged_app(monkeypatch):
    assert studio_app().resolve() == ROOT / "apps" / "studio.py"
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["studio", "--port", "8599", "--headless"]) == 0
    assert calls == [[sys.executable, "-m", "streamlit", "run", str(studio_app()),
                      "--browser.gatherUsageStats", "false",
                      "--server.port", "8599", "--server.headless", "true"]]  # fmt: skip


def test_explain_library_does_not_import_the_cli():
    code = "import sys, fvis.explain, fvis.recipes; sys.exit('fvis.cli' in sys.modules)"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_thresholds_are_saved_beside_the_output(tmp_path):
    out = tmp_path / "t.png"
    assert main(["render", *FAST, "--unit", "class[1]", "--thresholds", "2", "-o", str(out)]) == 0
    assert (tmp_path / "t_step2.png").exists()
    assert torch.tensor(Image.open(out).size).min() >= 28


def test_an_unknown_option_names_the_subcommand(capsys):
    from fvis.cli import main

    with pytest.raises(SystemExit) as e:
        main(["render", "--model", "fvis:mnist", "--class", "1", "--threads", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "fvis render: error: unrecognized arguments: --threads 2 (see fvis render --help)"
