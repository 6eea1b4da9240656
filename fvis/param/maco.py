"""MACO: magnitude-constrained Fourier images (Fel et al. 2023, "Unlocking feature
visualization for deeper networks with magnitude constrained optimization").

Only the phase ``φ`` of the spectrum is optimized; its magnitude ``M`` is that of natural
photographs, so every step is an image with natural-image statistics:

    z = σ · standardize(irfft2(M ⊙ e^{iφ}))      (per channel: zero mean, std σ)

``M`` and ``σ`` are measured by ``python scripts/natural_spectrum.py`` on the colour
photographs that ship with scikit-image (in the decorrelated logit space of
:mod:`fvis.param.color` for 3 channels, and on their luminance for any other count),
stored in ``natural_spectrum.pt`` at 128 × 128 and resampled in frequency to other sizes.
Nothing is downloaded. :func:`fvis.param.image` with ``param="maco"`` wraps ``z`` like
any spatial parameterization (colour decorrelation, sigmoid).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SPECTRUM_FILE = Path(__file__).with_name("natural_spectrum.pt")
CANONICAL = 128  # side of the stored spectrum


@functools.lru_cache(maxsize=1)
def _stored() -> dict[str, torch.Tensor]:
    if not SPECTRUM_FILE.exists():
        raise FileNotFoundError(
            f"{SPECTRUM_FILE} is missing; regenerate it with `python scripts/natural_spectrum.py` "
            "(needs scikit-image, no network)."
        )
    return torch.load(SPECTRUM_FILE, map_location="cpu", weights_only=True)


def natural_magnitude(channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, σ)``: the natural-image magnitude ``(C, H, W//2+1)`` at frequencies
    ``fftfreq(H) × rfftfreq(W)`` (DC set to 0) and the per-channel std ``(C,)``; 3
    channels: the decorrelated colour channels, otherwise luminance for each channel."""
    s = _stored()
    mag, std = s["magnitude"].float(), s["std"].float()  # (4, 128, 65): 3 colour + grey
    pick = [0, 1, 2] if channels == 3 else [3] * channels
    mag, std = mag[pick], std[pick]
    if (height, width) != (CANONICAL, CANONICAL):
        # log-magnitude sampled at the target frequencies (cycles/pixel, in [-½, ½] × [0, ½])
        grid_mag = torch.fft.fftshift(mag.clamp_min(1e-8).log(), dim=1)  # rows: −½ … ½
        fy = torch.fft.fftfreq(height)
        fx = torch.fft.rfftfreq(width)
        # stored row k (after the shift) is frequency (k − n/2)/n, column k is k/n;
        # grid_sample positions are normalized to [−1, 1] over the stored samples
        n = CANONICAL
        ys = (fy * n + n // 2) / (n - 1) * 2 - 1
        xs = fx * n / (n // 2) * 2 - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx, gy], -1).unsqueeze(0).expand(len(pick), -1, -1, -1)
        out = F.grid_sample(grid_mag.unsqueeze(1), grid, align_corners=True, padding_mode="border")
        mag = out.squeeze(1).exp()
    # |S(−k)| = |S(k)| on the columns rfft2 stores whole (as the phase is made odd there)
    neg = (-torch.arange(height)) % height
    cols = [0, width // 2] if width % 2 == 0 else [0]
    mag = mag.clone()
    mag[..., cols] = (mag[..., cols] + mag[..., neg, :][..., cols]) / 2
    mag[:, 0, 0] = 0.0  # zero mean: the image is centred on grey
    return mag, std


class MacoImage(nn.Module):
    """Phase-only Fourier image (see module docstring): parameter ``phase`` (B, C, H,
    W//2+1); ``forward`` → (B, C, H, W) with per-channel mean 0 and std ``σ_c``."""

    lr = 0.1  # radians per step with Adam

    def __init__(
        self,
        shape,
        generator: torch.Generator | None = None,
        init: torch.Tensor | None = None,
    ):
        super().__init__()
        b, c, h, w = shape
        if h * w < 4:
            raise ValueError(f"a MACO image needs at least 4 pixels, not {h}×{w}")
        self.size = (h, w)
        mag, std = natural_magnitude(c, h, w)
        self.register_buffer("magnitude", mag, persistent=False)
        self.register_buffer("std", std.view(1, c, 1, 1), persistent=False)
        if init is None:
            phase = (torch.rand((b, c, h, w // 2 + 1), generator=generator) * 2 - 1) * math.pi
        else:  # the phase of the starting image (its magnitude is replaced)
            phase = torch.angle(torch.fft.rfft2(init.float(), norm="ortho"))
        self.phase = nn.Parameter(phase.float())

    def _hermitian(self) -> torch.Tensor:
        """The phase with ``φ(−k) = −φ(k)`` on the columns ``rfft2`` stores whole (0, and
        W/2 for even W), so the spectrum is that of a real image and ``irfft2`` keeps
        every magnitude (otherwise it averages ``S(k)`` with ``S̄(−k)`` there)."""
        h, w = self.size
        cols = [0, w // 2] if w % 2 == 0 else [0]
        neg = (-torch.arange(h, device=self.phase.device)) % h
        phase = self.phase.clone()
        own = self.phase[..., cols]
        phase[..., cols] = (own - own[..., neg, :]) / 2
        return phase

    def forward(self) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self._hermitian())
        z = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        z = z - z.mean(dim=(2, 3), keepdim=True)
        return z / z.std(dim=(2, 3), keepdim=True).clamp_min(1e-8) * self.std
