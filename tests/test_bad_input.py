"""Bad input, as a careless or hostile user gives it, through the Python API.

Each case is refused before any work with one of fvis's documented user-error types
(:func:`fvis.errors.user_errors`) and a one-line message that names what was wrong, or
(batching, 400 units, file formats) is handled right. The command line is tested in
``test_bad_input_cli.py``, the studio in ``test_bad_input_studio.py``, fuzzing in
``test_fuzz.py``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch
from PIL import Image
from torch import nn

import fvis
from fvis import objectives as O
from fvis.attribution import (
    CAM,
    METHODS,
    Deconvnet,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    LayerIntegratedGradients,
    SmoothGrad,
    get,
    top_channels,
)
from fvis.errors import NonFiniteError, one_line, user_errors
from fvis.explain import BuildingBlocks
from fvis.hooks import LayerError, UnsupportedOperation, check_no_hooks
from fvis.io import check_output, inside, save_image
from fvis.models import ModelInfo, attach, check_device, load_model, save

NAN, INF = float("nan"), float("inf")


def refused(call, error, *words):
    """``call()`` raises ``error`` (a documented user-error type) with a one-line message
    containing every word."""
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, user_errors())
    message = one_line(info.value)
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def digits(mnist_model, mnist_digits):
    return mnist_model.fvis_info.normalize(mnist_digits[0][:3])


def _render(model, objective, param=None, **kw):
    kw = {"steps": 2, "progress": False, "transforms": None, **kw}
    return fvis.render(model, objective, param, **kw)


# ---------------------------------------------------------------- non-finite settings
SETTINGS = {
    "lr nan": (lambda m: _render(m, O.class_logit(1), lr=NAN), NonFiniteError, "lr", "nan"),
    "lr inf": (lambda m: _render(m, O.class_logit(1), lr=INF), NonFiniteError, "lr", "inf"),
    "lr negative": (lambda m: _render(m, O.class_logit(1), lr=-0.1), ValueError, "lr", "> 0"),
    "penalty weight nan": (
        lambda m: O.class_logit(1) - NAN * O.total_variation(),
        NonFiniteError,
        "tv(image)",
    ),
    "constant inf": (lambda m: O.class_logit(1) + INF, NonFiniteError, "class(1)", "inf"),
    "divide by 0": (lambda m: O.class_logit(1) / 0, ValueError, "divided by 0"),
    "decay_power nan": (
        lambda m: fvis.param.image(28, channels=1, decay_power=NAN),
        NonFiniteError,
        "decay_power",
    ),
    "std 0": (lambda m: ModelInfo((1, 8, 8), mean=(0.5,), std=(0.0,)), ValueError, "std", "> 0"),
    "mean nan": (lambda m: ModelInfo((1, 8, 8), mean=(NAN,), std=(1.0,)), NonFiniteError, "mean"),
    "std per channel": (
        lambda m: ModelInfo((3, 8, 8), mean=(0.5, 0.5), std=(1.0,)),
        ValueError,
        "3 input channels",
    ),
    "IG baseline nan": (
        lambda m: IntegratedGradients(m).attribute(torch.zeros(1, 1, 28, 28), 1, baselines=NAN),
        NonFiniteError,
        "baselines",
    ),
    "SmoothGrad noise nan": (
        lambda m: SmoothGrad(m).attribute(torch.zeros(1, 1, 28, 28), 1, noise=NAN),
        NonFiniteError,
        "noise",
    ),
    "DeepLIFT reference inf": (
        lambda m: get("deeplift")(m).attribute(
            torch.zeros(1, 1, 28, 28), 1, reference=torch.full((1, 28, 28), INF)
        ),
        NonFiniteError,
        "baselines",
    ),
    "init image nan": (
        lambda m: fvis.param.image(8, channels=1, init=torch.full((1, 8, 8), NAN)),
        NonFiniteError,
        "init",
    ),
}


@pytest.mark.parametrize("case", SETTINGS, ids=list(SETTINGS))
def test_non_finite_or_invalid_setting_is_refused(case, mnist_model):
    call, error, *words = SETTINGS[case]
    refused(lambda: call(mnist_model), error, *words)


def test_nan_during_optimization_stops_naming_step_and_objective(mnist_model):
    calls = []

    def fn(acts):
        calls.append(1)
        value = acts["image"].flatten(1).mean(1)
        return value * NAN if len(calls) >= 11 else value

    objective = O.Objective(fn, ["image"], "brightness")
    refused(lambda: _render(mnist_model, objective, steps=200), NonFiniteError,
            "step 11", "brightness", "lr=")  # fmt: skip
    assert len(calls) <= 16  # stopped within one check interval, not after 200 steps
    assert check_no_hooks(mnist_model) == []


# ---------------------------------------------------------------- non-finite inputs
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_refuses_nan_inputs(name, mnist_model):
    x = torch.zeros(2, 1, 28, 28)
    x[1, 0, 3, 4] = NAN
    refused(lambda: get(name)(mnist_model).attribute(x, 1), NonFiniteError, "NaN", "[1]")


def test_infinite_input_is_refused(mnist_model):
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 0, 0] = -INF
    refused(lambda: IntegratedGradients(mnist_model).attribute(x, 1), NonFiniteError, "infinite")


# ---------------------------------------------------------------- guided methods without ReLU
def _tanh_net():  # GELU and SiLU are rectifiers (fvis.attribution.guided); tanh is not
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))  # fmt: skip
    return attach(net.eval(), ModelInfo((1, 8, 8)))


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvnet, GuidedGradCAM])
def test_guided_methods_refuse_a_network_without_relu(method):
    net = _tanh_net()
    call = lambda: method(net).attribute(torch.rand(2, 1, 8, 8), 1)  # noqa: E731
    refused(call, UnsupportedOperation, "no ReLU", "torch.tanh", "Gradient")
    assert check_no_hooks(net) == []


def test_guided_backprop_still_runs_where_a_relu_is(mnist_model, digits):
    g = GuidedBackprop(mnist_model).attribute(digits, 1)
    assert g.shape == digits.shape and (g != 0).any()


# ---------------------------------------------------------------- batching = per-item calls
@pytest.fixture(scope="module")
def tiny():
    """A small ReLU CNN ending in global average pooling → linear (so CAM applies)."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 4, 3), relu1=nn.ReLU(), conv2=nn.Conv2d(4, 6, 3), relu2=nn.ReLU(),
        gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(6, 5)))  # fmt: skip
    return attach(net.eval().requires_grad_(False), ModelInfo((1, 8, 8), fixed_size=True))


# Options that keep each method cheap; random methods draw from a seeded generator.
OPTIONS = {
    "integrated_gradients": {"steps": 6},
    **{name: {"n": 3, "generator": 0} for name in ("smoothgrad", "smoothgrad_squared", "vargrad")},
}
RANDOM = {"smoothgrad", "smoothgrad_squared", "vargrad"}  # noise differs per call
CHUNKED = {
    "gradient", "saliency", "sensitivity", "gradient_x_input", "integrated_gradients",
    "smoothgrad", "smoothgrad_squared", "vargrad", "gradcam", "gradcam_plus_plus",
}  # fmt: skip
ITEM_UNITS = [O.class_logit(3), O.channel("relu2", 5), O.class_logit(1)]


@pytest.mark.parametrize("name", list(METHODS))
def test_batching_equals_per_item_calls(name, tiny):
    """A batch with per-item targets (classes, or an objective per item) gives each item
    what a call on that item alone gives, for every chunk size (IG's rows: 6 steps × 3
    items, so 1, 2, 4 and 5 do not divide the batch)."""
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # valid range
    method, opts = get(name)(tiny), OPTIONS.get(name, {})
    if name == "attention_rollout":  # a CNN has no attention (batching: test_rollout.py)
        refused(lambda: method.attribute(x, 1), UnsupportedOperation, "attention", "Sequential")
        return
    targets = [(torch.tensor([3, 0, 1]), [3, 0, 1])]
    if name != "cam":  # CAM explains class logits only
        targets.append((O.one_per_item(ITEM_UNITS), ITEM_UNITS))
    sizes = (None, 1, 2, 4, 5) if name in CHUNKED else (None,)
    for batch_target, item_targets in targets:
        runs = [
            method.attribute(x, batch_target, **opts, **({"internal_batch_size": s} if s else {}))
            for s in sizes
        ]
        for s, r in zip(sizes, runs):
            assert torch.allclose(r, runs[0], rtol=1e-4, atol=1e-6), (name, s)
        if name in RANDOM:
            continue
        alone = [method.attribute(x[i : i + 1], t, **opts) for i, t in enumerate(item_targets)]
        assert torch.allclose(runs[0], torch.cat(alone), rtol=1e-4, atol=1e-6), name
    assert check_no_hooks(tiny) == []


def test_layer_ig_chunks_with_per_item_objectives(tiny):
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    lig = LayerIntegratedGradients(tiny)
    target = O.one_per_item(ITEM_UNITS)
    whole = lig.attribute(x, target, layer="conv2", steps=4)
    for size in (1, 5):
        part = lig.attribute(x, target, layer="conv2", steps=4, internal_batch_size=size)
        assert torch.allclose(part, whole, rtol=1e-4, atol=1e-6)
    alone = lig.attribute(x[1:2], ITEM_UNITS[1], layer="conv2", steps=4)
    assert torch.allclose(whole[1:2], alone, rtol=1e-4, atol=1e-6)


def test_reveal_cancel_does_not_depend_on_what_else_the_objective_reads(tiny):
    """Capturing a pre-activation (conv2) clones it; RevealCancel must still see the
    linear operation behind the ReLU (failed before the rules rework on main)."""
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    method = get("deeplift_reveal_cancel")(tiny)
    alone = method.attribute(x, O.class_logit(3))
    also = method.attribute(x, O.class_logit(3) + 0 * O.channel("conv2", 1))
    assert torch.allclose(alone, also, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- absurd sizes
def test_100000_units_refused_up_front_400_fine(mnist_model):
    channels = [O.channel("conv1", k) for k in range(16)]
    units = [channels[k % 16] for k in range(100_000)]
    objective = O.one_per_item(units)  # linear: no RecursionError, no quadratic build
    refused(lambda: _render(mnist_model, objective, batch=100_000), ValueError, "1..4096")
    refused(lambda: fvis.param.for_input((1, 28, 28), 100_000), ValueError, "1..4096")
    units = units[:400]
    r = _render(mnist_model, O.one_per_item(units), batch=400, steps=1)
    assert r.images.shape == (400, 1, 28, 28) and torch.isfinite(r.history).all()
    # item i's value is channel i % 16 of item i's own activation
    acts = fvis.capture(mnist_model, mnist_model.fvis_info.normalize(r.images), ["conv1"])
    want = acts["conv1"][torch.arange(400), torch.arange(400) % 16].flatten(1).mean(1)
    assert torch.allclose(O.one_per_item(units)(acts), want)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda m: fvis.param.image(10_000, channels=1), ("width", "1..4096")),
        (lambda m: _render(m, O.class_logit(1), fvis.param.image(512, channels=1)), ("112×112",)),
        (lambda m: fvis.param.image(28, channels=0), ("channels", "1..64")),
    ],
    ids=["10000 px", "512 px for a 28 px model", "0 channels"],
)
def test_absurd_image_size_refused(call, words, mnist_model):
    refused(lambda: call(mnist_model), ValueError, *words)


# ---------------------------------------------------------------- output files
@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"),
                                         (".tiff", "TIFF"), (".webp", "WEBP")])  # fmt: skip
def test_image_format_follows_the_extension(suffix, fmt, tmp_path):
    path = tmp_path / f"out{suffix.upper()}"
    save_image(Image.new("RGBA", (4, 3), (255, 0, 0, 128)), path)
    with Image.open(path) as img:
        assert img.format == fmt and img.size == (4, 3)


def _unwritable(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a file system allows
        return "/sys"
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    return folder


OUTPUTS = {
    "unknown suffix": (lambda t: t / "out.xyz", ValueError, "'.xyz'", ".png"),
    "no suffix": (lambda t: t / "out", ValueError, "no suffix"),
    "a folder": (lambda t: t, IsADirectoryError, "folder"),
    "parent is a file": (
        lambda t: (t / "f.png").write_bytes(b"") or t / "f.png" / "o.png",
        NotADirectoryError,
        "is a file",
    ),  # fmt: skip
    "unwritable": (lambda t: f"{_unwritable(t)}/out.png", PermissionError, "not writable"),
}


@pytest.mark.parametrize("case", OUTPUTS, ids=list(OUTPUTS))
def test_bad_output_path_refused_before_writing(case, tmp_path):
    make, error, *words = OUTPUTS[case]
    path = make(tmp_path)
    refused(lambda: check_output(path), error, *words)
    refused(lambda: save_image(Image.new("L", (2, 2)), path), error)


def test_no_name_leaves_its_output_folder(tmp_path):
    want = tmp_path.resolve() / "units" / "conv3" / "0001.png"
    assert inside(tmp_path, "units", "conv3", "0001.png").resolve() == want
    for name in ("../escape.png", "/etc/passwd", "a/../../b.png"):
        refused(lambda name=name: inside(tmp_path, name), ValueError, "outside")


def test_html_report_escapes_names(tmp_path):
    evil = "<script>alert(1)</script>"
    report = BuildingBlocks(
        image=torch.rand(1, 4, 4), target=0, label=evil, probability=0.5, method=evil,
        attribution=torch.rand(4, 4), layer=f"conv<{evil}", channels=[1],
        channel_scores=torch.tensor([0.5]), channel_maps=torch.rand(1, 4, 4),
        visualizations=torch.rand(1, 1, 4, 4),
    )  # fmt: skip
    page = report.save(tmp_path / "r.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ---------------------------------------------------------------- negative indices
NEGATIVE = {
    "channel": (lambda: O.channel("conv3", -3), IndexError, "-3", "negative"),
    "neuron x": (lambda: O.neuron("conv3", 1, x=-1), IndexError, "negative"),
    "class": (lambda: O.class_logit(-1), IndexError, "negative"),
    "batch item": (lambda: O.channel("conv3", 1).on(-2), IndexError, "negative"),
    "float channel": (lambda: O.channel("conv3", 2.0), TypeError, "integer"),
}


@pytest.mark.parametrize("case", NEGATIVE, ids=list(NEGATIVE))
def test_negative_or_non_integer_unit_index_refused(case):
    call, error, *words = NEGATIVE[case]
    refused(call, error, *words)


def test_negative_target_class_refused(mnist_model, digits):
    refused(lambda: get("gradient")(mnist_model).attribute(digits, -1), IndexError, "negative")


# ---------------------------------------------------------------- clear messages
def _ig(m, x, target=1, steps=4, **kw):
    return lambda: IntegratedGradients(m).attribute(x, target, steps=steps, **kw)


CLEAR = {
    "uint8 input": (lambda m, x: _ig(m, (x * 255).to(torch.uint8)), TypeError, "uint8", "/ 255"),
    "list input": (lambda m, x: _ig(m, x.tolist()), TypeError, "list"),
    "float64 input": (lambda m, x: _ig(m, x.double()), TypeError, "float64", "float32"),
    "input on another device": (lambda m, x: _ig(m, x.to("meta")), ValueError, "meta", "cpu"),
    "3 channels for a 1-channel model": (
        lambda m, x: _ig(m, x.expand(-1, 3, -1, -1)),
        ValueError,
        "3 channels",
        "takes 1",
    ),
    "32 px for a 28 px model": (
        lambda m, x: _ig(m, torch.zeros(1, 1, 32, 32)),
        ValueError,
        "32×32",
        "28×28",
    ),
    "batch 0": (lambda m, x: _ig(m, x[:0]), ValueError, "no items"),
    "IG steps 0": (lambda m, x: _ig(m, x, steps=0), ValueError, "steps"),
    "IG steps 2.5": (lambda m, x: _ig(m, x, steps=2.5), TypeError, "steps", "2.5"),
    "internal_batch_size 0": (
        lambda m, x: _ig(m, x, internal_batch_size=0),
        ValueError,
        "internal_batch_size",
    ),
    "target out of range": (lambda m, x: _ig(m, x, 10), IndexError, "10", "0..9"),
    "non-integer class": (lambda m, x: _ig(m, x, 2.5), TypeError, "float"),
    "unknown class label": (lambda m, x: _ig(m, x, "seven"), ValueError, "'seven'", "0..9"),
    "top 0 channels": (lambda m, x: lambda: top_channels(m, x, 1, "conv3", 0), ValueError, "k"),
    "CAM on fc1": (
        lambda m, x: lambda: CAM(m).attribute(x, 1, layer="fc1"),
        ValueError,
        "fc1",
        "spatial",
    ),
    "layer IG on input": (
        lambda m, x: lambda: LayerIntegratedGradients(m).attribute(x, 1, layer="input"),
        LayerError,
        "IntegratedGradients",
    ),
    "unknown layer": (
        lambda m, x: lambda: top_channels(m, x, 1, "conv33"),
        LayerError,
        "'conv33'",
        "conv3",
    ),
    "render steps 0": (
        lambda m, x: lambda: _render(m, O.class_logit(1), steps=0),
        ValueError,
        "steps",
        "≥ 1",
    ),  # fmt: skip
    "render steps 2.5": (
        lambda m, x: lambda: _render(m, O.class_logit(1), steps=2.5),
        TypeError,
        "steps",
    ),  # fmt: skip
    "render batch 0": (
        lambda m, x: lambda: _render(m, O.class_logit(1), batch=0),
        ValueError,
        "batch",
    ),  # fmt: skip
    "render thresholds past the end": (
        lambda m, x: lambda: _render(m, O.class_logit(1), thresholds=(5,)),
        ValueError,
        "1..2",
    ),
    "no units": (lambda m, x: lambda: O.one_per_item([]), ValueError, "at least one"),
    "units for another batch": (
        lambda m, x: lambda: _render(m, O.one_per_item(ITEM_UNITS), batch=2),
        ValueError,
        "3 objectives",
        "batch of 2",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", CLEAR, ids=list(CLEAR))
def test_clear_message(case, mnist_model, digits):
    make, error, *words = CLEAR[case]
    refused(make(mnist_model, digits), error, *words)
    assert check_no_hooks(mnist_model) == []


DEVICES = {
    "unknown device string": ("gpu", "unknown device 'gpu'", "cpu"),
    "missing CUDA device": ("cuda:99", "not available", "cpu"),
    "missing MPS": ("mps", "not available", "cpu"),
}


@pytest.mark.parametrize("case", DEVICES, ids=list(DEVICES))
def test_device_not_available(case, mnist_model):
    device, *words = DEVICES[case]
    refused(lambda: check_device(device), ValueError, *words)
    refused(lambda: _render(mnist_model, O.class_logit(1), device=device), ValueError, *words)
    refused(lambda: load_model("fvis:mnist", device=device), ValueError, *words)


def test_cuda_without_cuda_says_so():
    if torch.cuda.is_available():
        assert check_device("cuda").type == "cuda"
    else:
        refused(lambda: check_device("cuda"), ValueError, "CUDA requested", "available: cpu")


# ---------------------------------------------------------------- checkpoints and files
def test_truncated_checkpoint(tmp_path, mnist_model):
    path = tmp_path / "m.pt"
    save(mnist_model, path, "fvis:mnist")
    path.write_bytes(path.read_bytes()[:1000])
    refused(lambda: load_model(str(path)), ValueError, "m.pt", "truncated")
    refused(lambda: load_model("fvis:mnist", weights=str(path)), ValueError, "truncated")


def test_checkpoint_of_another_architecture_lists_keys(tmp_path):
    mlp = load_model("fvis:mnist-mlp")
    path = tmp_path / "mlp.pt"
    save(mlp, path, "fvis:mnist")  # the wrong spec for these weights
    msg = refused(lambda: load_model(str(path)), ValueError, "missing keys", "unexpected keys")
    assert "conv1.weight" in msg  # one of the CNN's keys the file lacks
    torch.save(mlp.state_dict(), tmp_path / "w.pt")
    refused(lambda: load_model("fvis:mnist", weights=str(tmp_path / "w.pt")), ValueError,
            "missing keys")  # fmt: skip


def test_checkpoint_naming_itself(tmp_path, mnist_model):
    path = tmp_path / "loop.pt"
    torch.save({"fvis_format": 1, "spec": str(path), "state_dict": {}}, path)
    refused(lambda: load_model(str(path)), ValueError, "not a checkpoint file")


def test_unreadable_and_bomb_images(tmp_path, monkeypatch):
    from fvis.image import load_image

    (tmp_path / "a.png").write_text("not an image")
    refused(lambda: load_image(tmp_path / "a.png"), ValueError, "a.png", "not an image")
    Image.new("L", (40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px > 2 × limit: a "bomb"
    refused(lambda: load_image(tmp_path / "big.png"), ValueError, "big.png", "decompression")
