"""A hard bound on how far an image may move from a start image ``x₀``: the ball
``{x : ‖x[b] − x₀[b]‖ ≤ ε}`` per batch item, in image units ([0, 1], before the model's
normalization), onto which :func:`fvis.render` projects the image after every optimizer
step (projected gradient ascent, as PGD for adversarial examples, Madry et al. 2018;
seed 004: adversarial examples start from an image and may change it only a little):

* ``"linf"``: ``x ← x₀ + clip(x − x₀, −ε, ε)`` (each pixel moves at most ε);
* ``"l2"``: ``x ← x₀ + (x − x₀) · min(1, ε / ‖x − x₀‖₂)``.

Both are the Euclidean projections onto their balls. Beside the soft pull
:func:`fvis.objectives.reference_l2`, which trades distance against the objective, the
ball is a guarantee: every image the model sees and the result stay inside it.

>>> ball = Ball(image[0], 0.1, "linf")                  # image[0]: (1, 28, 28) in [0, 1]
>>> r = fvis.render(model, O.class_log_prob(8), ball=ball, transforms=None, steps=8)
>>> bool(((r.images[0] - image[0]).abs() <= 0.1 + 1e-6).all())
True
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NORMS", "Ball"]

NORMS = ("linf", "l2")


class Ball:
    """The ball of ``radius`` ε around ``center`` ((C, H, W) or (B, C, H, W) in [0, 1])
    in the ``norm`` ``"linf"`` or ``"l2"`` (module docstring)."""

    def __init__(self, center, radius: float, norm: str = "linf"):
        c = torch.as_tensor(center).detach().float().cpu()
        if c.dim() == 3:
            c = c.unsqueeze(0)
        if c.dim() != 4:
            raise ValueError(
                f"the ball's center must be an image (C, H, W) or (B, C, H, W), not "
                f"{tuple(c.shape)}"
            )
        if not torch.isfinite(c).all() or c.min() < 0 or c.max() > 1:
            raise ValueError("the ball's center must be an image in [0, 1] (before normalization)")
        if not (isinstance(radius, int | float) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"the ball's radius must be a positive number, not {radius!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
        self.center, self.radius, self.norm = c, float(radius), norm

    def __repr__(self) -> str:
        return f"Ball({self.norm}, ε={self.radius:g}, center {tuple(self.center.shape)})"

    def distance(self, images: torch.Tensor) -> torch.Tensor:
        """``‖x[b] − x₀[b]‖`` in the ball's norm, ``(B,)``."""
        d = (images - self._center_for(images)).flatten(1)
        return d.abs().amax(1) if self.norm == "linf" else d.norm(dim=1)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The nearest point of the ball to each image, (B, C, H, W)."""
        c = self._center_for(images)
        d = images - c
        if self.norm == "linf":
            d = d.clamp(-self.radius, self.radius)
        else:
            n = d.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))
            d = d * (self.radius / n.clamp_min(1e-30)).clamp(max=1.0)
        return c + d

    def start(self, input_size, batch: int = 1, **options) -> nn.Module:
        """:func:`fvis.param.for_input` starting at the center (``options`` as for
        :func:`fvis.param.image`); ``max(batch, B)`` items for a center of B images."""
        from fvis.param import for_input

        n = max(batch, self.center.shape[0])
        self._check_shape((n, *input_size))
        return for_input(input_size, n, init=self.center, **options)

    def check(self, param: nn.Module) -> None:
        """Refuse a parameterization that cannot be set to a projected image, or whose
        images do not match the center's shape."""
        if not getattr(param, "assignable", False):
            raise ValueError(
                f"a hard ball projects the image after each step and writes it back, which "
                f"{type(param).__name__} cannot do (MACO fixes the magnitude, a CPPN or a "
                "generator has no pixels); use fvis.param.image(kind='fft' or 'pixel'), or "
                "the soft pull objectives.reference_l2"
            )
        with torch.no_grad():
            self._center_for(param())

    @torch.no_grad()
    def project_(self, param: nn.Module) -> None:
        """Project the parameterization's current images onto the ball, in place."""
        param.assign(self.project(param()))

    def _check_shape(self, shape) -> None:
        c = tuple(self.center.shape)
        if len(shape) != 4 or c[1:] != tuple(shape[1:]) or c[0] not in (1, shape[0]):
            raise ValueError(
                f"the ball's center {c} does not match the images {tuple(shape)}; give the "
                "start image at the rendered size and batch"
            )

    def _center_for(self, images: torch.Tensor) -> torch.Tensor:
        self._check_shape(images.shape)
        return self.center.to(device=images.device, dtype=images.dtype)
