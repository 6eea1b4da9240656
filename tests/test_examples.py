"""Dataset examples (fvis.examples): exact rankings on a hand-set network, every kind of
dataset, and the unit's own attribution map on each example."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import fvis
from fvis import objectives as O
from fvis.attribution import GradientXInput
from fvis.examples import dataset_examples


@pytest.fixture()
def identity_net():
    """conv = identity on one channel, so channel 0's activation map is the image."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    return fvis.models.attach(net, fvis.models.ModelInfo((1, 4, 4)))


def _images():
    x = torch.zeros(4, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0  # one bright pixel: max 1, mean 1/16
    x[1] = 0.25  # uniform: max 0.25, mean 0.25
    x[2, 0, :2] = 0.5  # half at 0.5: max 0.5, mean 0.25 - (ties broken by index)
    x[3, 0, 0, :2] = 0.125  # max 0.125, mean 1/64
    return x


def test_max_and_mean_rank_differently(identity_net):
    x = _images()
    by_max, by_mean = (
        dataset_examples(identity_net, x, ["0[0]"], k=2, rank=r, method=None)[0]
        for r in ("max", "mean")
    )
    assert by_max.top_index.tolist() == [0, 2] and by_max.top_value.tolist() == [1.0, 0.5]
    assert by_max.bottom_index.tolist() == [3, 1] and by_max.bottom_value.tolist() == [0.125, 0.25]
    assert by_mean.top_value.tolist() == [0.25, 0.25] and set(by_mean.top_index.tolist()) == {1, 2}
    assert by_mean.bottom_index.tolist() == [3, 0]
    assert torch.equal(by_max.top_images, x[[0, 2]])
    neg = dataset_examples(identity_net, x, ["-0[0]"], k=1, method=None)[0]
    assert neg.top_index.tolist() == [3] and neg.top_value.tolist() == [-0.125]


def test_batching_and_dataset_kinds_agree(identity_net, tmp_path):
    x = _images()
    want = dataset_examples(identity_net, x, ["0[0]"], k=2, method=None)[0]
    small = dataset_examples(identity_net, x, ["0[0]"], k=2, batch_size=1, method=None)[0]
    pairs = torch.utils.data.TensorDataset(x, torch.arange(4))  # items are (image, label)
    ds = dataset_examples(identity_net, pairs, ["0[0]"], k=2, batch_size=3, method=None)[0]
    for got in (small, ds):
        assert torch.equal(got.top_index, want.top_index)
        assert torch.equal(got.bottom_value, want.bottom_value)
    for i, img in enumerate(x):  # an ImageFolder folder: 8-bit PNGs, two classes
        folder = tmp_path / ("a" if i < 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray((img[0] * 255).round().byte().numpy()).save(folder / f"{i}.png")
    from_folder = dataset_examples(identity_net, tmp_path, ["0[0]"], k=2, method=None)[0]
    assert torch.equal(from_folder.top_index, want.top_index)
    assert torch.allclose(from_folder.top_value, want.top_value, atol=1 / 255)
    flat = tmp_path / "flat"  # the same PNGs in one folder, no class subfolders
    flat.mkdir()
    for png in sorted(tmp_path.glob("[ab]/*.png")):
        (flat / png.name).write_bytes(png.read_bytes())
    from_flat = dataset_examples(identity_net, flat, ["0[0]"], k=2, method=None)[0]
    assert torch.equal(from_flat.top_index, want.top_index)
    assert torch.equal(from_flat.top_value, from_folder.top_value)


def test_maps_are_the_units_own_attribution(mnist_model, mnist_digits):
    images = mnist_digits[0][:64]
    ex = dataset_examples(mnist_model, images, ["conv3[5]", "class[3]"], k=3, batch_size=16)
    assert [e.unit for e in ex] == ["conv3[5]", "class[3]"]
    x = mnist_model.fvis_info.normalize(ex[0].top_images)
    hottest = O.Objective(lambda a: a["conv3"][:, 5].flatten(1).amax(1), ["conv3"], "max")
    want = GradientXInput(mnist_model).attribute(x, hottest).sum(1)
    assert torch.allclose(ex[0].top_maps, want, atol=1e-6) and ex[0].top_maps.abs().sum() > 0
    assert torch.allclose(ex[0].top_value, hottest(fvis.capture(mnist_model, x, ["conv3"])))
    logits = mnist_model(mnist_model.fvis_info.normalize(images))[:, 3]
    assert ex[1].top_index.tolist() == logits.topk(3).indices.tolist()
    assert torch.allclose(ex[1].top_value, logits.topk(3).values, atol=1e-5)


def test_bad_arguments_are_refused(identity_net):
    with pytest.raises(ValueError, match="rank must be 'max' or 'mean'"):
        dataset_examples(identity_net, _images(), ["0[0]"], rank="median")
    with pytest.raises(ValueError, match=r"held-out digits are 1×28×28"):
        dataset_examples(identity_net, None, ["0[0]"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_examples(identity_net, "/nonexistent/folder", ["0[0]"])
