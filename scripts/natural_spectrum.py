"""Measure the magnitude spectrum of natural photographs for MACO (:mod:`fvis.param.maco`).

    python scripts/natural_spectrum.py            # writes fvis/param/natural_spectrum.pt

Photographs: the colour photographs shipped inside the scikit-image wheel (astronaut,
chelsea, coffee, rocket; nothing is downloaded). From each, ``--crops`` random square
crops (side between 128 px and the short side, seeded) are resized to 128 × 128, mapped
to the space :func:`fvis.param.image` optimizes in (``logit`` of the pixel, then
``C⁻¹`` of the colour decorrelation; luminance for the grey channel), centred, and
transformed with ``rfft2(·, norm="ortho")``. Stored: the mean magnitude (4, 128, 65)
(3 decorrelated channels + grey) and the mean per-channel std (4,).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from fvis.io import atomic_save
from fvis.param.color import correlate_inverse
from fvis.param.maco import CANONICAL, SPECTRUM_FILE

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
_EPS = 1e-3


def crops(gen: torch.Generator, n: int) -> torch.Tensor:
    """(len(PHOTOS)·n, 3, 128, 128) RGB crops in [0, 1]."""
    import skimage.data

    out = []
    for name in PHOTOS:
        img = torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy())
        img = img.permute(2, 0, 1).float().div(255)
        h, w = img.shape[1:]
        for _ in range(n):
            side = int(torch.randint(CANONICAL, min(h, w) + 1, (1,), generator=gen))
            y = int(torch.randint(0, h - side + 1, (1,), generator=gen))
            x = int(torch.randint(0, w - side + 1, (1,), generator=gen))
            c = img[:, y : y + side, x : x + side].unsqueeze(0)
            out.append(F.interpolate(c, size=(CANONICAL, CANONICAL), mode="area"))
    return torch.cat(out)


def measure(rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    z = torch.logit(rgb.double().clamp(_EPS, 1 - _EPS))
    grey = torch.logit((rgb.double() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
                       .sum(1, keepdim=True).clamp(_EPS, 1 - _EPS))  # fmt: skip
    z = torch.cat([correlate_inverse(z), grey], 1)  # (N, 4, H, W)
    z = z - z.mean(dim=(2, 3), keepdim=True)
    mag = torch.fft.rfft2(z, norm="ortho").abs().mean(0)
    std = z.std(dim=(2, 3)).mean(0)
    return {"magnitude": mag.float(), "std": std.float()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crops", type=int, default=64, help="random crops per photograph")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    stats = measure(crops(torch.Generator().manual_seed(args.seed), args.crops))
    atomic_save(stats, SPECTRUM_FILE)
    print(f"wrote {SPECTRUM_FILE}: magnitude {tuple(stats['magnitude'].shape)}, "
          f"std {[round(v, 3) for v in stats['std'].tolist()]}")  # fmt: skip


if __name__ == "__main__":
    main()
