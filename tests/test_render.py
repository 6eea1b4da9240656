"""The render loop: reproducibility, results, options, redirected ReLU, and the class
visualizations of the bundled model (the README's main job)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import fvis
from fvis import objectives as O
from fvis.redirect import redirected_relu


def test_same_seed_identical_images_other_seed_different(mnist_model):
    obj = O.channel("conv3", 2) - 0.05 * O.total_variation()
    a = fvis.render(mnist_model, obj, steps=20, seed=7, progress=False)
    b = fvis.render(mnist_model, obj, steps=20, seed=7, progress=False)
    c = fvis.render(mnist_model, obj, steps=20, seed=8, progress=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert not torch.equal(a.images, c.images)


def test_result_history_thresholds_and_pil(mnist_model):
    units = [O.channel("conv3", k) for k in range(3)]
    r = fvis.render(
        mnist_model, O.one_per_item(units), batch=3, steps=10, thresholds=(4, 10), progress=False
    )
    assert r.images.shape == (3, 1, 28, 28) and r.images.min() >= 0 and r.images.max() <= 1
    assert r.history.shape == (10, 3)
    assert sorted(r.snapshots) == [4, 10] and torch.equal(r.snapshots[10], r.images)
    pil = r.pil()
    assert len(pil) == 3 and isinstance(pil[0], Image.Image) and pil[0].size == (28, 28)
    assert r.grid(scale=2).size[0] > 3 * 28 * 2
    assert r.objective.startswith("channel(conv3:0)")


def test_units_in_one_batch_match_units_rendered_alone(mnist_model):
    """Batching is exact: each item only sees its own objective's gradient."""
    kw = dict(transforms=None, steps=5, progress=False)
    units = [O.neuron("fc1", 1), O.neuron("fc1", 2)]
    both = fvis.render(
        mnist_model,
        O.one_per_item(units),
        fvis.param.image(28, channels=1, batch=2, kind="pixel", sd=0.3, seed=2),
        **kw,
    )
    init = fvis.param.image(28, channels=1, batch=2, kind="pixel", sd=0.3, seed=2).spatial.raw
    for i, u in enumerate(units):
        single = fvis.param.image(28, channels=1, kind="pixel")
        single.spatial.raw.data = init[i : i + 1].clone()
        alone = fvis.render(mnist_model, u, single, **kw)
        assert torch.allclose(both.images[i], alone.images[0], atol=1e-5)


def test_any_optimizer_is_accepted(mnist_model):
    r = fvis.render(
        mnist_model,
        O.channel("conv1", 0),
        optimizer=torch.optim.SGD,
        lr=1.0,
        steps=5,
        progress=False,
    )
    assert r.history[-1] > r.history[0]
    r = fvis.render(
        mnist_model,
        O.channel("conv1", 0),
        optimizer=lambda p: torch.optim.RMSprop(p, lr=0.01),
        steps=5,
        progress=False,
    )
    assert r.history[-1] > r.history[0]


def test_redirected_relu_lets_a_dead_unit_recover():
    """All pre-activations negative: ReLU passes no gradient, the redirected one does."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-5.0)
    fvis.models.attach(net, fvis.models.ModelInfo((1, 4, 4)))
    kw = dict(transforms=None, steps=3, progress=False, lr=0.1)
    plain = fvis.render(net, O.channel("1", 0), redirected_relu_steps=0, **kw)
    redirected = fvis.render(net, O.channel("1", 0), redirected_relu_steps=3, **kw)
    start = fvis.param.image(4, channels=1)()
    assert torch.equal(plain.images, start.detach())
    assert redirected.images.mean() > start.mean() + 0.01


def test_redirected_relu_gradient_rule():
    x = torch.tensor([[-1.0, 2.0], [-1.0, -3.0]], requires_grad=True)
    with redirected_relu():
        y = torch.relu(x)
    assert torch.equal(y, x.clamp(min=0))
    # item 0 has a live unit: ordinary ReLU gradient; item 1 is dead: redirected
    (g,) = torch.autograd.grad(y, x, torch.tensor([[1.0, 1.0], [-1.0, 1.0]]))
    assert torch.equal(g, torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    empty = torch.zeros(2, 0, 3, requires_grad=True)  # items without elements
    with redirected_relu():
        y = torch.relu(empty.clone())
    assert torch.autograd.grad(y, empty, torch.zeros(2, 0, 3))[0].shape == (2, 0, 3)


def test_redirected_relu_keeps_the_channels_last_layout_and_the_rule():
    """Render feeds channels-last input; the rule's gradient must stay in that layout (a
    contiguous one sends every BatchNorm backward down a slow mixed-layout path) and
    equal the plain-layout result. Item 0: all gradient blocked (dead → redirected)."""
    x = torch.tensor([-1.0, 0.0, 2.0, -3.0]).repeat(2, 3, 2, 1).permute(0, 1, 3, 2)
    x[0] = -x[0].abs() - 1
    g = torch.linspace(-1, 1, x.numel()).view(x.shape)
    out = []
    for t in (x.contiguous(), x.contiguous(memory_format=torch.channels_last)):
        t = t.clone().requires_grad_(True)
        with redirected_relu():
            y = torch.relu(t * 1)
        (gx,) = torch.autograd.grad(y, t, g)
        out.append(gx)
    assert out[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[0][1], torch.where(x[1] < 0, 0, g[1]))  # live: ReLU gradient
    assert torch.equal(out[0][0], torch.where(g[0] > 0, 0, g[0]))  # dead: no push lower


def test_render_on_explicit_cpu_device_equals_the_default(mnist_model):
    kw = {"steps": 2, "progress": False}
    r = fvis.render(mnist_model, O.class_logit(1), device="cpu", **kw)
    assert torch.equal(r.images, fvis.render(mnist_model, O.class_logit(1), **kw).images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_on_last_cuda_device():
    dev = f"cuda:{torch.cuda.device_count() - 1}"
    model = fvis.load_model("fvis:mnist", device=dev)
    r = fvis.render(model, O.class_logit(1), steps=3, progress=False)
    assert r.history.shape == (3, 1)


def test_class_visualizations_are_recognised(mnist_model, tmp_path, capsys):
    """The README's main job: each of the 10 class images is classified as its class
    with probability > 0.9 by the bundled model."""
    from fvis.cli import main

    out = tmp_path / "classes.png"
    assert (
        main(
            [
                "render",
                "--model",
                "fvis:mnist",
                "--class",
                "all",
                "--tv",
                "0.05",
                "--device",
                "cpu",
                "-q",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.exists() and Image.open(out).size[0] > 10 * 28
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "p(class" in ln]
    probs = [float(ln.rsplit("=", 1)[1]) for ln in lines]
    assert len(probs) == 10 and min(probs) > 0.9, probs


def test_cli_class_by_index_or_name_on_a_model_with_word_labels(tmp_path, capsys):
    """``--class 3`` is an index even when the labels are words; ``--class d`` a name."""
    from fvis.cli import main
    from fvis.models import MNIST_INFO, attach, save
    from fvis.models.mnist import MnistCNN

    path = tmp_path / "letters.pt"
    save(attach(MnistCNN(), MNIST_INFO.with_(labels=tuple("abcdefghij"))), path, "fvis:mnist")
    for spec in ("3", "d"):
        out = tmp_path / f"{spec}.png"
        assert (
            main(
                [
                    "render",
                    "--model",
                    str(path),
                    "--class",
                    spec,
                    "--steps",
                    "2",
                    "--device",
                    "cpu",
                    "-q",
                    "-o",
                    str(out),
                ]
            )
            == 0
        )
        assert "p(class d)" in capsys.readouterr().out and out.exists()


def test_redirected_relu_keeps_in_place_semantics():
    """``F.relu_(h)`` followed by a use of ``h``: the forward value is the model's own."""

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            torch.relu_(h)  # the result is not used: h itself must be rectified
            return h * 2

    torch.manual_seed(0)
    net, x = InPlace(), torch.randn(4, 3, requires_grad=True)
    want = net(x)
    with redirected_relu():
        got = net(x)
    assert torch.equal(got, want) and (got >= 0).all()
    got.sum().backward()  # autograd accepts the in-place result
    assert x.grad is not None


def test_importance_marks_the_pixels_the_objective_reads():
    """A 1×1 conv read at one position: only that pixel ever gets gradient."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1))
    fvis.models.attach(net, fvis.models.ModelInfo((1, 8, 8)))
    objective = O.one_per_item([O.neuron("0", 0, x=2, y=5), O.neuron("0", 1, x=6, y=1)])
    r = fvis.render(net, objective, batch=2, steps=4, transforms=None, progress=False,
                    importance=True)  # fmt: skip
    assert r.importance.shape == (2, 1, 8, 8)
    want = torch.zeros(2, 1, 8, 8)
    want[0, 0, 5, 2] = want[1, 0, 1, 6] = 1.0
    assert torch.equal(r.importance, want)
    plain = fvis.render(net, objective, batch=2, steps=4, transforms=None, progress=False)
    assert plain.importance is None and torch.equal(plain.images, r.images)


def test_cli_importance_picture(tmp_path):
    from PIL import Image

    from fvis.cli import main

    out = tmp_path / "c.png"
    args = ["render", "--model", "fvis:mnist", "--class", "0,1", "--steps", "3", "--importance"]
    assert main([*args, "-q", "-o", str(out)]) == 0
    faded = Image.open(tmp_path / "c_importance.png")
    assert faded.size == Image.open(out).size


def test_callback_sees_every_step_and_its_exception_stops_the_render(mnist_model):
    from fvis.hooks import check_no_hooks

    seen = []

    def callback(step, images, values):
        seen.append((step, tuple(images.shape), tuple(values.shape)))
        if step == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        fvis.render(mnist_model, O.channel("conv1", 0), batch=2, steps=10, callback=callback)
    assert seen == [(s, (2, 1, 28, 28), (2,)) for s in (1, 2, 3)]
    assert check_no_hooks(mnist_model) == []
    assert not mnist_model.training and not any(p.requires_grad for p in mnist_model.parameters())


def test_redirected_relu_on_an_accelerator_never_branches_on_values():
    """On a non-CPU device the rule runs without reading values back (each read would
    wait for the device): backward on the meta device, which has no values, completes;
    and that branch-free form equals the CPU's indexed one."""
    from fvis.redirect import _everywhere

    x = torch.randn(4, 3, 5, 5, device="meta", requires_grad=True)
    with redirected_relu():
        y = torch.relu(x * 1)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert g.shape == x.shape and g.device.type == "meta"
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    x[::2] = -x[::2].abs() - 0.1  # items 0, 2, 4 dead
    grad = torch.randn(6, 3, 4, 4)
    grad[4] = 0  # dead but no gradient arrives
    t = x.clone().requires_grad_(True)
    with redirected_relu():
        y = torch.relu(t * 1)
    (cpu,) = torch.autograd.grad(y, t, grad)
    relu_grad = torch.where(x < 0, 0, grad)
    dead = relu_grad.flatten(1).abs().sum(1) == 0
    assert dead.tolist() == [True, False, True, False, True, False]
    assert torch.equal(cpu, _everywhere(~(x < 0), grad))
    assert torch.equal(cpu[0], torch.where(grad[0] > 0, 0, grad[0]))  # redirected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_redirected_relu_equals_the_rule_bit_for_bit(dtype):
    """The CPU's indexed form against the rule written out: per item, the ReLU gradient
    ``where(x < 0, 0, g)`` unless it is all zero, then ``where(x < 0 & g > 0, 0, g)``;
    1- to 5-D, both layouts, items without gradient, tiny gradients (whose squares
    underflow), NaN, and inputs of ±0 and NaN. Signs of zero included."""

    def rule(x, g):
        relu = torch.where(x < 0, 0, g)
        redirected = torch.where((x < 0) & (g > 0), 0, g)
        if g.dim() < 2:
            return redirected if not relu.ne(0).any() else relu
        dead = ~relu.flatten(1).ne(0).any(1)
        return torch.where(dead.view(-1, *[1] * (g.dim() - 1)), redirected, relu)

    gen = torch.Generator().manual_seed(0)
    for trial in range(120):
        shape = [(7,), (5, 3), (4, 3, 6), (6, 4, 3, 3), (3, 2, 2, 3, 2)][trial % 5]
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        if len(shape) > 1:
            x[::2] = -x[::2].abs() - 0.1  # dead items
            g[::3] = 0  # no gradient arrives
            g[1::4] *= 1e-30 if dtype != torch.float64 else 1e-170  # tiny
        if trial % 7 == 0:
            g.view(-1)[0] = float("nan")
            g.view(-1)[1] = float("nan")  # where x = 0 below: passed, the item is live
            g.view(-1)[-1] = -float("nan")  # a NaN's sign and payload are kept too
        x.view(-1)[1:3] = torch.tensor([0.0, -0.0])  # not < 0: the gradient passes
        if trial % 11 == 0:
            x.view(-1)[3] = float("nan")  # not < 0 either
        if trial % 5 == 0:
            x = -x.abs() - 0.1
        layouts = [x]
        if x.dim() == 4:
            layouts.append(x.contiguous(memory_format=torch.channels_last))
        for t in layouts:
            t = t.clone().requires_grad_(True)
            with redirected_relu():
                y = torch.relu(t.clone())  # clone's backward passes g's bits (t * 1's rounds NaNs)
            (got,) = torch.autograd.grad(y, t, g)
            want = rule(x, g)
            bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[g.element_size()]
            assert torch.equal(got.view(bits), want.view(bits)), (trial, shape)  # NaNs too
