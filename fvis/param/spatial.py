"""Spatial parameterizations: learnable tensors → an unconstrained image (B, C, H, W).

* pixel: the image itself.
* Fourier: a spectrum ``S`` (B, C, H, W//2+1, complex), scaled by ``1 / max(|f|, 1/max(H, W))^p``
  (``|f|`` in cycles per pixel; p = ``decay_power``, 1 in Lucid) and brought back with
  ``irfft2(scale · S, norm="ortho") / 4``. This is Lucid's ``fft_image``
  (``irfft(scale·√(HW)·S)/4`` with the 1/(HW) inverse is the same as the orthonormal one).
"""

from __future__ import annotations

import torch
from torch import nn

FFT_OUTPUT_SCALE = 4.0  # lucid divides the inverse FFT by 4


def _freq(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class PixelImage(nn.Module):
    """The image is the parameter: (B, C, H, W), initialized ~ N(0, sd²)."""

    def __init__(
        self,
        shape,
        sd: float = 0.01,
        generator: torch.Generator | None = None,
        init: torch.Tensor | None = None,
    ):
        super().__init__()
        raw = torch.randn(shape, generator=generator) * sd if init is None else init.clone()
        self.raw = nn.Parameter(raw.float())

    def forward(self) -> torch.Tensor:
        return self.raw

    @torch.no_grad()
    def assign(self, raw: torch.Tensor) -> None:
        """Make ``forward()`` return ``raw``."""
        self.raw.copy_(raw)

    @staticmethod
    def inverse(image: torch.Tensor) -> torch.Tensor:
        return image


class FourierImage(nn.Module):
    """A 1/f^p-scaled spectrum per channel (see module docstring); ``forward`` → (B, C, H, W)."""

    def __init__(
        self,
        shape,
        sd: float = 0.01,
        decay_power: float = 1.0,
        generator: torch.Generator | None = None,
        init: torch.Tensor | None = None,
    ):
        super().__init__()
        b, c, h, w = shape
        self.size = (h, w)
        scale = 1.0 / torch.clamp(_freq(h, w), min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale.float(), persistent=False)
        if init is None:
            spec = torch.randn((b, c, h, w // 2 + 1, 2), generator=generator) * sd
        else:
            spec = torch.view_as_real(self.spectrum_of(init.float()))
        self.spectrum = nn.Parameter(spec.float())

    def spectrum_of(self, raw: torch.Tensor) -> torch.Tensor:
        """The parameter value whose image is ``raw`` (B, C, H, W)."""
        s = torch.fft.rfft2(raw * FFT_OUTPUT_SCALE, norm="ortho")
        return s / self.scale.to(raw.device)

    @torch.no_grad()
    def assign(self, raw: torch.Tensor) -> None:
        """Make ``forward()`` return ``raw`` (B, C, H, W)."""
        self.spectrum.copy_(torch.view_as_real(self.spectrum_of(raw.to(self.spectrum.device))))

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(spec, s=self.size, norm="ortho") / FFT_OUTPUT_SCALE
