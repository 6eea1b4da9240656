"""captum's option names where they mean the same as fvis's, and clear refusals where not."""

from __future__ import annotations

import pytest
import torch

from fvis.attribution import DeepLift, Gradient, IntegratedGradients, Saliency, SmoothGrad

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def batch(mnist_model, mnist_digits):
    x = mnist_model.fvis_info.normalize(mnist_digits[0][:2])
    return x, mnist_model(x).argmax(1)


def test_same_meaning_same_numbers(mnist_model, batch):
    x, t = batch
    ig = IntegratedGradients(mnist_model)
    ours = ig.attribute(x, t, steps=8, method="riemann_trapezoid", return_delta=True)
    theirs = ig.attribute(
        x, t, n_steps=8, method="riemann_trapezoid", return_convergence_delta=True
    )
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    ref = torch.full_like(x[:1], -0.4242)  # the normalized black image
    dl = DeepLift(mnist_model, "rescale")
    assert torch.equal(dl.attribute(x, t, reference=ref), dl.attribute(x, t, baselines=ref))
    sg = SmoothGrad(mnist_model)
    assert torch.equal(
        sg.attribute(x, t, n=3, generator=1), sg.attribute(x, t, nt_samples=3, generator=1)
    )
    # SmoothGrad passes options on to the method it wraps, which reads captum's spelling
    wrapped = SmoothGrad(ig)
    assert torch.equal(
        wrapped.attribute(x, t, n=2, generator=0, steps=4),
        wrapped.attribute(x, t, n=2, generator=0, n_steps=4),
    )


def test_captum_call_gives_captum_numbers(mnist_model, batch):
    import captum.attr as captum

    x, t = batch
    # (not riemann_trapezoid: captum's weights sum to (n − 1)/n, fvis's to 1)
    kwargs = dict(target=t, n_steps=16, method="riemann_middle", baselines=torch.zeros_like(x))
    ours = IntegratedGradients(mnist_model).attribute(x, **kwargs)
    theirs = captum.IntegratedGradients(mnist_model).attribute(x, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_other_meanings_are_refused_by_name(mnist_model, batch):
    x, t = batch
    with pytest.raises(TypeError, match=r"noise= is the std as a fraction"):
        SmoothGrad(mnist_model).attribute(x, t, stdevs=0.1)
    with pytest.raises(TypeError, match="use Gradient for the signed one"):
        Saliency(mnist_model).attribute(x, t, abs=False)
    with pytest.raises(
        TypeError, match=r"Gradient.attribute has no n_steps= \(captum's spelling of steps=\)"
    ):
        Gradient(mnist_model).attribute(x, t, n_steps=4)
    with pytest.raises(TypeError, match="give steps= or captum's n_steps=, not both"):
        IntegratedGradients(mnist_model).attribute(x, t, steps=4, n_steps=4)
    with pytest.raises(TypeError, match="unexpected keyword"):
        Gradient(mnist_model).attribute(x, t, colour=1)  # not captum's either: Python's error
