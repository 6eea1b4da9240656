"""`fvis evaluate`: the report ranks methods, writes its files, and a seed reproduces it."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from fvis.cli import main as cli
from fvis.evaluate import COLUMNS, evaluate, evaluate_visualizations


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


def test_road_imputation_option(mnist_model, mnist_digits):
    images, labels = mnist_digits
    kw = dict(steps=4, max_shift=1, samples=2, seed=1)
    fill = evaluate(mnist_model, "saliency", images[:2], labels[:2], **kw)
    road = evaluate(mnist_model, "saliency", images[:2], labels[:2], imputation="road", **kw)
    assert road.to_json() == evaluate(mnist_model, "saliency", images[:2], labels[:2],
                                      imputation="road", **kw).to_json()  # fmt: skip
    assert road.settings["removal"].startswith("ROAD") and fill.settings["removal"] == "black fill"
    # same maps and ranking, other removal: the curves differ after step 0 only
    assert road.curves["saliency"]["morf"][0] == pytest.approx(1.0, abs=1e-6)
    assert road.curves["saliency"]["morf"][1:] != fill.curves["saliency"]["morf"][1:]
    assert road.continuity == fill.continuity


def test_visualization_measures(mnist_model, mnist_digits):
    import torch

    import fvis
    from fvis.quality import diversity, transfer, transformation_robustness

    images, labels = mnist_digits
    x, y = images[:4], labels[:4]
    mlp = fvis.load_model("fvis:mnist-mlp")
    got = evaluate_visualizations(mnist_model, x, y, other=mlp, layer="conv3", n=4, seed=2)
    rob = transformation_robustness(mnist_model, y, x, n=4, generator=2)
    assert got["robustness"] == pytest.approx(float(rob.nanmean()))
    assert got["diversity"] == pytest.approx(diversity(x, mnist_model, "conv3"))
    assert got["transfer"] == pytest.approx(float(transfer(mlp, x, y).mean()))
    assert got["transfer"] > 0.8  # real digits of their class transfer to the second model
    assert got == evaluate_visualizations(mnist_model, x, y, other=mlp, layer="conv3", n=4, seed=2)
    # one image: no diversity; no second model: no transfer; pixels without a layer
    one = evaluate_visualizations(mnist_model, x[:1], y[:1], n=2)
    assert set(one) == {"robustness"}
    assert evaluate_visualizations(mnist_model, x, y, n=2)["diversity"] == pytest.approx(
        diversity(x)
    )
    assert torch.isfinite(torch.tensor(got["robustness"]))


def test_default_inputs_leave_out_digits_with_a_non_positive_logit(mnist_model):
    """Pixel flipping divides by the explained logit: held-out digit 402 has f(x) <= 0 on
    the bundled CNN, so 403 inputs are digits 0..401 and 403; asked for directly, the
    refusal names it."""
    import torch

    from fvis.data import mnist
    from fvis.evaluate import _explained, load_inputs

    images, labels = mnist("test")
    x, y = load_inputs(mnist_model, 403)
    assert torch.equal(x, images[list(range(402)) + [403]])
    assert torch.equal(y, labels[list(range(402)) + [403]])
    z = mnist_model.fvis_info.normalize(images[400:404])
    with pytest.raises(ValueError, match=r"input 2 \(f = -"):
        _explained(mnist_model, z, labels[400:404])


def test_normalized_images_are_refused(mnist_model, mnist_digits):
    import pytest

    images, labels = mnist_digits
    x = mnist_model.fvis_info.normalize(images[:2])
    with pytest.raises(ValueError, match=r"in \[0, 1\].*before normalization"):
        evaluate(mnist_model, "saliency", x, labels[:2])
