"""The Streamlit studio runs headless: every tab draws, and a render and an explanation
complete without exceptions (streamlit's AppTest)."""

from __future__ import annotations

from pathlib import Path

import pytest

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
APP = str(Path(__file__).resolve().parents[1] / "apps" / "studio.py")


def test_studio_tabs_render_and_explain():
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["Visualize", "Explain", "Dataset"]
    assert at.sidebar.text_input[0].value == "fvis:mnist"
    steps = [n for n in at.number_input if n.label == "steps"][0]
    steps.set_value(8)
    [b for b in at.button if b.label == "render"][0].click()
    n_images = len(at.image)  # the Dataset tab shows one
    at.run()
    assert not at.exception, at.exception
    assert len(at.image) == n_images + 1  # the rendered grid
    [n for n in at.number_input if n.label == "render steps"][0].set_value(8)
    [b for b in at.button if b.label == "explain"][0].click()
    at.run()
    assert not at.exception, at.exception
    assert any("class" in c for im in at.image for c in im.captions)  # the report
    [r for r in at.radio if r.label == "blocks"][0].set_value("neuron groups")
    [b for b in at.button if b.label == "explain"][0].click()
    at.run()
    assert not at.exception, at.exception
    assert any("groups" in c for im in at.image for c in im.captions)


def test_studio_reports_a_bad_model_spec():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.text_input[0].set_value("torchvision:resnet_nope").run()
    assert at.sidebar.error and "resnet" in at.sidebar.error[0].value
