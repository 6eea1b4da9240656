"""One model shared: threads, training mode, TorchScript submodules and models that raise.

Calls on one model run one at a time and in eval mode (:func:`fvis.hooks.guard`); hooks
act only in the thread that registered them; parameters' ``requires_grad`` flags are
never changed. These tests check the consequences: concurrent calls equal sequential
ones bit for bit, a training-mode model gives its eval-mode results with BatchNorm
statistics untouched, and no hook survives any public entry point.
"""

from __future__ import annotations

import contextlib
import inspect
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
from fvis.evaluate import evaluate
from fvis.examples import dataset_examples
from fvis.explain import building_blocks
from fvis.figures import compare
from fvis.groups import neuron_groups
from fvis.models import ModelInfo, attach

torch.set_num_threads(1)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN where the other is NaN (a measure's documented "undefined")."""
    nan = torch.isnan(a)
    return a.shape == b.shape and torch.equal(nan, torch.isnan(b)) and torch.equal(a[~nan], b[~nan])


def _state(model: nn.Module):
    return [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
            for m in model.modules()]  # fmt: skip


_CHEAP = {
    "integrated_gradients": {"steps": 4},
    **{k: {"n": 2, "generator": 0} for k in ("smoothgrad", "smoothgrad_squared", "vargrad")},
}


def _outcome(f):
    """``f()`` detached, or its refusal as ``"Type: message"`` (a refusal must repeat too)."""
    try:
        return f().detach()
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _tasks(model, x, unit: str, size: int):
    """Every method of the registry, a render of ``unit`` and a capture, on ``model``."""
    tasks = {
        name: lambda make=make, name=name: make(model).attribute(x, 3, **_CHEAP.get(name, {}))
        for name, make in A.METHODS.items()
    }
    layer = unit.partition("[")[0]
    tasks["render"] = lambda: fvis.render(
        model, O.channel(layer, 3), fvis.param.image(size, channels=x.shape[1], batch=1),
        steps=2, redirected_relu_steps=1, progress=False,
    ).images  # fmt: skip
    tasks["capture"] = lambda: fvis.capture(model, x, [layer])[layer]
    return tasks


def _resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    attach(model, ModelInfo(input_size=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3))
    model.train()  # a training-mode model shared by threads: each call runs it in eval mode
    model.fc.weight.requires_grad_(False)  # flags as the user left them
    return model


@pytest.mark.parametrize("name", ["fvis:mnist", "resnet18"])
def test_threads_sharing_a_model_equal_a_sequential_run(name, mnist_model):
    """Every method in METHODS, a render and a capture, four at a time from four threads,
    20 rounds: each result equals the one computed alone, bit for bit."""
    if name == "fvis:mnist":
        model, x = mnist_model, torch.rand(2, 1, 28, 28)
        tasks = _tasks(model, x, "conv3", 28)
        tasks["own forward"] = lambda: model(x)  # the user's own forward pass, not fvis's
    else:
        model, x = _resnet18(), torch.rand(2, 3, 16, 16)
        tasks = _tasks(model, x, "layer1.0.relu:1", 16)
    before, state = snapshot(model), _state(model)
    sequential = {k: _outcome(f) for k, f in tasks.items()}
    assert sum(isinstance(v, torch.Tensor) for v in sequential.values()) >= len(tasks) - 2
    trace = hooks.trace(model, x)
    names = list(tasks)
    barrier = threading.Barrier(4)

    def run(key):
        barrier.wait()  # start together
        return key, _outcome(tasks[key])

    with ThreadPoolExecutor(4) as pool:
        for repeat in range(20):
            keys = [names[(4 * repeat + i) % len(names)] for i in range(4)]
            for key, out in pool.map(run, keys):
                want = sequential[key]
                same = torch.equal(out, want) if isinstance(want, torch.Tensor) else out == want
                assert same, f"{key} differs in repeat {repeat}"
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
        nn.init.constant_(self.fc.bias, 1.0)  # positive logits (evaluate divides by them)
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

# Attribution classes fvis exports that METHODS does not build, each called here.
_OTHER_METHODS = {
    "LayerGradientXActivation": lambda m, x: A.LayerGradientXActivation(m).attribute(x, 1),
    "LayerIntegratedGradients": lambda m, x: A.LayerIntegratedGradients(m).attribute(
        x, 1, steps=4, layer="relu1"
    ),
}


def _maps(m, x):
    return A.Gradient(m).attribute(x, 1)


# Every quality measure that runs a model (fvis.quality.__all__; checked below).
_MEASURES = {
    "continuity": lambda m, x: quality.continuity(A.Gradient(m), x, 1, max_shift=1),
    "infidelity": lambda m, x: quality.infidelity(m, x, _maps(m, x), 1, n=2),
    "max_sensitivity": lambda m, x: quality.max_sensitivity(A.Gradient(m), x, 1, n=2),
    "model_randomization": lambda m, x: quality.model_randomization(
        m, A.Gradient, x, 1
    ).correlation,
    "pixel_flipping": lambda m, x: quality.pixel_flipping(m, x, _maps(m, x), 1, patch=4,
                                                          steps=2).scores,
    "recompute_flipping": lambda m, x: quality.recompute_flipping(A.Gradient(m), x, 1,
                                                                  patch=4, steps=2).scores,
    "transformation_robustness": lambda m, x: quality.transformation_robustness(
        m, O.channel("relu2", 1), x.clamp(0, 1), n=2
    ),
    "diversity": lambda m, x: torch.tensor(quality.diversity(x.clamp(0, 1), m, "relu2")),
    "transfer": lambda m, x: quality.transfer(m, x.clamp(0, 1), 1),
}  # fmt: skip


def _registered_measures() -> set[str]:
    """The functions in fvis.quality.__all__ that take a model or a method."""
    return {
        name
        for name in quality.__all__
        if inspect.isfunction(f := getattr(quality, name))
        and {"model", "method"} & set(inspect.signature(f).parameters)
    }


def _entry_points(model, x):
    """Every public entry point that runs a model, each a thunk returning tensors: every
    method of the registry (fvis.attribution.METHODS) and every other exported
    attribution class, every quality measure, and the front-of-pipeline calls."""
    calls = {
        name: lambda make=make, name=name: make(model).attribute(x, 1, **_OPTIONS.get(name, {}))
        for name, make in A.METHODS.items()
    }
    calls.update({k: lambda f=f: f(model, x) for k, f in _OTHER_METHODS.items()})
    calls.update({k: lambda f=f: f(model, x) for k, f in _MEASURES.items()})
    calls.update({
        "top_channels": lambda: A.top_channels(model, x, 1, "relu2", k=2).indices,
        "render": lambda: fvis.render(
            model, O.channel("relu2", 1), steps=3, redirected_relu_steps=2, progress=False
        ).images,
        "layers": lambda: torch.tensor([li.shape for li in fvis.layers(model)][-1]),
        "capture": lambda: fvis.capture(model, x, ["relu1", "output"])["output"],
        "building_blocks": lambda: torch.cat([
            (r := building_blocks(model, x[0].clamp(0, 1), 1, method="gradient",
                                  layer="relu2", top=2, steps=2)).attribution.flatten(),
            torch.tensor([r.probability]),
        ]),  # fmt: skip
        "neuron_groups": lambda: neuron_groups(
            model, x[0].clamp(0, 1), 1, layer="relu2", k=2, iters=5, steps=2
        ).directions,
        "dataset_examples": lambda: dataset_examples(
            model, x.clamp(0, 1), ["relu2[1]"], k=1, batch_size=1
        )[0].top_value,
        "evaluate": lambda: torch.tensor([
            v for row in evaluate(model, ["gradient"], x.clamp(0, 1), [1, 2], patch=4, steps=2,
                                  max_shift=1, samples=2).scores.values() for v in row.values()
        ]),  # fmt: skip
        "compare": lambda: torch.cat([
            (c := compare(model, x, ["gradient", "lrp"], target=1)).maps["lrp"].flatten(),
            c.probabilities,
        ]),
    })  # fmt: skip
    return calls


def test_the_entry_points_cover_the_registries():
    """A method or measure added to fvis is tested here without editing a list."""
    exported = {
        name
        for name in A.__all__
        if isinstance(cls := getattr(A, name), type)
        and issubclass(cls, A.Attribution)
        and cls is not A.Attribution
    }
    model = _Net()
    built = {type(make(model)).__name__ for make in A.METHODS.values()}
    assert exported - built == set(_OTHER_METHODS)
    assert _registered_measures() == set(_MEASURES)


def test_training_mode_model_gives_eval_results_and_keeps_its_statistics():
    torch.manual_seed(0)
    model, x = _Net(), torch.rand(2, 1, 8, 8)
    calls = _entry_points(model.eval(), x)
    expected = {k: _outcome(f) for k, f in calls.items()}
    refusals = {k for k, v in expected.items() if not isinstance(v, torch.Tensor)}
    assert refusals == {"attention_rollout"}, refusals  # a CNN has no attention
    model.train()
    before, state = snapshot(model), _state(model)
    for name, f in calls.items():
        out, want = _outcome(f), expected[name]
        same = _same(out, want) if isinstance(want, torch.Tensor) else out == want
        assert same, f"{name} differs in training mode"
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


def test_nested_guards_cost_one_and_the_outer_one_restores():
    """A render step nests several guards on one model: the inner ones neither snapshot
    nor restore (the outer one does both, for flags changed anywhere inside); a guard on
    a second model nests independently; another thread waits for the outer guard."""
    import threading

    from torch import nn

    from fvis import hooks

    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Sequential(nn.Dropout())).train()
    net[2].eval()  # mixed flags, restored exactly
    other = nn.Sequential(nn.Dropout()).train()
    entered = []
    with hooks.guard(net):
        assert not any(m.training for m in net.modules())
        with hooks.guard(net):  # nested: no snapshot, no restore
            net[1].train()
            with hooks.guard(other):
                assert not other.training
            assert other.training  # its own guard restored it
        assert net[1].training  # the inner guard left it

        def other_thread():
            with hooks.guard(net):
                entered.append([m.training for m in net.modules()])

        t = threading.Thread(target=other_thread)
        t.start()
        t.join(0.2)
        assert t.is_alive() and not entered  # the other thread waits
    t.join(5)
    assert entered == [[False] * 5]  # it ran after, in eval mode
    assert [m.training for m in net.modules()] == [True, True, True, False, False]


def test_a_nested_guard_stays_locked_and_in_eval_whatever_the_outer_one_does():
    """A guard held by a generator inside an outer guard still excludes other threads
    after the outer one closes; a nested guard entered while code inside set the model
    training runs in eval mode and gives the flags back."""
    import threading

    from torch import nn

    from fvis import hooks

    net = nn.Sequential(nn.Dropout()).eval()

    def held():
        with hooks.guard(net):
            yield
            yield

    gen = held()
    with hooks.guard(net):
        next(gen)  # nested, inside the outer guard
    entered = []

    def other_thread():
        with hooks.guard(net):
            entered.append(1)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(0.2)
    assert not entered  # the generator's guard still holds the model
    gen.close()
    t.join(5)
    assert entered == [1]
    net2 = nn.Sequential(nn.Dropout()).eval()
    with hooks.guard(net2):
        net2.train()
        with hooks.guard(net2):
            assert not net2.training and not net2[0].training
        assert net2.training and net2[0].training  # given back to the code that set it
    assert not net2.training  # the outer guard's snapshot
