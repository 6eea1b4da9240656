"""The hook layer: addressing, early stop, reused modules, in-place safety, cleanup."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis import hooks
from fvis.hooks import LayerError
from fvis.models.metadata import ModelInfo, attach


def test_layers_lists_names_shapes_and_channels(mnist_model):
    rows = {r.name: r for r in fvis.layers(mnist_model)}
    assert rows["input"].shape == (1, 28, 28)
    assert rows["conv2"].shape == (32, 28, 28) and rows["conv2"].channels == 32
    assert rows["pool2"].shape == (64, 7, 7)
    assert rows["fc1"].shape == (128,) and rows["fc1"].channels == 128
    assert rows["output"].shape == (10,)
    assert list(rows)[0] == "input" and list(rows)[-1] == "output"
    # the API says what the CLI's table says: a flat layer is a vector, not NCHW
    assert rows["fc1"].layout_name == "vector" and "layout='vector'" in repr(rows["fc1"])
    assert rows["conv2"].layout_name == "NCHW" and "layout='NCHW'" in repr(rows["conv2"])


def test_unknown_layer_lists_nearest_names(mnist_model):
    with pytest.raises(LayerError) as e:
        hooks.capture(mnist_model, torch.zeros(1, 1, 28, 28), ["conv4"])
    msg = str(e.value)
    assert "conv4" in msg and "conv3" in msg and "Nearest names" in msg


def test_capture_matches_manual_forward(mnist_model):
    x = torch.randn(3, 1, 28, 28)
    acts = hooks.capture(mnist_model, x, ["relu2", "fc1", "output"])
    h = mnist_model.relu2(mnist_model.conv2(mnist_model.relu1(mnist_model.conv1(x))))
    assert torch.allclose(acts["relu2"], h)
    assert torch.allclose(acts["output"], mnist_model(x))
    assert acts.output is not None


class Counting(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_forward_stops_after_last_needed_layer():
    net = nn.Sequential(
        Counting(nn.Conv2d(1, 2, 3)),
        Counting(nn.ReLU()),
        Counting(nn.Conv2d(2, 2, 3)),
        Counting(nn.ReLU()),
    )
    hooks.trace(net, (1, 8, 8))  # the one cached probe pass
    for m in net:
        m.calls = 0
    acts = hooks.capture(net, torch.randn(2, 1, 8, 8), ["1"])
    assert acts.output is None
    assert [m.calls for m in net] == [1, 1, 0, 0]
    hooks.capture(net, torch.randn(2, 1, 8, 8), ["0", "2"])
    assert [m.calls for m in net] == [2, 2, 1, 0]
    hooks.capture(net, torch.randn(2, 1, 8, 8), ["2"], stop=False)
    assert [m.calls for m in net] == [3, 3, 2, 1]


def test_reused_module_is_addressed_per_call_on_resnet18():
    model = torchvision.models.resnet18(weights=None).eval()
    before = snapshot(model)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(LayerError) as e:
        hooks.capture(model, x, ["layer1.0.relu"])
    assert "layer1.0.relu:0" in str(e.value) and "layer1.0.relu:1" in str(e.value)
    with pytest.raises(LayerError, match="out of range"):
        hooks.capture(model, x, ["layer1.0.relu:2"])
    acts = hooks.capture(model, x, ["layer1.0.relu:0", "layer1.0.relu:1", "layer1.0.bn2"])
    b = model.layer1[0]
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        first = torch.relu(b.bn1(b.conv1(stem)))
        second = torch.relu(b.bn2(b.conv2(first)) + stem)
    assert torch.allclose(acts["layer1.0.relu:0"], first, atol=1e-6)
    assert torch.allclose(acts["layer1.0.relu:1"], second, atol=1e-6)
    names = [r.name for r in fvis.layers(model, (3, 64, 64))]
    assert "layer1.0.relu:1" in names and "layer1.0.relu" not in names
    assert_clean(model, before)


def test_captured_activation_survives_inplace_relu():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 1, 1))
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        pre = net[0](x)
    acts = hooks.capture(net, x, ["0", "2"])
    assert (acts["0"] < 0).any(), "conv output must keep its negative values"
    assert torch.allclose(acts["0"], pre)
    # gradient through the captured activation is the true one
    x.requires_grad_(True)
    acts = hooks.capture(net, x, ["0", "2"])
    (g,) = torch.autograd.grad(acts["2"].sum(), acts["0"])
    expected = (pre > 0).float() * net[2].weight.view(1, 4, 1, 1)
    assert torch.allclose(g, expected.expand_as(g))


def test_retain_grads_records_activation_gradients(mnist_model):
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    acts = hooks.capture(mnist_model, x, ["input", "fc1", "output"], retain_grads=True)
    acts["output"][:, 3].sum().backward()
    assert acts.grads["fc1"].shape == (2, 128)
    assert torch.allclose(
        acts.grads["fc1"], mnist_model.logits.weight[3].expand(2, 128) * (acts["fc1"] > 0)
    )
    assert torch.equal(acts.grads["input"], x.grad)


def _two_layer():
    """y = w2 · relu(W1 x), hand-set: hidden units h = (x0 + x1, x0 − x1, −x0)."""
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]]))
        net[2].weight.copy_(torch.tensor([[2.0, 3.0, 5.0]]))
    return net


def test_replace_sets_an_activation_and_the_pass_goes_on_from_it():
    net, x = _two_layer(), torch.tensor([[1.0, 2.0]])
    value = torch.tensor([[1.0, -4.0, 0.5]], requires_grad=True)
    acts = hooks.capture(net, x, ["output"], replace={"0": value})
    assert acts["output"].item() == 2 * 1 + 3 * 0 + 5 * 0.5  # relu(value) · w2
    (g,) = torch.autograd.grad(acts["output"].sum(), value)
    assert g.tolist() == [[2.0, 0.0, 5.0]]  # the graph runs back to the replacement
    with pytest.raises(ValueError, match="replacement of shape"):
        hooks.capture(net, x, ["output"], replace={"0": torch.zeros(1, 4)})
    assert hooks.check_no_hooks(net) == []


def test_grad_masks_keep_one_hidden_units_share_of_the_gradient():
    net, x = _two_layer(), torch.tensor([[2.0, 1.0]], requires_grad=True)
    # h = (3, 1, −2): units 0 and 1 are on; dy/dx = 2·(1, 1) + 3·(1, −1) = (5, −1)
    shares = {}
    for k in range(3):
        mask = torch.nn.functional.one_hot(torch.tensor(k), 3).float()
        acts = hooks.capture(net, x, ["output"], grad_masks={"0": mask})
        (shares[k],) = torch.autograd.grad(acts["output"].sum(), x)
    assert shares[0].tolist() == [[2.0, 2.0]] and shares[1].tolist() == [[3.0, -3.0]]
    assert shares[2].tolist() == [[0.0, 0.0]]  # unit 2 is off
    (g,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.equal(shares[0] + shares[1] + shares[2], g)


def test_hooks_removed_and_weights_unchanged_after_exception(mnist_model):
    before = snapshot(mnist_model)
    with pytest.raises(RuntimeError):
        hooks.capture(mnist_model, torch.randn(1, 3, 28, 28), ["conv2"])  # wrong channels
    assert_clean(mnist_model, before)
    with pytest.raises(IndexError):
        fvis.render(mnist_model, fvis.objectives.channel("conv2", 99), steps=2, progress=False)
    assert_clean(mnist_model, before)


def test_render_leaves_model_clean_and_mode_restored():
    model = torchvision.models.resnet18(weights=None)
    model.train()
    before = snapshot(model)
    fvis.render(
        model,
        fvis.objectives.channel("layer1.0.relu:1", 3),
        fvis.param.image(32),
        steps=3,
        progress=False,
        redirected_relu_steps=2,
    )
    assert_clean(model, before)  # BatchNorm statistics untouched: eval mode during render
    assert model.training and model.layer1[0].bn1.training
    assert all(p.requires_grad for p in model.parameters())


class _ViewNet(nn.Module):
    """LeNet's habit: ``x.view(B, -1)`` on a conv activation (fails on channels-last)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 6, 3), nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(torch.nn.functional.max_pool2d(x, 2).view(x.shape[0], -1))


def test_channels_last_input_falls_back_for_a_model_that_views_activations():
    """Render and pixel flipping feed channels-last input; a model whose ``.view`` cannot
    take it runs on the input as given (remembered), with the same results as NCHW."""
    from fvis.quality import pixel_flipping

    net = attach(_ViewNet().eval(), ModelInfo((3, 12, 12)))
    x = torch.rand(2, 3, 12, 12)
    ok = hooks.channels_last_input(nn.Conv2d(3, 4, 3), x, lambda t: t)
    assert ok.is_contiguous(memory_format=torch.channels_last) and not ok.is_contiguous()
    seen = []
    out = hooks.channels_last_input(net, x, lambda t: seen.append(t.stride()) or net(t))
    assert seen == [x.contiguous(memory_format=torch.channels_last).stride(), x.stride()]
    assert torch.equal(out, net(x))
    seen.clear()
    hooks.channels_last_input(net, x, lambda t: seen.append(t.stride()) or net(t))
    assert seen == [x.stride()]  # remembered: no second failed try
    pf = pixel_flipping(net, x, torch.rand(2, 3, 12, 12), 1, patch=4, steps=3)
    assert pf.scores.shape == (2, 4) and torch.isfinite(pf.scores).all()
    r = fvis.render(net, fvis.objectives.channel("c2", 1), steps=2, progress=False, transforms=None)
    assert torch.isfinite(r.history).all()
    with pytest.raises(RuntimeError, match="boom"):  # other errors are not swallowed
        hooks.channels_last_input(
            nn.Conv2d(3, 4, 3), x, lambda t: (_ for _ in ()).throw(RuntimeError("boom"))
        )


def test_channels_last_input_with_one_channel_runs_the_network_nhwc():
    """A contiguous (B, 1, H, W) tensor already passes as channels-last contiguous, so
    ``.contiguous(memory_format=...)`` would keep NCHW strides and the first convolution
    would answer NCHW; the input given is read as NHWC, and so is the conv's output."""
    conv = nn.Conv2d(1, 4, 3)
    x = torch.rand(2, 1, 9, 9)
    seen = hooks.channels_last_input(conv, x, lambda t: t)
    assert seen.stride() == (81, 1, 9, 1) and torch.equal(seen, x)
    out = hooks.channels_last_input(conv, x, conv)
    assert out.stride(1) == 1 and out.stride(3) == 4  # NHWC
    torch.testing.assert_close(out, conv(x))
    assert conv(x).stride(3) == 1  # NCHW had it been given as it was
    nhwc = x.clone(memory_format=torch.channels_last)
    assert hooks.channels_last_input(conv, nhwc, lambda t: t) is nhwc  # no second copy
