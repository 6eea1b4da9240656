"""Neuron groups: the factorization, its bound on the decision share, and the report."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_clean, snapshot

from fvis import objectives as O
from fvis.attribution.base import gradients
from fvis.groups import neuron_groups
from fvis.nmf import nmf


def test_nmf_recovers_an_exact_non_negative_factorization():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(60, 3, generator=g) @ torch.rand(3, 20, generator=g)
    s, d = nmf(a, 3, iters=500)
    assert (s >= 0).all() and (d >= 0).all()
    assert torch.allclose(d.norm(dim=1), torch.ones(3, dtype=d.dtype))
    err = ((s @ d) - a.double()).norm() / a.norm()
    assert err < 1e-3, err
    s2, d2 = nmf(a, 3, iters=500)  # seeded: the same factors
    assert torch.equal(s, s2) and torch.equal(d, d2)


def test_nmf_refuses_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        nmf(torch.randn(5, 4), 2)
    with pytest.raises(ValueError, match="between 1 and 4"):
        nmf(torch.rand(5, 4), 5)


def test_neuron_groups_of_a_digit(mnist_model, mnist_digits):
    before = snapshot(mnist_model)
    image = mnist_digits[0][:1]
    groups = neuron_groups(mnist_model, image, layer="relu3", k=4, steps=48)
    x = mnist_model.fvis_info.normalize(image)
    grad, act, _ = gradients(mnist_model, x, groups.target, "relu3")
    a, gm = act[0].detach().flatten(1).T.double(), grad[0].flatten(1).T.double()
    # shares sum to ⟨G, SD⟩, within ‖G‖·‖A − SD‖ of the layer's gradient × activation
    assert groups.total == pytest.approx(float((gm * a).sum()), rel=1e-6)
    bound = gm.norm() * groups.error * a.norm()
    assert abs(groups.scores.sum() - groups.total) <= bound + 1e-6
    assert (groups.scores[:-1] >= groups.scores[1:]).all()  # largest share first
    # close to the best rank-4 fit without the sign constraint (Eckart–Young)
    sv = torch.linalg.svdvals(a)
    assert groups.error <= 1.05 * float((sv[4:] ** 2).sum().sqrt() / sv.norm())
    assert (groups.amounts >= 0).all() and groups.amounts.shape == (4, 14, 14)
    assert groups.visualizations.shape == (4, 1, 28, 28)
    # each group's picture drives its own direction harder than the mean of the others'
    with torch.no_grad():
        vis = mnist_model.fvis_info.normalize(groups.visualizations)
        own = torch.stack(
            [
                O.direction("relu3", groups.directions[g], cossim_pow=1.0)(_acts(mnist_model, vis))
                for g in range(4)
            ]
        )  # (group direction, picture)
    assert (own.diagonal() > own.mean(1)).all()
    assert_clean(mnist_model, before)
    fig = groups.figure(size=56)
    assert fig.size[0] == 5 * 62 + 6


def _acts(model, x):
    from fvis import hooks

    return hooks.capture(model, x, ["relu3"])


def test_explain_cli_groups(tmp_path, capsys):
    from fvis.cli import main

    out = tmp_path / "groups.png"
    args = ["explain", "--model", "fvis:mnist", "--groups", "3", "--steps", "4", "-q", "-o"]
    assert main([*args, str(out)]) == 0
    assert out.stat().st_size > 0
    text = capsys.readouterr().out
    assert "group 2: share" in text and "3 groups" in text
