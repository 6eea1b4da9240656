"""One model shared: threads, training mode, TorchScript submodules and models that raise.

Calls on one model run one at a time and in eval mode (:func:`fvis.hooks.guard`); hooks
act only in the thread that registered them; parameters' ``requires_grad`` flags are
never changed. These tests check the consequences: concurrent calls equal sequential
ones bit for bit, a training-mode model gives its eval-mode results with BatchNorm
statistics untouched, and no hook survives any public entry point.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torchvision
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis import attribution as A
from fvis import hooks, quality
from fvis import objectives as O
from fvis.models import ModelInfo, attach

torch.set_num_threads(1)


def _state(model: nn.Module):
    return [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
            for m in model.modules()]  # fmt: skip


def _mnist_tasks(model, x):
    return {
        "render": lambda: (
            fvis.render(
                model, O.channel("conv3", 5), steps=3, redirected_relu_steps=2, progress=False
            ).images
        ),
        "ig": lambda: A.IntegratedGradients(model).attribute(x, steps=4),
        "lrp": lambda: A.LRP(model).attribute(x),
        "guided": lambda: A.GuidedBackprop(model).attribute(x, 1),
        "gradcam": lambda: A.GradCAM(model).attribute(x),
        "capture": lambda: fvis.capture(model, x, ["relu2"])["relu2"],
        "own forward": lambda: model(x),  # the user's own forward pass, not through fvis
    }


def _resnet_tasks(model, x):
    return {
        "render": lambda: (
            fvis.render(
                model,
                O.channel("layer1.0.relu:1", 3),
                fvis.param.image(16, batch=1),
                steps=2,
                redirected_relu_steps=1,
                progress=False,
                transforms=None,
            ).images
        ),  # fmt: skip
        "gradient": lambda: A.Gradient(model).attribute(x, 3),
        "lrp": lambda: A.LRP(model).attribute(x, 3),  # folds BatchNorm into the convolutions
        "deeplift": lambda: A.DeepLift(model).attribute(x, 3),
    }


def _resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    attach(model, ModelInfo(input_size=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3))
    model.train()  # a training-mode model shared by threads: each call runs it in eval mode
    model.fc.weight.requires_grad_(False)  # flags as the user left them
    return model


@pytest.mark.parametrize("name", ["fvis:mnist", "resnet18"])
def test_threads_sharing_a_model_equal_a_sequential_run(name, mnist_model):
    if name == "fvis:mnist":
        model, x = mnist_model, torch.rand(2, 1, 28, 28)
        tasks = _mnist_tasks(model, x)
    else:
        model, x = _resnet18(), torch.rand(2, 3, 16, 16)
        tasks = _resnet_tasks(model, x)
    before, state = snapshot(model), _state(model)
    sequential = {k: f().detach() for k, f in tasks.items()}
    trace = hooks.trace(model, x)
    names = list(tasks)
    barrier = threading.Barrier(4)

    def run(key):
        barrier.wait()  # start together
        return key, tasks[key]().detach()

    with ThreadPoolExecutor(4) as pool:
        for repeat in range(20):
            keys = [names[(repeat + i) % len(names)] for i in range(4)]
            for key, out in pool.map(run, keys):
                assert torch.equal(out, sequential[key]), f"{key} differs in repeat {repeat}"
    assert_clean(model, before)  # no hooks; weights and BatchNorm statistics unchanged
    assert _state(model) == state  # modes and requires_grad flags as before
    assert hooks.trace(model, x) is trace  # the cached trace is the one computed alone


class _Net(nn.Module):
    """conv-BN-ReLU-Dropout-conv-BN-ReLU, global average pool, linear: every kind of
    mode-dependent module, small enough for every method."""

    def __init__(self, raise_on_batch: int | None = None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu1, self.drop = nn.ReLU(), nn.Dropout(0.5)
        self.conv2, self.bn2, self.relu2 = (
            nn.Conv2d(4, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
        )
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)
        self.raise_on_batch = raise_on_batch
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        attach(self, ModelInfo(input_size=(1, 8, 8), mean=(0.5,), std=(0.5,)))

    def forward(self, x):
        x = self.drop(self.relu1(self.bn1(self.conv1(x))))
        if x.shape[0] == self.raise_on_batch:
            raise RuntimeError("a model that raises mid-forward")
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


_OPTIONS = {k: {"generator": 0} for k in ("smoothgrad", "smoothgrad_squared", "vargrad")}


def _entry_points(model, x):
    """Every public entry point, each a thunk returning tensors."""
    calls = {
        name: lambda make=make, name=name: make(model).attribute(x, 1, **_OPTIONS.get(name, {}))
        for name, make in A.METHODS.items()
    }
    calls.update({
        "layer_gradient_x_activation": lambda: A.LayerGradientXActivation(model).attribute(x, 1),
        "layer_integrated_gradients": lambda: A.LayerIntegratedGradients(model).attribute(
            x, 1, steps=4, layer="relu1"
        ),
        "top_channels": lambda: A.top_channels(model, x, 1, "relu2", k=2).indices,
        "render": lambda: fvis.render(
            model, O.channel("relu2", 1), steps=3, redirected_relu_steps=2, progress=False
        ).images,
        "layers": lambda: torch.tensor([li.shape for li in fvis.layers(model)][-1]),
        "capture": lambda: fvis.capture(model, x, ["relu1", "output"])["output"],
        "continuity": lambda: quality.continuity(A.Gradient(model), x, 1, max_shift=1),
        "pixel_flipping": lambda: quality.pixel_flipping(model, x, x, 1, patch=4, steps=2).scores,
        "model_randomization": lambda: quality.model_randomization(
            model, A.Gradient, x, 1
        ).correlation,
    })  # fmt: skip
    return calls


def test_training_mode_model_gives_eval_results_and_keeps_its_statistics():
    torch.manual_seed(0)
    model, x = _Net(), torch.rand(2, 1, 8, 8)
    calls = _entry_points(model.eval(), x)
    expected = {k: f() for k, f in calls.items()}
    model.train()
    before, state = snapshot(model), _state(model)
    for name, f in calls.items():
        assert torch.equal(f(), expected[name]), f"{name} differs in training mode"
        assert_clean(model, before)  # BatchNorm running statistics bit-identical
        assert _state(model) == state, f"{name} changed the modes or flags"


def _scripted():
    torch.manual_seed(0)
    model = _Net()
    with warnings.catch_warnings():  # torch.jit.script is deprecated, still in use
        warnings.simplefilter("ignore", FutureWarning)
        model.conv2 = torch.jit.script(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1)))
    return model


@pytest.mark.parametrize("make", [_scripted, lambda: _Net(raise_on_batch=2)],
                         ids=["torchscript_submodule", "raises_mid_forward"])  # fmt: skip
def test_no_hook_survives_any_entry_point(make):
    model, x = make(), torch.rand(2, 1, 8, 8)
    before = snapshot(model)
    outcomes = {}
    for name, f in _entry_points(model, x).items():
        try:
            f()
            outcomes[name] = "ran"
        except Exception as e:  # refusals and the model's own error are fine; hooks are not
            outcomes[name] = type(e).__name__
        assert hooks.check_no_hooks(model) == [], f"{name} left hooks"
        assert_clean(model, before)
    with torch.no_grad():  # and the model still works as before
        assert model(x[:1]).shape == (1, 3)
    if make is _scripted:  # the interceptor's methods refuse; the others run
        assert outcomes["lrp"] == outcomes["guided_backprop"] == "UnsupportedOperation"
        assert outcomes["gradient"] == outcomes["render"] == "ran"
    else:
        assert set(outcomes.values()) - {"ran"} == {"RuntimeError"}


def test_a_long_render_lets_other_calls_on_its_model_through_between_steps():
    """The guard is held per step: a short render started while a long one runs on the
    same model finishes first, and equals the same render run alone."""
    model = fvis.load_model("fvis:mnist")
    alone = fvis.render(model, O.channel("conv2", 1), steps=4, progress=False).images
    started, stop = threading.Event(), threading.Event()
    steps_seen = []

    def callback(step, images, values):
        steps_seen.append(step)
        started.set()
        if stop.is_set():
            raise KeyboardInterrupt

    def long():
        with contextlib.suppress(KeyboardInterrupt):
            fvis.render(model, O.channel("conv3", 5), steps=100_000, callback=callback,
                        progress=False)  # fmt: skip

    thread = threading.Thread(target=long)
    thread.start()
    assert started.wait(60)
    short = fvis.render(model, O.channel("conv2", 1), steps=4, progress=False).images
    stop.set()
    thread.join(60)
    assert not thread.is_alive() and steps_seen[-1] < 100_000
    assert torch.equal(short, alone)
    assert hooks.check_no_hooks(model) == []
