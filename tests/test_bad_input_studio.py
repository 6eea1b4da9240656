"""Bad input through the studio (streamlit's AppTest): each refusal is a message in the
page, and the page stays usable (the next valid input works). The views and the first
refusals (uploads, an unsupported method, a NaN render, a model that does not load) are
in ``test_studio.py``; these are the rest."""

from __future__ import annotations

import io
import json

import pytest
import test_studio
import torch
from PIL import Image
from test_studio import button, go, png_header, render_controls, widget

import fvis
from fvis.models import save
from fvis.recipes import RenderRecipe

app = test_studio.app  # the fixture: a fresh studio session on the bundled model


def errors(at) -> list[str]:
    assert not at.exception, at.exception
    return [str(e.value) for e in at.error]


def assert_message(at, *words):
    found = [e for e in errors(at) if all(w in e for w in words)]
    assert found, f"no error with {words} in {errors(at)}"


UNITS = {
    "range of 10^11 units": ("conv1[0-99999999999]", ["channel 16 is out of range (valid: 0..15)"]),
    "negative unit": ("conv1[-3]", ["channel -3 is negative", "-conv1[-3]"]),
    "fractional unit": ("conv3[1.5]", ["channel '1.5' is not a whole number"]),
    "class out of range": ("class[10]", ["class 10 is out of range (valid: 0..9)"]),
    "Lucent's layer:channel": ("conv1:3", ["write channel 3 of conv1 as conv1[3]"]),
    "unknown layer": ("conv9[1]", ["Unknown layer 'conv9'", "Nearest names: conv3"]),
}  # fmt: skip


@pytest.mark.parametrize("case", UNITS, ids=list(UNITS))
def test_bad_units_are_refused_and_the_render_button_disabled(app, case):
    units, words = UNITS[case]
    go(app, "Render")
    render_controls(app, units=units)
    assert_message(app, *words)
    assert button(app, "render").disabled
    render_controls(app, units="conv1[0-1]")  # still usable
    assert not errors(app) and not button(app, "render").disabled


def _recipe(**changes) -> bytes:
    recipe = {**RenderRecipe(units=("conv3[2]",), steps=3).to_dict(), **changes}
    return json.dumps(recipe).encode()  # NaN too: Python's json reads and writes it


RECIPES = {
    "not JSON": (b"\x89PNG not json", ["r.json is not a JSON recipe"]),
    "a JSON list": (b"[1, 2]", ["holds a JSON list"]),
    "unit out of range": (_recipe(units=["conv3[99]"]), ["channel 99 is out of range"]),
    "unknown layer": (_recipe(units=["conv33[2]"]), ["Unknown layer 'conv33'"]),
    "steps not a number": (_recipe(steps="many"), ["'steps' must be int, not 'many'"]),
    "a NaN setting": (_recipe(tv=float("nan")), ["tv must be a finite number, not nan"]),
    "an unknown setting": (_recipe(layer="conv3"), ["unknown render recipe field(s) layer"]),
    "a future format": (_recipe(format=99), ["recipe format 99 is not supported"]),
}  # fmt: skip


@pytest.mark.parametrize("case", RECIPES, ids=list(RECIPES))
def test_bad_recipe_uploads_are_a_message(app, case):
    data, words = RECIPES[case]
    go(app, "Render")
    widget(app.file_uploader, "load a recipe").set_value(("r.json", data, "application/json"))
    app.run()
    assert app.session_state.job is None  # nothing started
    assert_message(app, "Cannot load r.json", *words)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    save(fvis.load_model("fvis:mnist"), folder / "truncated.pt", "fvis:mnist")
    path = folder / "truncated.pt"
    path.write_bytes(path.read_bytes()[:1000])
    torch.save({"fvis_format": 1, "spec": str(folder / "self.pt"), "state_dict": {}},
               folder / "self.pt")  # fmt: skip
    return folder


@pytest.mark.parametrize(
    "name, words",
    [("truncated.pt", ["truncated"]), ("self.pt", ["not a checkpoint file"]),
     ("missing.pt", ["missing.pt"]), ("fvis:nope", ["Unknown bundled model", "fvis:mnist"])],
    ids=["truncated checkpoint", "checkpoint naming itself", "missing file", "unknown spec"],
)  # fmt: skip
def test_a_model_that_cannot_load_says_why(app, checkpoints, name, words):
    spec = name if ":" in name else str(checkpoints / name)
    widget(app.sidebar.text_input, "model").set_value(spec).run()
    assert_message(app, "Cannot load model", *words)
    widget(app.sidebar.text_input, "model").set_value("fvis:mnist").run()
    assert not errors(app) and button(app, "conv1[0]")


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    noise = torch.randint(0, 256, (28, 28), generator=torch.Generator().manual_seed(0))
    Image.fromarray(noise.to(torch.uint8).numpy()).save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]  # a valid header, half the pixels


@pytest.mark.parametrize(
    "name, data, words",
    [("empty.png", b"", ["empty.png"]), ("cut.png", _truncated_png(), ["cut.png"]),
     ("zero.png", png_header(0, 0), ["zero.png"])],
    ids=["empty file", "truncated PNG", "0×0 PNG"],
)  # fmt: skip
def test_more_bad_uploads_are_a_message(app, name, data, words):
    go(app, "Explain")
    widget(app.radio, "input").set_value("upload").run()
    widget(app.file_uploader, "image").set_value((name, data, "image/png")).run()
    assert_message(app, *words)
    widget(app.radio, "input").set_value("held-out digit").run()
    assert not errors(app)
