"""Colour decorrelation: optimize in a decorrelated colour space, show in RGB.

Lucid's ImageNet colour correlation, the square root of the RGB covariance (from its
SVD), normalized by its largest column norm. A decorrelated pixel ``z`` becomes the
RGB pixel ``C z``.
"""

from __future__ import annotations

import torch

# sqrt of the ImageNet RGB covariance (Olah et al. 2017; lucid/optvis/param/color.py)
_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
COLOR_CORRELATION = _CORRELATION_SVD_SQRT / _CORRELATION_SVD_SQRT.norm(dim=0).max()


def decorrelate(z: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """``C z`` per pixel: (B, 3, H, W) decorrelated → (B, 3, H, W) correlated colour."""
    m = (COLOR_CORRELATION if matrix is None else matrix).to(z)
    return torch.einsum("ij,bjhw->bihw", m, z)


def correlate_inverse(x: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """``C⁻¹ x`` per pixel, the inverse of :func:`decorrelate`."""
    m = (COLOR_CORRELATION if matrix is None else matrix).to(torch.float64)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m).to(x), x)
