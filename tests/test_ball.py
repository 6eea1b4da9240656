"""Issue 11 item 14: a hard L∞ / L2 ball around a start image, projected after every step
of render, in Python and on the command line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fvis
from fvis import objectives as O
from fvis.models import ModelInfo, attach
from fvis.param import Ball


def test_projections_hand_computed():
    center = torch.full((1, 1, 3), 0.5)
    linf = Ball(center, 0.1, "linf")
    x = torch.tensor([0.9, 0.45, 0.1]).view(1, 1, 1, 3)
    assert linf.project(x).flatten().tolist() == pytest.approx([0.6, 0.45, 0.4], abs=1e-7)
    assert linf.distance(x).item() == pytest.approx(0.4)
    # L2: x − x₀ = (0.3, 0.4), norm 0.5, radius 0.25 → half of it
    l2 = Ball(torch.zeros(1, 1, 2), 0.25, "l2")
    y = torch.tensor([0.3, 0.4]).view(1, 1, 1, 2)
    assert l2.project(y).flatten().tolist() == pytest.approx([0.15, 0.2], abs=1e-7)
    inside = torch.tensor([0.1, 0.1]).view(1, 1, 1, 2)
    assert torch.equal(l2.project(inside), inside)  # points inside do not move
    # per batch item
    both = torch.cat([y, inside])
    assert l2.distance(l2.project(both)).tolist() == pytest.approx([0.25, 0.02**0.5])


def _linear(w):
    """f(x) = Σ w·x on a one-channel 2×2 image in [0, 1] (no normalization)."""
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
    return attach(nn.Sequential(nn.Flatten(), lin), ModelInfo((1, 2, 2)))


def _render(model, ball, **kw):
    return fvis.render(
        model, O.class_logit(0), ball=ball, transforms=None, steps=40, progress=False, **kw
    )


def test_linf_ball_render_reaches_the_corner_and_never_leaves():
    # max Σ w·x over ‖x − 0.5‖∞ ≤ 0.1 is x = 0.5 + 0.1·sign(w): f = −0.75 + 0.1·‖w‖₁ = −0.3.
    # Pixels with Adam (steps ≈ lr·sign(g) per pixel, as PGD's) and Fourier with plain
    # gradient steps both reach it.
    w = [1.0, -2.0, 0.5, -1.0]
    ball = Ball(torch.full((1, 2, 2), 0.5), 0.1, "linf")
    for kind, options in (("pixel", {}), ("fft", {"optimizer": torch.optim.SGD, "lr": 1.0})):
        param = ball.start((1, 2, 2), kind=kind)
        r = _render(_linear(w), ball, param=param, thresholds=(5,), **options)
        assert r.images.flatten().tolist() == pytest.approx([0.6, 0.4, 0.6, 0.4], abs=1e-6)
        # every image the model saw was inside the ball: f never exceeds the bound
        assert r.history.max().item() <= -0.3 + 1e-5
        assert r.history[-1].item() == pytest.approx(-0.3, abs=1e-5)
        assert ball.distance(r.snapshots[5]).item() <= 0.1 + 1e-7


def test_l2_ball_render_ends_on_the_sphere_at_the_optimum():
    # max Σ w·x over ‖x − 0.5‖₂ ≤ 0.1 is x = 0.5 + 0.1·w/‖w‖: ±0.05 for w = (1, −1, 1, −1)
    ball = Ball(torch.full((1, 2, 2), 0.5), 0.1, "l2")
    r = _render(_linear([1.0, -1.0, 1.0, -1.0]), ball)  # default param: Fourier, Adam
    assert r.images.flatten().tolist() == pytest.approx([0.55, 0.45, 0.55, 0.45], abs=1e-5)
    assert r.history.max().item() <= 0.2 + 1e-5  # 0.1 · ‖w‖₂
    # uneven weights, ‖w‖ = 2.5: x = 0.5 + 0.04·w, f = −0.75 + 0.25 = −0.5 (plain gradient
    # steps; the sigmoid between parameters and pixels leaves it within 1e-3)
    w = [1.0, -2.0, 0.5, -1.0]
    param = ball.start((1, 2, 2), kind="pixel")
    r = _render(_linear(w), ball, param=param, optimizer=torch.optim.SGD, lr=1.0)
    assert ball.distance(r.images).item() == pytest.approx(0.1, abs=1e-6)
    assert -0.5 - 1e-3 <= r.history[-1].item() <= -0.5 + 1e-5
    expected = [0.5 + 0.04 * v for v in w]
    assert r.images.flatten().tolist() == pytest.approx(expected, abs=2e-2)


def test_assign_round_trips_through_fourier_and_colour_decorrelation():
    target = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    for kind in ("fft", "pixel"):
        p = fvis.param.image(6, 8, batch=2, kind=kind)
        p.assign(target)
        assert torch.allclose(p(), target, atol=1e-5)


def test_ball_refuses_what_it_cannot_project():
    model = _linear([1.0, 1.0, 1.0, 1.0])
    ball = Ball(torch.full((1, 2, 2), 0.5), 0.1)
    maco = fvis.param.image(2, channels=1, kind="maco")
    with pytest.raises(ValueError, match="MACO fixes the magnitude"):
        _render(model, ball, param=maco)
    with pytest.raises(ValueError, match=r"center \(1, 1, 2, 2\) does not match"):
        _render(model, ball, param=fvis.param.image(4, channels=1, kind="pixel"))
    with pytest.raises(ValueError, match="radius must be a positive"):
        Ball(torch.zeros(1, 2, 2), 0.0)
    with pytest.raises(ValueError, match="norm must be one of linf, l2"):
        Ball(torch.zeros(1, 2, 2), 0.1, "l1")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Ball(torch.full((1, 2, 2), 2.0), 0.1)


def test_adversarial_example_on_the_bundled_model(mnist_model, mnist_digits):
    images, labels = mnist_digits
    digit, label = images[0], int(labels[0])
    ball = Ball(digit, 0.15, "linf")
    r = fvis.render(
        mnist_model, -O.class_log_prob(label), ball=ball, transforms=None, steps=10, progress=False
    )
    assert ball.distance(r.images).item() <= 0.15 + 1e-6
    assert r.history[-1].item() > r.history[0].item()  # log p(label) went down
