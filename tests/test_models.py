"""Model loading (``fvis.models``), the bundled MNIST classifiers and their data."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

from fvis.data import mnist
from fvis.models import (
    BUNDLED,
    MNIST_INFO,
    WEIGHTS_DIR,
    ModelInfo,
    info,
    load_model,
    save,
)
from fvis.models.metadata import IMAGENET_MEAN, IMAGENET_STD

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def heldout():
    return mnist("test")


def _probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(info(model).normalize(images)).softmax(1)


# --- the bundled classifiers ---------------------------------------------------------


@pytest.mark.parametrize(("spec", "minimum"), [("fvis:mnist", 0.97), ("fvis:mnist-mlp", 0.95)])
def test_bundled_heldout_accuracy(spec, minimum, heldout):
    images, labels = heldout
    model = load_model(spec)
    accuracy = (_probabilities(model, images).argmax(1) == labels).float().mean().item()
    assert accuracy >= minimum, f"{spec}: {accuracy:.4f} on the held-out digits"
    # The accuracy the training script recorded is the one measured here (up to two
    # borderline digits, in case another CPU rounds a near-tie the other way).
    _, fname, _ = BUNDLED[spec.removeprefix("fvis:")]
    meta = torch.load(WEIGHTS_DIR / fname, weights_only=True)["meta"]
    assert meta["test_accuracy"] == pytest.approx(accuracy, abs=0.0025)
    assert meta["script"] == "scripts/train_mnist.py"
    assert (WEIGHTS_DIR / fname).stat().st_size < 2.5e6


def test_mlp_is_confident_on_real_digits(heldout):
    # The MLP judges synthesized digits by p > 0.9, so it must give real ones such odds.
    images, labels = heldout
    p = _probabilities(load_model("fvis:mnist-mlp"), images)
    p_true = p.gather(1, labels[:, None]).squeeze(1)
    assert p_true.median().item() > 0.99
    assert (p_true > 0.9).float().mean().item() > 0.9


@pytest.mark.parametrize("spec", ["fvis:mnist", "fvis:mnist-mlp"])
def test_bundled_model_state(spec):
    model = load_model(spec)
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    meta = model.fvis_info
    assert isinstance(meta, ModelInfo)
    assert meta.name == spec
    assert meta.input_size == (1, 28, 28)
    assert (meta.mean, meta.std) == (MNIST_INFO.mean, MNIST_INFO.std) == ((0.1307,), (0.3081,))
    assert meta.labels == tuple("0123456789")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_bundled_layer_names_are_kept():
    names = [n for n, _ in load_model("fvis:mnist").named_children()]
    assert names[:3] == ["conv1", "relu1", "conv2"]
    assert {"conv3", "pool2", "fc1", "logits"} <= set(names)
    assert [n for n, _ in load_model("fvis:mnist-mlp").named_children()] == [
        "flatten", "fc1", "relu1", "fc2", "relu2", "logits",
    ]  # fmt: skip


def test_bundled_weights_none_and_path(tmp_path):
    trained = load_model("fvis:mnist")
    torch.manual_seed(0)
    random = load_model("fvis:mnist", weights=None)
    assert not torch.equal(random.conv1.weight, trained.conv1.weight)
    assert not random.training and not random.conv1.weight.requires_grad
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    again = load_model("fvis:mnist", weights=path)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), trained.parameters()))
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model("fvis:mnist", weights=tmp_path / "nothing.pt")


def test_unknown_bundled_name():
    with pytest.raises(ValueError, match="fvis:mnist-mlp"):
        load_model("fvis:cifar")


def test_unreadable_spec():
    with pytest.raises(ValueError, match="torchvision:resnet18"):
        load_model("resnet18")


# --- torchvision ---------------------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """TORCH_HOME and the hub directory point to an empty folder (restored afterwards)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so monkeypatch restores it
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_torchvision_random_init():
    model = load_model("torchvision:resnet18", weights=None)
    assert isinstance(model, torchvision.models.ResNet)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    meta = model.fvis_info
    assert meta.input_size == (3, 224, 224)
    assert (meta.mean, meta.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_torchvision_missing_weights_names_the_path(empty_hub):
    expected = empty_hub / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as err:
        load_model("torchvision:resnet18")  # weights="DEFAULT"
    assert str(expected) in str(err.value)
    assert "weights=None" in str(err.value)
    assert not expected.exists()  # nothing was downloaded


def test_torchvision_default_weights_from_local_cache(empty_hub):
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    (empty_hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), empty_hub / "checkpoints" / os.path.basename(weights.url))
    model = load_model("torchvision:resnet18", weights="DEFAULT")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.fvis_info.labels == tuple(weights.meta["categories"])
    assert model.fvis_info.labels[0] == "tench"


def test_torchvision_weights_from_path(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    for weights in (path, str(path)):
        model = load_model("torchvision:resnet18", weights=weights)
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), reference.state_dict().values())
        )
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_model("torchvision:resnet18", weights=str(tmp_path / "missing.pth"))


def test_torchvision_unknown_weights_name_lists_choices():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        load_model("torchvision:resnet18", weights="IMAGENET_V9")


def test_unknown_torchvision_model_lists_nearest_names():
    with pytest.raises(ValueError) as err:
        load_model("torchvision:resnet19")
    assert "resnet18" in str(err.value) and "resnet19" in str(err.value)


# --- checkpoints written by fvis.models.save -------------------------------------------


@pytest.mark.parametrize("spec", ["fvis:mnist-mlp", "torchvision:squeezenet1_1"])
def test_save_load_roundtrip(spec, tmp_path):
    torch.manual_seed(0)
    model = load_model(spec, weights=None if spec.startswith("torchvision") else "DEFAULT")
    if spec.startswith("torchvision"):  # give it labels, to check they survive
        model.fvis_info = model.fvis_info.with_(labels=tuple(f"c{i}" for i in range(1000)))
    path = tmp_path / "model.pt"
    save(model, path, spec)
    loaded = load_model(str(path))
    assert type(loaded) is type(model)
    assert loaded.fvis_info == model.fvis_info
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand((2, *model.fvis_info.input_size))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_checkpoint_with_pickled_module_is_refused(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(load_model("fvis:mnist-mlp"), path)  # pickles the nn.Module itself
    with pytest.raises(ValueError, match="weights_only") as err:
        load_model(str(path))
    assert "fvis.models.save" in str(err.value)


def test_bare_state_dict_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(load_model("fvis:mnist-mlp").state_dict(), path)
    with pytest.raises(ValueError, match="bare state dict") as err:
        load_model(str(path))
    assert "fvis.models.save" in str(err.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(str(tmp_path / "nope.pt"))


# --- fvis.data.mnist -----------------------------------------------------------------


@pytest.mark.parametrize(("split", "size"), [("train", 4000), ("test", 1000), ("all", 5000)])
def test_mnist_splits(split, size):
    images, labels = mnist(split)
    assert images.shape == (size, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (size,) and labels.dtype == torch.int64
    assert images.min().item() == 0.0 and images.max().item() == 1.0
    # Every class, equally often, in every split and in any prefix of ten.
    assert torch.bincount(labels, minlength=10).tolist() == [size // 10] * 10
    assert labels[:10].tolist() == list(range(10))


def test_mnist_train_and_test_are_disjoint():
    train, test = mnist("train")[0], mnist("test")[0]
    seen = {x.numpy().tobytes() for x in train}
    assert not any(x.numpy().tobytes() in seen for x in test)
    everything = mnist("all")
    assert torch.equal(everything[0], torch.cat([train, test]))


def test_mnist_returns_copies():
    images, labels = mnist("test")
    images.zero_()
    labels.fill_(3)
    again = mnist("test")
    assert again[0].max().item() == 1.0 and again[1][:10].tolist() == list(range(10))


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="'train', 'test' or 'all'"):
        mnist("validation")
