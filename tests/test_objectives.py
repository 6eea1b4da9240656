"""Objectives: exact values on a hand-set net, arithmetic, batching, and ascent on the
bundled model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fvis
from fvis import hooks
from fvis import objectives as O
from fvis.models import ModelInfo, attach


@pytest.fixture()
def tiny():
    """x[b, 0, i, j] = 9b + 3i + j; conv 1×1: channel 0 = x + 1, channel 1 = -2x + 0.5."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.5]))
    net = attach(nn.Sequential(conv), ModelInfo((1, 3, 3), labels=("a", "b")))
    x = torch.arange(18.0).view(2, 1, 3, 3)
    acts = hooks.capture(net, x, ["0", "input", "output"])
    acts[O.IMAGE] = x
    return acts


def close(obj, acts, expected):
    value = obj(acts)
    assert value.shape == (len(expected),)
    assert torch.allclose(value, torch.tensor(expected, dtype=value.dtype), atol=1e-5), value


def test_exact_values_on_hand_set_net(tiny):
    close(O.channel("0", 0), tiny, [5.0, 14.0])
    close(O.channel("0", 1), tiny, [-7.5, -25.5])
    close(O.neuron("0", 0), tiny, [5.0, 14.0])  # centre (1, 1): x = 4 and 13
    close(O.neuron("0", 0, x=2, y=0), tiny, [3.0, 12.0])
    sq0 = ((torch.arange(9.0) + 1) ** 2 + (-2 * torch.arange(9.0) + 0.5) ** 2).mean()
    sq1 = ((torch.arange(9.0, 18) + 1) ** 2 + (-2 * torch.arange(9.0, 18) + 0.5) ** 2).mean()
    close(O.layer("0"), tiny, [sq0.item() / 2, sq1.item() / 2])  # mean over 2 channels
    close(O.direction("0", [1.0, 1.0]), tiny, [-2.5, -11.5])  # mean of -x + 1.5
    close(O.direction_neuron("0", [1.0, 1.0], x=0, y=0), tiny, [1.5, -7.5])
    close(O.class_logit(1), tiny, [-7.5, -25.5])
    close(O.class_logit("b"), tiny, [-7.5, -25.5])  # by label name
    close(O.channel_interpolate("0", 0, "0", 1), tiny, [5.0, -25.5])
    close(O.total_variation(), tiny, [4.0, 4.0])  # |dx| = 1, |dy| = 3 on the ramp
    close(O.l1(), tiny, [4.0, 13.0])
    close(O.l2(), tiny, [204 / 9, (torch.arange(9.0, 18) ** 2).mean().item()])
    close(
        O.reference_l2(torch.full((1, 3, 3), 4.0)),
        tiny,
        [((torch.arange(9.0) - 4) ** 2).mean().item(), 81 + 60 / 9],
    )


def test_direction_cossim_weighting(tiny):
    # v = (1, 0): cos = (x+1)/‖A‖; weighted term (x+1)·max(cos, 0.1)^1
    a = tiny["0"]
    cos = (a[:, 0] / a.norm(dim=1)).clamp(min=0.1)
    expected = (a[:, 0] * cos).flatten(1).mean(1)
    close(O.direction("0", [1.0, 0.0], cossim_pow=1), tiny, expected.tolist())


def test_diversity_is_minus_gram_cosine(tiny):
    a = tiny["0"].flatten(2)
    g = [(a[b] @ a[b].T).flatten() for b in range(2)]
    cos = torch.dot(g[0], g[1]) / (g[0].norm() * g[1].norm())
    close(O.diversity("0"), tiny, [-cos.item(), -cos.item()])


def test_frequency_penalty_zero_for_constant_one_for_checkerboard():
    const = {O.IMAGE: torch.full((1, 1, 4, 4), 0.7)}
    board = {
        O.IMAGE: ((torch.arange(4)[:, None] + torch.arange(4)[None]) % 2 * 2 - 1.0).view(1, 1, 4, 4)
    }
    assert O.frequency()(const).abs().item() < 1e-7
    assert O.frequency()(board).item() == pytest.approx(1.0, abs=1e-6)
    smooth = {O.IMAGE: torch.linspace(0, 1, 4).view(1, 1, 1, 4).expand(1, 1, 4, 4)}
    assert O.frequency()(smooth).item() < 0.2 * O.frequency()(board).item()


def test_blur_penalty_zero_for_constant_positive_for_noise():
    assert O.blur()({O.IMAGE: torch.full((1, 1, 8, 8), 0.3)}).abs().item() < 1e-7
    assert O.blur()({O.IMAGE: torch.rand(1, 1, 8, 8)}).item() > 1e-3


def test_arithmetic_keeps_items_and_never_mutates(tiny):
    c0, c1 = O.channel("0", 0), O.channel("0", 1)
    close(c0 + 2 * c1, tiny, [-10.0, -37.0])
    close(c0 - c1, tiny, [12.5, 39.5])
    close(-c0, tiny, [-5.0, -14.0])
    close(c0 / 2, tiny, [2.5, 7.0])
    close(c0 - 1, tiny, [4.0, 13.0])
    close(1 - c0, tiny, [-4.0, -13.0])
    close(c0.on(1), tiny, [0.0, 14.0])
    close(O.channel("0", 0, batch=0), tiny, [5.0, 0.0])
    close(O.one_per_item([c0, c1]), tiny, [5.0, -25.5])
    assert c0.name == "channel(0:0)" and c1.name == "channel(0:1)"
    close(c0, tiny, [5.0, 14.0])
    assert (c0 - c1).layers == ("0",)
    assert (-c1).name == "-channel(0:1)"
    assert (c0 + 0.5 * O.total_variation()).layers == ("0", "image")
    with pytest.raises(TypeError):
        c0 * c1


def test_bad_channel_and_batch_index_explain_the_range(tiny):
    with pytest.raises(IndexError, match=r"valid: 0\.\.1"):
        O.channel("0", 5)(tiny)
    with pytest.raises(IndexError, match="batch=3"):
        O.channel("0", 0).on(3)(tiny)
    with pytest.raises(ValueError, match="direction has 3 entries"):
        O.direction("0", [1.0, 2.0, 3.0])(tiny)


ASCENT = {
    "channel": (O.channel("conv3", 5), 1),
    "neuron": (O.neuron("conv2", 7), 1),
    "neuron_fc": (O.neuron("fc1", 3), 1),
    "layer": (O.layer("relu2"), 1),
    "class": (O.class_logit(4), 1),
    "class_by_name": (O.class_logit("4"), 1),
    "direction": (O.direction("conv3", torch.linspace(-1, 1, 64)), 1),
    "direction_cossim": (O.direction("conv3", torch.linspace(-1, 1, 64), cossim_pow=1), 1),
    "direction_neuron": (O.direction_neuron("relu3", torch.linspace(1, -1, 64)), 1),
    "interpolate": (O.channel_interpolate("conv3", 1, "fc1", 2), 3),
    "diversity": (O.channel("conv3", 5) + 10 * O.diversity("conv3"), 3),
    "negative": (-O.channel("conv3", 5), 1),
    "tv": (-O.total_variation(), 1),
    "l1": (-O.l1(constant=0.5), 1),
    "l2": (-O.l2(constant=0.5), 1),
    "blur": (-O.blur(), 1),
    "frequency": (-O.frequency(), 1),
    "reference": (-O.reference_l2(torch.zeros(1, 28, 28)), 1),
}


@pytest.mark.parametrize("name", list(ASCENT))
def test_every_objective_rises_on_the_bundled_model(name, mnist_model):
    objective, batch = ASCENT[name]
    param = fvis.param.image(28, channels=1, batch=batch, kind="pixel", sd=0.5, seed=1)
    r = fvis.render(
        mnist_model, objective, param, transforms=None, steps=12, lr=0.05, progress=False
    )
    assert r.history.shape == (12, batch)
    first, last = r.history[0].sum().item(), r.history[-1].sum().item()
    assert last > first, f"{objective.name}: {first} -> {last}"


def test_a_neuron_position_on_a_vector_layer_is_refused(mnist_model):
    """fc1 has units, no positions: ``fc1[5]`` (and ``@center``) is the unit itself, an
    explicit position is refused rather than ignored."""
    x = torch.rand(2, 1, 28, 28)
    acts = hooks.capture(mnist_model, x, ["fc1"])
    assert torch.equal(O.neuron("fc1", 5)(acts), acts["fc1"][:, 5])
    with pytest.raises(ValueError, match=r"'fc1' has no positions.*fc1\[5\] without @"):
        O.neuron("fc1", 5, x=1, y=2)(acts)
