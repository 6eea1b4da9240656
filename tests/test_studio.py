"""The studio headless (streamlit's AppTest): each view, the render job's live progress and
cancel, the recipe round trip, and every bad input answered by a message in the page."""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import fvis
from fvis.hooks import check_no_hooks

APP = str(Path(__file__).resolve().parents[1] / "apps" / "studio.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    """A fresh session on the bundled model; units rendered on demand go to ``tmp_path``."""
    monkeypatch.setenv("FVIS_STUDIO_DIR", str(tmp_path / "studio"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    yield at
    job = at.session_state.job if "job" in at.session_state else None
    if job is not None:  # no render may outlive its test
        job.cancel()
        assert job.wait(30)


def button(at, label):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r} in {[b.label for b in at.button]}"
    return found[0]


def widget(elements, label):
    found = [w for w in elements if w.label == label]
    assert found, f"no widget {label!r} in {[w.label for w in elements]}"
    return found[0]


def texts(at) -> str:
    kinds = ("error", "info", "caption", "header", "subheader", "markdown")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def captions(at) -> list[str]:
    return [c for im in at.image for c in im.captions]


def wait_for(at, done, timeout=60.0):
    """Rerun the page (as the browser's polling does) until ``done(at)``."""
    end = time.monotonic() + timeout
    while not done(at):
        job = at.session_state.job
        assert time.monotonic() < end, f"timed out; job: {job and (job.status, job.step)}"
        time.sleep(0.05)
        at.run()
        assert not at.exception, at.exception
    return at


def go(at, view):
    widget(at.sidebar.radio, "view").set_value(view).run()
    assert not at.exception, at.exception
    return at


def render_controls(at, units="conv1[0-1]", steps=8):
    widget(at.text_input, "units").set_value(units)
    widget(at.number_input, "steps").set_value(steps)
    return at.run()


def test_opens_on_the_layer_list_and_a_grid_of_labelled_units(app):
    rows = [r for r in fvis.layers(fvis.load_model("fvis:mnist")) if r.name != "input"]
    layers = widget(app.radio, "layer")
    assert layers.options == [f"{r.name} · {'×'.join(map(str, r.shape))}" for r in rows]
    assert layers.value == "conv1"
    assert [b.label for b in app.button if b.label.startswith("conv1[")] == [
        f"conv1[{k}]" for k in range(16)
    ]
    # every tile's picture comes from the committed gallery: nothing was rendered
    assert len(app.image) == 16 and app.session_state.job is None
    # sent as PNG: Streamlit's default would send the enlarged pixels as a lossy JPEG
    assert all(i.proto.imgs[0].url.endswith(".png") for i in app.image)
    assert "16 of 16 shown are in the gallery" in texts(app)
    button(app, "conv1[5]").click().run()
    assert "conv1[5] — unit 5 of conv1" in texts(app)
    button(app, "← grid").click().run()
    assert "16 units" in texts(app)


def test_unit_page_from_the_gallery_with_examples_ranked_by_max_and_mean(app):
    from fvis.examples import dataset_examples

    widget(app.radio, "layer").set_value("conv3").run()
    button(app, "conv3[7]").click().run()
    assert app.session_state.job is None  # shown from the gallery, nothing rendered
    shown = captions(app)
    assert shown[0].startswith("maximized · ") and shown[1].startswith("minimized · ")
    assert sum(c.startswith("diverse · ") for c in shown) == 4
    assert "not recorded by the gallery" not in texts(app)  # its objective curve is drawn
    prebuilt = sys.modules["fvis_studio.gallery"].PREBUILT[0]
    manifest = next(prebuilt.glob("*/manifest.json"))
    data = json.loads(manifest.read_text())
    unit = next(u for u in data["units"] if u["unit"] == "conv3[7]")
    by_max = [c for c in shown if c.startswith("#")]
    assert by_max == [f"#{e['index']}: {e['value']:.3g}" for side in ("top", "bottom")
                      for e in unit["examples"][side]]  # fmt: skip
    widget(app.radio, "rank by").set_value("mean").run()
    k, method = data["recipe"]["examples"], data["recipe"]["heatmap"]
    model = fvis.load_model("fvis:mnist")
    (ex,) = dataset_examples(model, None, ["conv3[7]"], k=k, rank="mean", method=method)
    expected = [
        f"#{j}: {v:.3g}"
        for side in ("top", "bottom")
        for j, v in zip(getattr(ex, f"{side}_index").tolist(), getattr(ex, f"{side}_value"))
    ]
    assert [c for c in captions(app) if c.startswith("#")] == expected
    (code,) = app.code  # the batch recipe that rendered it
    assert '"conv3[7]"' in code.value and json.loads(code.value)["recipe"] == "render"


def test_unit_rendered_on_demand_with_intermediate_images_is_added_to_the_gallery(app, tmp_path):
    widget(app.radio, "layer").set_value("pool1").run()
    assert "0 of 32 shown are in the gallery" in texts(app)
    button(app, "pool1[4]").click().run()
    assert "pool1[4] is not in the gallery yet" in texts(app)
    widget(app.number_input, "steps").set_value(60)
    button(app, "render it").click().run()
    wait_for(app, lambda at: any(c.startswith("step ") for c in captions(at)))
    preview = [c for c in captions(app) if c.startswith("step ")][0]
    assert preview.endswith((": pool1[4]", ": 4 images"))
    wait_for(app, lambda at: at.session_state.job is None)
    assert "pool1[4] added to the gallery" in texts(app)
    shown = captions(app)
    assert shown[0].startswith("maximized · ") and shown[1].startswith("minimized · ")
    assert sum(c.startswith("diverse · ") for c in shown) == 4
    assert list((tmp_path / "studio").glob("*/pool1/0004/unit.json"))
    button(app, "← grid").click().run()
    assert "1 of 32 shown are in the gallery" in texts(app)


def test_render_shows_progress_and_cancel_stops_it(app):
    model = fvis.load_model("fvis:mnist")
    go(app, "Render")
    render_controls(app, units="conv1[0-3]", steps=100_000)
    button(app, "render").click().run()
    job = app.session_state.job
    wait_for(app, lambda at: any(c.startswith("step ") for c in captions(at)))
    (preview,) = [c for c in captions(app) if c.startswith("step ")]
    step, names = preview.removeprefix("step ").split(": ")
    assert names == "conv1[0] conv1[1] conv1[2] conv1[3]" and 0 < int(step) < 100_000
    # a control changed mid-render: the page redraws, the render goes on with its recipe
    widget(app.text_input, "units").set_value("conv3[60-70]")
    widget(app.number_input, "seed").set_value(5)
    app.run()
    assert not app.exception and job.running
    assert "channel 64 is out of range (valid: 0..63)" in texts(app)
    button(app, "cancel").click().run()
    assert job.wait(10) and job.status == "cancelled" and job.step < 100_000
    wait_for(app, lambda at: at.session_state.job is None)
    assert "cancelled at step" in texts(app)
    studio_model = sys.modules["fvis_studio.models"].load("fvis:mnist", "DEFAULT")
    assert check_no_hooks(studio_model) == []
    assert not studio_model.training
    assert not any(p.requires_grad for p in studio_model.parameters())
    # the session is still usable: a short render finishes into the history
    render_controls(app, units="class[3]", steps=8)
    button(app, "render").click().run()
    wait_for(app, lambda at: at.session_state.job is None)
    (entry,) = app.session_state.history
    assert entry.scores[0].startswith("p=") and entry.images.shape == (1, 1, 28, 28)
    with torch.no_grad():
        p = model(model.fvis_info.normalize(entry.images)).softmax(1)[0, 3]
    assert entry.scores[0] == f"p={p:.3f}"
    assert f"class[3] · p={p:.3f}" in captions(app)
    button(app, "class[3]").click().run()
    assert "class[3] — class 3 of output" in texts(app)
    go(app, "History")
    assert "#1:" in texts(app)


def test_recipe_download_and_upload_give_the_identical_image(app, monkeypatch):
    from streamlit.runtime import memory_media_file_storage as storage

    offered = {}  # what the page offers for download, by file name
    original = storage.MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        offered[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(storage.MemoryMediaFileStorage, "load_and_get_id", spy)
    go(app, "Render")
    render_controls(app, units="conv3[2] -conv3[5]", steps=6)
    widget(app.number_input, "seed").set_value(3).run()
    button(app, "render").click().run()
    wait_for(app, lambda at: at.session_state.job is None)
    recipe = offered["render-1.json"]
    recipe = recipe.encode() if isinstance(recipe, str) else recipe
    assert json.loads(recipe)["units"] == ["conv3[2]", "-conv3[5]"]
    assert json.loads(recipe)["seed"] == 3
    # change the controls, then load the recipe back: it renders what it says
    render_controls(app, units="conv1[0]", steps=9)
    widget(app.file_uploader, "load a recipe").set_value(("r.json", recipe, "application/json"))
    app.run()
    wait_for(app, lambda at: len(at.session_state.history) == 2)
    first, second = app.session_state.history
    assert second.recipe == first.recipe
    assert torch.equal(first.images, second.images)
    assert widget(app.text_input, "units").value == "conv3[2] -conv3[5]"
    assert Image.open(io.BytesIO(offered["render-2.png"])).size[0] > 0


def test_explain_shows_true_label_and_top_channels_open_their_unit_page(app, mnist_digits):
    go(app, "Explain")
    widget(app.number_input, "digit (0–999)").set_value(215).run()
    label = int(mnist_digits[1][215])
    assert f"held-out digit #215, true label {label} · predicted {label}" in texts(app)
    widget(app.selectbox, "method").set_value("saliency")
    widget(app.selectbox, "layer").set_value("conv2")
    app.run()
    assert not app.exception, app.exception
    assert f"saliency for {label}" in captions(app)
    opened = [b for b in app.button if b.label.startswith("conv2[")]
    assert len(opened) == 6
    opened[0].click().run()
    assert f"{opened[0].label} — unit" in texts(app)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.txt", b"not an image at all", "notes.txt is not an image PIL can read"),
        ("bomb.png", png_header(100_000, 100_000), "bomb.png is refused as a decompression bomb"),
        ("big.png", png_header(8000, 8000), "big.png is 8000×8000 pixels"),
    ],
    ids=["not-an-image", "decompression-bomb", "huge"],
)
def test_bad_uploads_get_a_message_and_the_page_stays_usable(app, name, data, message):
    go(app, "Explain")
    widget(app.radio, "input").set_value("upload").run()
    widget(app.file_uploader, "image").set_value((name, data, "image/png")).run()
    assert not app.exception, app.exception
    assert any(message in e.value for e in app.error), [e.value for e in app.error]
    widget(app.radio, "input").set_value("held-out digit").run()
    assert not app.exception and not app.error


def test_an_unsupported_operation_is_a_message(app):
    go(app, "Explain")
    widget(app.selectbox, "method").set_value("cam").run()
    assert not app.exception, app.exception
    assert any("cam cannot explain this" in e.value for e in app.error)


def test_a_nan_during_optimization_stops_the_render_with_a_message(app, tmp_path):
    model = fvis.load_model("fvis:mnist", weights=None)
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = float("nan")
    fvis.models.save(model, tmp_path / "nan.pt", "fvis:mnist")
    widget(app.sidebar.text_input, "model").set_value(str(tmp_path / "nan.pt")).run()
    go(app, "Render")
    render_controls(app, units="conv2[0]", steps=50)
    button(app, "render").click().run()
    wait_for(app, lambda at: at.session_state.job is None)
    assert any("the objective became nan at step 1 of 50" in e.value for e in app.error)
    render_controls(app, units="conv2[1]", steps=5)  # still usable
    assert not app.exception and not app.error


@pytest.mark.parametrize(
    "units, message",
    [
        ("fc1[120-130]", "channel 128 is out of range (valid: 0..127)"),
        ("class[10]", "class 10 is out of range (valid: 0..9)"),
        ("conv3[5-2]", "range 5-2 runs backwards"),
        ("conv3:5", "write channel 5 of conv3 as conv3[5]"),
        ("nope[1]", "nope"),
    ],
)
def test_bad_units_are_refused_in_the_page(app, units, message):
    go(app, "Render")
    render_controls(app, units=units)
    assert any(message in e.value for e in app.error), [e.value for e in app.error]
    assert button(app, "render").disabled


def test_a_model_that_cannot_load_is_a_message_not_another_model(app):
    widget(app.sidebar.text_input, "model").set_value("torchvision:resnet_nope").run()
    assert any("Cannot load model 'torchvision:resnet_nope'" in e.value for e in app.error)
    assert not [b for b in app.button if b.label.startswith("conv1[")]  # nothing else shown
    widget(app.sidebar.text_input, "model").set_value("fvis:mnist").run()
    assert not app.error and button(app, "conv1[0]")


def test_random_init_loads_the_named_model_untrained(app):
    widget(app.sidebar.radio, "weights").set_value("random init").run()
    assert not app.exception, app.exception
    assert "random init: the model is untrained" in texts(app)
    trained = fvis.load_model("fvis:mnist")
    untrained = sys.modules["fvis_studio.models"].load("fvis:mnist", None)
    assert type(untrained) is type(trained)
    assert not torch.equal(untrained.conv1.weight, trained.conv1.weight)
