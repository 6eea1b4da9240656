"""CPPN images (Mordvintsev et al. 2018, "Differentiable image parameterizations", §4):
each pixel's colour is a small network of its coordinates,

    a₀ = (x, y) ∈ [−√3, √3]²,   aₗ = φ(Wₗ aₗ₋₁ + bₗ),   image = sigmoid(W_out a_L + b_out)

with Lucid's composite activation ``φ(t) = [atan(t)/0.67, atan(t)²/0.6]`` (both halves
of roughly unit variance), hidden weights ~ N(0, 1/fan-in) and a zero output layer (a
grey start). One network per batch item, all evaluated at once. The image is a function
of continuous coordinates, so :meth:`CPPN.forward` samples it at any size after
optimization (``param(512, 512)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _phi(t: torch.Tensor) -> torch.Tensor:
    a = torch.atan(t)
    return torch.cat([a / 0.67, a * a / 0.6], dim=1)


class CPPN(nn.Module):
    """A batch of CPPNs (see module docstring); ``forward(width, height)`` → (B, C, H, W)
    in [0, 1], at the construction size by default."""

    lr = 0.001  # Lucid uses 0.005 at 224 px; above 0.002 the sigmoid saturates on MNIST

    def __init__(
        self,
        width: int,
        height: int | None = None,
        *,
        channels: int = 3,
        batch: int = 1,
        layers: int = 8,
        hidden: int = 24,
        seed: int = 0,
    ):
        super().__init__()
        self.size = (width if height is None else height, width)
        g = torch.Generator().manual_seed(seed)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        fan_in = 2
        for _ in range(layers):
            w = torch.randn(batch, hidden, fan_in, generator=g) / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(batch, hidden, 1, 1)))
            fan_in = 2 * hidden
        self.out_weight = nn.Parameter(torch.zeros(batch, channels, fan_in))
        self.out_bias = nn.Parameter(torch.zeros(batch, channels, 1, 1))

    def forward(self, width: int | None = None, height: int | None = None) -> torch.Tensor:
        h, w = self.size if width is None else (width if height is None else height, width)
        r = math.sqrt(3.0)
        dev = self.out_weight.device
        ys = torch.linspace(-r, r, h, device=dev)
        xs = torch.linspace(-r, r, w, device=dev)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        a = torch.stack([gx, gy]).unsqueeze(0).expand(self.out_weight.shape[0], -1, -1, -1)
        for weight, bias in zip(self.weights, self.biases):
            a = _phi(torch.einsum("boi,bihw->bohw", weight, a) + bias)
        return torch.sigmoid(torch.einsum("boi,bihw->bohw", self.out_weight, a) + self.out_bias)
