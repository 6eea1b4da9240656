"""Notebook pictures (_repr_png_ / _repr_html_), the side-by-side method figure with its
colour scales, and `fvis attribute` on a folder of images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import fvis
from fvis import heatmap
from fvis import objectives as O
from fvis.attribution import GradCAM, Saliency
from fvis.cli import main as cli
from fvis.figures import Comparison, compare
from fvis.image import load_image

torch.set_num_threads(1)


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def test_render_result_shows_inline(mnist_model):
    result = fvis.render(mnist_model, O.class_logit(3), steps=2, batch=2, progress=False)
    picture = _png(result._repr_png_())
    assert picture.tobytes() == result.grid(scale=4).tobytes()  # 28 px → 4× ≥ 128 px
    page = result._repr_html_()
    assert "data:image/png;base64," in page and "class(3): 2 steps" in page


def test_compare_runs_each_method_on_the_predicted_class(mnist_model, mnist_digits):
    images = mnist_digits[0][[0, 150]]
    x = mnist_model.fvis_info.normalize(images)
    fig = compare(mnist_model, x, ["saliency", "gradcam"])
    predicted = mnist_model(x).argmax(1)
    assert torch.equal(fig.targets, predicted)
    assert fig.labels == [str(k) for k in predicted.tolist()]  # the bundled labels
    torch.testing.assert_close(
        fig.maps["saliency"], Saliency(mnist_model).attribute(x, predicted).sum(1)
    )
    cam = GradCAM(mnist_model).attribute(x, predicted, upsample=True)
    torch.testing.assert_close(fig.maps["gradcam"], cam.sum(1))  # layer maps upsampled
    picture = _png(fig._repr_png_())
    assert picture.size == fig.figure().size == (4 + 3 * 100, 16 + 2 * 116)
    assert "saliency, gradcam on 2 image(s)" in fig._repr_html_()
    with pytest.raises(ValueError, match="scale must be one of map, method, shared"):
        compare(mnist_model, x, ["saliency"], scale="global")


def test_colour_scale_per_map_or_shared():
    # two methods whose maps differ 10× in size: per map both saturate, shared the
    # small one is drawn 10× fainter
    images = torch.zeros(1, 1, 8, 8)
    maps = {"big": torch.ones(1, 8, 8), "small": torch.full((1, 8, 8), 0.1)}

    def tile_centre(fig: Comparison, column: int) -> np.ndarray:
        picture = np.asarray(fig.figure(size=32)).astype(int)
        return picture[16 + 4 + 16 + 14, 4 + column * 36 + 16]

    kw = dict(images=images, maps=maps, targets=torch.tensor([0]), labels=["a"])
    per_map = Comparison(**kw, scale="map")
    shared = Comparison(**kw, scale="shared")
    assert (tile_centre(per_map, 1) == tile_centre(per_map, 2)).all()
    assert (tile_centre(shared, 1) == tile_centre(per_map, 1)).all()
    faint, full = tile_centre(shared, 2), tile_centre(shared, 1)
    assert faint.sum() < 0.1 * full.sum()
    # shared: one scale for all maps, the 99.5th percentile of |R| over both = 1, so the
    # small map is drawn as t = 0.1 (alpha 0.07 of inferno(0.1) over black)
    expected = heatmap.overlay(images, maps["small"][:, None], vmax=1.0)[0, :, 4, 4]
    np.testing.assert_allclose(faint, (expected * 255).round().numpy(), atol=1)


def test_fvis_attribute_on_a_folder(tmp_path, mnist_model, mnist_digits):
    folder, out = tmp_path / "digits", tmp_path / "out"
    folder.mkdir()
    images = mnist_digits[0][[0, 120, 240]]
    for i, img in enumerate(images):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"d{i}.png")
    argv = ["attribute", "--model", "fvis:mnist", "--images", str(folder), "--batch", "2"]
    assert cli([*argv, "--method", "saliency,gradcam", "-o", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"d{i}_{m}.png" for i in range(3) for m in ("gradcam", "saliency")
    ]
    data = np.load(out / "attributions.npz")
    assert list(data["files"]) == ["d0.png", "d1.png", "d2.png"]
    x = mnist_model.fvis_info.normalize(
        torch.cat([load_image(folder / f"d{i}.png", channels=1) for i in range(3)])
    )
    predicted = mnist_model(x).argmax(1)
    assert data["targets"].tolist() == predicted.tolist()
    probs = mnist_model(x).softmax(1).gather(1, predicted[:, None]).squeeze(1)
    np.testing.assert_allclose(data["probabilities"], probs.detach().numpy(), rtol=1e-5)
    # batches of 2 give the numbers of one pass over all three
    expected = Saliency(mnist_model).attribute(x, predicted).sum(1)
    np.testing.assert_allclose(data["saliency"], expected.numpy(), rtol=1e-5, atol=1e-7)
    assert data["gradcam"].shape == (3, 28, 28)
    # one target for all, by label
    assert cli([*argv, "--method", "gradient", "--target", "7", "-o", str(out / "t"), "-q"]) == 0
    assert np.load(out / "t" / "attributions.npz")["targets"].tolist() == [7, 7, 7]
    # a file that only looks like an image is left out and listed; the rest are explained
    (folder / "d1b.png").write_text("not an image")
    assert cli([*argv, "--method", "saliency", "-o", str(out / "s"), "-q"]) == 0
    data = np.load(out / "s" / "attributions.npz")
    assert list(data["files"]) == ["d0.png", "d1.png", "d2.png"]
    assert [s.split(":")[0] for s in data["skipped"]] == ["d1b.png"]
    np.testing.assert_allclose(data["saliency"], expected.numpy(), rtol=1e-5, atol=1e-7)


def test_fvis_attribute_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["attribute", "--model", "fvis:mnist", "-q", "-o", str(tmp_path / "o")]
    assert cli([*argv, "--images", str(tmp_path / "empty")]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert cli([*argv, "--images", str(tmp_path), "--method", "salency"]) == 2
    assert "Nearest: saliency" in capsys.readouterr().err


def test_fvis_attribute_heatmaps_keep_each_file_s_size(tmp_path, mnist_digits):
    """The model sees 28 × 28; the heatmap PNG is drawn over the file as it is (42 × 56)."""
    folder = tmp_path / "in"
    folder.mkdir()
    img = Image.fromarray((mnist_digits[0][3, 0].numpy() * 255).round().astype(np.uint8))
    img.resize((56, 42)).save(folder / "wide.png")
    argv = ["attribute", "--model", "fvis:mnist", "--images", str(folder), "-q"]
    assert cli([*argv, "--method", "saliency", "-o", str(tmp_path / "o")]) == 0
    assert Image.open(tmp_path / "o" / "wide_saliency.png").size == (56, 42)
    assert np.load(tmp_path / "o" / "attributions.npz")["saliency"].shape == (1, 28, 28)
