"""Issue 11 items 4, 11, 12: the isotropic frequency penalty, the log-probability class
objective and seeded random directions, with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fvis
from fvis import hooks
from fvis import objectives as O
from fvis.models import ModelInfo, attach


def _wave(h: int, w: int, period: int, along: str) -> dict:
    """cos(2π k / period) along x or y, amplitude 1, one channel."""
    k = torch.arange(w if along == "x" else h, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * k / period)
    img = wave.view(1, -1).expand(h, w) if along == "x" else wave.view(-1, 1).expand(h, w)
    return {O.IMAGE: img.reshape(1, 1, h, w).clone()}


def test_frequency_penalty_is_isotropic_and_matches_the_sinusoid_formula():
    # A sinusoid of amplitude 1 at |f| = 1/4 cycle/pixel: energy a²/2 = 0.5 per pixel,
    # weight (|f| / √0.5)^p: p = 2 → 0.125 · 0.5 = 0.0625, p = 1 → √0.125 · 0.5.
    # The half spectrum of rfft2 counted the horizontal wave once (0.03125): anisotropic.
    for along in ("x", "y"):
        wave = _wave(8, 12, 4, along)
        assert O.frequency()(wave).item() == pytest.approx(0.0625, abs=1e-12)
        assert O.frequency(power=1)(wave).item() == pytest.approx(0.5 * 0.125**0.5, abs=1e-12)
    # an image and its transpose score the same (non-square, 3 channels, random)
    img = torch.rand(2, 3, 6, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = O.frequency()({O.IMAGE: img})
    b = O.frequency()({O.IMAGE: img.transpose(-1, -2)})
    assert torch.allclose(a, b, rtol=1e-12, atol=0)
    # Parseval with p = 0: the penalty is the variance of each channel, averaged
    var = (img - img.mean((-2, -1), keepdim=True)).pow(2).flatten(1).mean(1)
    assert torch.allclose(O.frequency(power=0)({O.IMAGE: img}), var, rtol=1e-12)


def test_class_log_prob_hand_computed():
    acts = {hooks.OUTPUT: torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])}
    value = O.class_log_prob(2)(acts)
    # 3 − log(e + e² + e³) and −log 3
    assert value.tolist() == pytest.approx([-0.40760596444438, -1.09861228866811], abs=1e-6)
    assert O.class_log_prob(2, batch=1)(acts).tolist() == pytest.approx([0.0, -1.0986123])
    # spatial output (B, K, H, W): log-softmax over K at each position, then the mean
    z = torch.tensor([[0.0, 1.0], [2.0, -1.0]]).view(1, 2, 1, 2)  # two positions
    lp = O.class_log_prob(0)({hooks.OUTPUT: z})
    expected = 0.5 * ((0 - math.log(1 + math.e**2)) + (1 - math.log(math.e + math.exp(-1))))
    assert lp.item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(IndexError, match=r"valid: 0\.\.2"):
        O.class_log_prob(3)(acts)
    with pytest.raises(ValueError, match="class scores along dimension 1"):
        O.class_log_prob(0)({hooks.OUTPUT: torch.zeros(4)})


def test_class_log_prob_by_name_on_a_model():
    net = attach(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), ModelInfo((1, 2, 2), labels="abc"))
    x = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    acts = hooks.capture(net, x, [hooks.OUTPUT])
    expected = torch.log_softmax(net(x), 1)[:, 1]
    assert torch.allclose(O.class_log_prob("b")(acts), expected)


@pytest.fixture()
def tiny():
    """Layer "0" of the hand-set net in test_objectives: channel 0 = x + 1, channel 1 =
    −2x + 0.5, with x[b, 0, i, j] = 9b + 3i + j."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.5]))
    x = torch.arange(18.0).view(2, 1, 3, 3)
    return hooks.capture(nn.Sequential(conv), x, ["0"])


def test_random_direction_in_channel_space_is_seeded_and_pinned(tiny):
    # seed 0: randn(2) = (1.5410, −0.2934), unit vector (0.9823, −0.1871); the channel
    # means are (5, −7.5) and (14, −25.5), so <mean A, v> = 6.3147 and 18.5228
    value = O.random_direction("0", seed=0)(tiny)
    assert value.tolist() == pytest.approx([6.3147, 18.5228], abs=1e-3)
    z = torch.tensor([1.5410, -0.2934])
    assert torch.allclose(value, O.direction("0", z / z.norm())(tiny), atol=1e-3)
    again = O.random_direction("0", seed=0)(tiny)
    assert torch.equal(value, again)  # same seed, same direction, bit for bit
    other = O.random_direction("0", seed=1)(tiny)
    assert not torch.allclose(value, other)


def test_random_direction_over_the_whole_layer(tiny):
    # seed 0: z = randn(2, 3, 3) with ‖z‖ = 4.3230; <A[b], z/‖z‖> summed over c, y, x
    z = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0))
    assert z.norm().item() == pytest.approx(4.3230, abs=1e-4)
    assert z[0, 0].tolist() == pytest.approx([-1.1258, -1.1524, 0.5667], abs=1e-4)
    value = O.random_direction("0", seed=0, over="layer")(tiny)
    assert value.tolist() == pytest.approx([-9.1666, -30.2719], abs=1e-3)
    a = tiny["0"]
    assert torch.allclose(value, (a * z / z.norm()).sum((1, 2, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="over must be"):
        O.random_direction("0", over="space")


@pytest.mark.parametrize(
    "objective",
    [
        O.class_log_prob(4),
        O.random_direction("conv3", seed=3),
        O.random_direction("conv3", seed=3, over="layer"),
    ],
    ids=lambda o: o.name,
)
def test_new_objectives_rise_on_the_bundled_model(objective, mnist_model):
    param = fvis.param.image(28, channels=1, kind="pixel", sd=0.5, seed=1)
    r = fvis.render(mnist_model, objective, param, transforms=None, steps=8, progress=False)
    assert r.history[-1].item() > r.history[0].item()
