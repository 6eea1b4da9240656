"""Architectures of the generator priors fvis trains: a VAE-GAN (Larsen et al. 2016).

Three small convolutional networks, sized for an image of ``channels`` × ``size`` ×
``size`` where ``size`` is ``base`` · 2^k with ``base`` ≤ 7 (28 = 7·4, 32 = 4·8,
64 = 4·16):

* :class:`Generator` — code ``z`` (N, D) → image (N, C, S, S) in [0, 1] (sigmoid).
  This is the prior fvis searches in; the only network needed after training.
* :class:`Encoder` — image → posterior mean and log-variance of ``z`` (N, D) each.
  Used in training, to measure code bounds on real data, and by the PPGN-style
  prior term of :func:`fvis.codespace.maximize` (``z → G(z) → E(G(z))``).
* :class:`Discriminator` — image → real/fake logit (N,) and its last hidden features,
  used for the adversarial loss and the feature (perceptual) loss. Training only.

Upsampling is nearest-neighbour + 3×3 convolution (no transposed convolutions, so no
checkerboard artefacts); normalization is GroupNorm, which acts on each sample alone,
so a generator behaves the same in train and eval mode and for any batch size.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _levels(size: int) -> tuple[int, int]:
    """``(base, k)`` with ``size == base * 2**k``, ``base <= 7`` and ``k >= 1``."""
    base, k = size, 0
    while base > 7 or k == 0:
        if base % 2:
            raise ValueError(
                f"size {size} must be base·2^k with base ≤ 7 (e.g. 28, 32, 56, 64); got {size}"
            )
        base, k = base // 2, k + 1
    return base, k


class Generator(nn.Module):
    """Code (N, D) → image (N, C, S, S) in [0, 1].

    ``width`` channels at the coarsest ``base``×``base`` grid, halved at each of the
    ``k`` upsamplings (at least 16).
    """

    def __init__(self, code_dim: int = 16, channels: int = 1, size: int = 28, width: int = 128):
        super().__init__()
        base, k = _levels(size)
        self.code_dim, self.channels, self.size, self.width = code_dim, channels, size, width
        self.base = base
        self.fc = nn.Sequential(nn.Linear(code_dim, width * base * base), nn.ReLU())
        blocks: list[nn.Module] = []
        c = width
        for _ in range(k):
            c_out = max(c // 2, 16)
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c_out, 3, padding=1),
                nn.GroupNorm(min(8, c_out // 4), c_out),
                nn.ReLU(),
            ]
            c = c_out
        blocks += [nn.Conv2d(c, channels, 3, padding=1), nn.Sigmoid()]
        self.up = nn.Sequential(*blocks)
        self.encoder: nn.Module | None = None  # fvis.generators.load sets the trained Encoder

    def forward(self, z):
        h = self.fc(z).view(z.shape[0], self.width, self.base, self.base)
        return self.up(h)

    def encode(self, x):
        """Images (N, C, S, S) in [0, 1] → codes (N, D): the encoder's posterior mean."""
        if self.encoder is None:
            raise ValueError("This generator was loaded without its encoder (encoder=False).")
        return self.encoder(x)[0]


def _down(channels: int, size: int, width: int, sn: bool) -> tuple[nn.Sequential, int]:
    """Strided 4×4 convolutions from ``size`` down to ``base``; returns (net, features)."""
    base, k = _levels(size)
    wrap = spectral_norm if sn else (lambda m: m)
    layers: list[nn.Module] = []
    c_in, c = channels, max(width // 2 ** (k - 1), 16)
    for _ in range(k):
        layers += [wrap(nn.Conv2d(c_in, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        c_in, c = c, c * 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c_in * base * base


class Encoder(nn.Module):
    """Image (N, C, S, S) in [0, 1] → ``(mu, logvar)`` of the code posterior, (N, D) each."""

    def __init__(self, code_dim: int = 16, channels: int = 1, size: int = 28, width: int = 64):
        super().__init__()
        self.features, n = _down(channels, size, width, sn=False)
        self.head = nn.Linear(n, 2 * code_dim)

    def forward(self, x):
        mu, logvar = self.head(self.features(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)


class Discriminator(nn.Module):
    """Image (N, C, S, S) in [0, 1] → ``(logit (N,), features (N, F))``; spectral norm on
    every layer (Miyato et al. 2018) keeps the adversarial game stable on small data."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64):
        super().__init__()
        self.features, n = _down(channels, size, width, sn=True)
        self.head = spectral_norm(nn.Linear(n, 1))

    def forward(self, x):
        f = self.features(x)
        return self.head(f).squeeze(1), f
