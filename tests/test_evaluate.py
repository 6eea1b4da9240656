"""`fvis evaluate`: the report ranks methods, writes its files, and a seed reproduces it."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from fvis.cli import main as cli
from fvis.evaluate import COLUMNS, evaluate


def test_report_deterministic_and_saved(mnist_model, mnist_digits, tmp_path):
    images, labels = mnist_digits
    kw = dict(steps=4, max_shift=1, samples=2, seed=3)
    a = evaluate(mnist_model, "saliency,gradient_x_input", images[:2], labels[:2], **kw)
    b = evaluate(mnist_model, ["saliency", "gradient_x_input"], images[:2], labels[:2], **kw)
    assert a.to_json() == b.to_json() and a.markdown() == b.markdown()
    assert sorted(a.ranking()) == ["gradient_x_input", "saliency"]
    assert set(a.scores["saliency"]) == {k for k, _, _ in COLUMNS}
    # curves are relative to the intact score: 1 before any removal
    for m in a.methods:
        assert a.curves[m]["morf"][0] == pytest.approx(1.0, abs=1e-6)
        assert len(a.curves[m]["lerf"]) == 5
    # the random order is the same control for every method
    assert a.curves["saliency"]["random"] == a.curves["gradient_x_input"]["random"]
    assert a.stages == ["logits", "fc1", "conv3", "conv2", "conv1"]
    out = a.save(tmp_path / "rep")
    for name in ("selectivity.png", "continuity.png", "randomization.png"):
        assert Image.open(out / name).size[0] > 100
    data = json.loads((out / "report.json").read_text())
    assert data["settings"]["seed"] == 3 and data["methods"] == ["saliency", "gradient_x_input"]
    assert "| 1 |" in (out / "report.md").read_text()
    assert "<table>" in (out / "report.html").read_text()


def test_cli_evaluate(tmp_path, capsys):
    out = tmp_path / "ev"
    code = cli(["evaluate", "--methods", "saliency", "--images", "2", "--steps", "4",
                "-o", str(out)])  # fmt: skip
    assert code == 0 and (out / "report.html").exists()
    assert "saliency" in capsys.readouterr().out
    assert cli(["evaluate", "--methods", "nope", "--images", "2", "-o", str(out)]) == 2
    assert cli(["evaluate", "--images", "0", "-o", str(out)]) == 2
