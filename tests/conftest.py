"""Shared fixtures: the bundled model, tiny hand-set networks, and a clean-model check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fvis
from fvis.hooks import check_no_hooks

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def mnist_model():
    return fvis.load_model("fvis:mnist")


@pytest.fixture(scope="session")
def mnist_digits():
    from fvis.data import mnist

    return mnist("test")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_clean(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """No hooks left anywhere and every weight and buffer bit-identical to ``before``."""
    assert check_no_hooks(model) == []
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"
