"""Gradient methods: saliency, sensitivity analysis, gradient × input.

Each reads ``∂f/∂x`` by plain autograd through the hook layer, so in-place ReLUs,
functional activations and reused modules need no special care. ``f`` is the
target's score (a class logit by default; any :class:`fvis.objectives.Objective`).
"""

from __future__ import annotations

import torch

from fvis.attribution.base import Attribution, Target, gradients, row_chunks

__all__ = [
    "Gradient",
    "GradientXInput",
    "Saliency",
    "Sensitivity",
]


class _GradientMethod(Attribution):
    """``attribute`` = ``combine(x, ∂f/∂x)`` per item, in chunks of ``internal_batch_size``."""

    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attribute(
        self, inputs: torch.Tensor, target=None, *, internal_batch_size: int | None = None
    ) -> torch.Tensor:
        """Attribution of shape ``inputs.shape``; ``internal_batch_size`` items per pass."""
        tgt = Target(self.model, inputs, target)
        parts = []
        for sl in row_chunks(inputs.shape[0], internal_batch_size):
            items = torch.arange(inputs.shape[0])[sl]
            g, _, _ = gradients(self.model, inputs[sl], tgt.rows(items))
            parts.append(self.combine(inputs[sl].detach(), g))
        return torch.cat(parts)


class Gradient(_GradientMethod):
    """The signed gradient ``∂f/∂x`` (Simonyan et al. 2014). Shape of the inputs."""

    def combine(self, x, grad):
        return grad


class Saliency(_GradientMethod):
    """Gradient saliency ``|∂f/∂x|`` per element (Simonyan et al. 2014; the absolute
    gradient, as captum's ``Saliency``). Shape of the inputs, values ≥ 0."""

    def combine(self, x, grad):
        return grad.abs()


class Sensitivity(_GradientMethod):
    """Sensitivity analysis ``R_i = (∂f/∂x_i)²`` (Montavon et al. 2017, §3.1): which
    inputs make ``f`` change most, not what makes it large. Shape of the inputs, ≥ 0;
    ``Σ_i R_i = ‖∇f‖²``."""

    def combine(self, x, grad):
        return grad.pow(2)


class GradientXInput(_GradientMethod):
    """Gradient × input ``R_i = x_i · ∂f/∂x_i``: simple Taylor decomposition at the root
    ``x̃ = 0`` (Montavon et al. 2017, §3.2; Shrikumar et al. 2016). ``x`` is the model
    input, so for a normalized model the root 0 is the dataset-mean image. Exact
    (``Σ R = f(x)``) for a bias-free ReLU network. Shape of the inputs."""

    def combine(self, x, grad):
        return x * grad
