"""Parameterizations: shapes, ranges, channels, start images, fitting a photograph, MACO's
fixed magnitude and the CPPN."""

from __future__ import annotations

import pytest
import torch

import fvis
from fvis import objectives as O
from fvis.param import COLOR_CORRELATION, CPPN, KINDS, decorrelate, image, maco
from fvis.param.color import correlate_inverse


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_shapes_and_range(kind, channels):
    p = image(17, 12, channels=channels, batch=2, kind=kind, sd=1.0)
    x = p()
    assert x.shape == (2, channels, 12, 17)
    assert x.min() >= 0 and x.max() <= 1
    if kind == "cppn":  # zero output layer: a grey start, as Lucid's
        assert torch.equal(x, torch.full_like(x, 0.5))
    else:
        assert x.std() > 0.01


def test_decorrelation_matrix_and_inverse():
    assert COLOR_CORRELATION.norm(dim=0).max().item() == pytest.approx(1.0)
    z = torch.randn(2, 3, 4, 5)
    assert torch.allclose(correlate_inverse(decorrelate(z)), z, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        image(8, channels=1, decorrelate=True)


@pytest.mark.parametrize("kind", ["fft", "pixel"])
def test_start_from_an_image_reproduces_it(kind):
    target = torch.rand(3, 10, 13) * 0.98 + 0.01
    p = image(13, 10, init=target, kind=kind, batch=2)
    assert torch.allclose(p()[1], target, atol=1e-5)


def test_unknown_kind_and_cppn_init_are_refused():
    with pytest.raises(ValueError, match="known: fft, pixel, maco, cppn"):
        image(8, kind="fourier")
    with pytest.raises(ValueError, match="CPPN cannot start from an image"):
        image(8, kind="cppn", init=torch.rand(3, 8, 8))


def test_same_seed_same_start_different_seed_different_start():
    assert torch.equal(image(16, seed=3)(), image(16, seed=3)())
    assert not torch.equal(image(16, seed=3)(), image(16, seed=4)())


def test_fourier_fits_a_photograph_within_1000_steps():
    """Lucid's parameterization test: fit a real photo to mean |error| < 0.01."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()[::8, ::8].copy()).permute(2, 0, 1).float() / 255
    target = photo.unsqueeze(0)  # (1, 3, 64, 64)
    p = image(64, kind="fft", decorrelate=True, seed=0)
    opt = torch.optim.Adam(p.parameters(), lr=0.05)
    for _ in range(1000):
        opt.zero_grad()
        loss = (p() - target).abs().mean()
        loss.backward()
        opt.step()
    err = (p() - target).abs().mean().item()
    assert err < 0.01, err


# ---------------------------------------------------------------- MACO
def test_maco_keeps_the_natural_magnitude_while_optimizing(mnist_model):
    """Only the phase moves: after rendering, |rfft2(z)| is still σ-scaled M, and each
    channel still has mean 0 and std σ."""
    p = image(28, channels=1, batch=2, kind="maco", seed=1)
    start = p().clone()
    r = fvis.render(mnist_model, O.one_per_item([O.class_logit(3), O.class_logit(7)]), p,
                    steps=20, transforms=None, progress=False)  # fmt: skip
    assert (r.history[-1] > r.history[0]).all() and not torch.allclose(p(), start)
    z = p.spatial().detach()
    assert torch.allclose(z.mean(dim=(2, 3)), torch.zeros(2, 1), atol=1e-5)
    assert torch.allclose(z.std(dim=(2, 3)), p.spatial.std.view(1, 1).expand(2, 1), atol=1e-5)
    got = torch.fft.rfft2(z, norm="ortho").abs()
    want = p.spatial.magnitude.expand_as(got)
    keep = want > 0  # all but DC, which is 0 in both
    assert (got[~keep] < 1e-5).all()
    ratio = (got / want.clamp_min(1e-12)).flatten(1)[:, keep[0].flatten()]
    assert torch.allclose(ratio, ratio.mean(1, keepdim=True), rtol=1e-4)  # one scale each


def test_maco_resamples_the_spectrum_by_frequency(monkeypatch):
    """A magnitude M(f) = exp(3|fy| + 5 fx) (log-linear between stored frequencies, and
    symmetric as a real image's) is sampled exactly at any size whose frequencies lie
    inside the stored grid (bilinear in log space is exact for it)."""
    n = maco.CANONICAL
    fy = torch.fft.fftfreq(n).view(-1, 1)
    fx = torch.fft.rfftfreq(n).view(1, -1)
    stored = torch.exp(3 * fy.abs() + 5 * fx).expand(4, -1, -1)
    monkeypatch.setattr(maco, "_stored", lambda: {"magnitude": stored, "std": torch.ones(4)})
    for h, w in [(64, 96), (33, 50), (n, n)]:
        mag, _ = maco.natural_magnitude(3, h, w)
        fh = torch.fft.fftfreq(h).view(-1, 1).abs()
        want = torch.exp(3 * fh + 5 * torch.fft.rfftfreq(w))
        want[0, 0] = 0.0  # DC removed: images are centred on grey
        assert torch.allclose(mag, want.expand(3, -1, -1), rtol=1e-4), (h, w)
    with pytest.raises(ValueError, match="at least 4 pixels"):
        image(1, kind="maco")


def test_maco_spectrum_is_the_one_the_script_measures():
    """The committed spectrum is reproduced by scripts/natural_spectrum.py (seed 0)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "natural_spectrum.py"
    spec = importlib.util.spec_from_file_location("natural_spectrum", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stats = script.measure(script.crops(torch.Generator().manual_seed(0), 64))
    stored = maco._stored()
    assert torch.allclose(stats["magnitude"], stored["magnitude"], rtol=1e-5)
    assert torch.allclose(stats["std"], stored["std"], rtol=1e-5)
    # natural images: energy falls with frequency (~1/f): low band ≫ high band
    mag = stored["magnitude"]
    assert mag[:, 1:4, 1:4].mean() > 10 * mag[:, 40:64, 40:64].mean()


# ---------------------------------------------------------------- CPPN
def test_cppn_is_resolution_free():
    """Sampled at 2w − 1 points, every other pixel is the w-point image, exactly."""
    p = CPPN(9, 7, channels=3, batch=2, seed=0)
    with torch.no_grad():
        for w in p.out_weight, p.out_bias:
            w.normal_(0, 1)  # leave the grey start
    small, big = p(), p(17, 13)
    assert small.shape == (2, 3, 7, 9) and big.shape == (2, 3, 13, 17)
    assert torch.allclose(big[..., ::2, ::2], small, atol=1e-6)
    assert small.std() > 0.05


def test_cppn_renders_with_its_own_learning_rate(mnist_model):
    seen = {}

    class Recording(torch.optim.Adam):
        def __init__(self, params, lr):
            seen["lr"] = lr
            super().__init__(params, lr=lr)

    p = image(28, channels=1, batch=1, kind="cppn", seed=0)
    r = fvis.render(mnist_model, O.class_logit(4), p, steps=40, transforms=None,
                    optimizer=Recording, progress=False)  # fmt: skip
    assert seen["lr"] == CPPN.lr == 0.001
    assert r.history[-1] > r.history[0] + 1.0
