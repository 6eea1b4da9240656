"""Generator priors: networks that map a code to an image, for activation maximization
in code space (:mod:`fvis.codespace`). Imported as ``fvis.generators``.

A generator is any ``nn.Module`` mapping a code batch ``(N, *code_shape)`` to images
``(N, C, H, W)``, with a declared interface, :class:`GeneratorInfo`, attached as
``generator.fvis_generator``: the code shape, the prior codes are drawn from, bounds on
the code (measured from real data where an encoder allows), the output range and the
resolution. It may also have an ``encode(images) -> codes`` method (images in [0, 1] at
its resolution), an approximate inverse used to measure bounds and by PPGN's prior term,
and a *sampling prior* fitted to the encoded training data (:mod:`fit_prior`: a
Gaussian mixture), which :meth:`GeneratorInfo.sample` draws from: a VAE's codes of real
images are not ``N(0, I)``, and sampling that Gaussian gives many shapes between digits.

======================  =============================================================
name                    generator
======================  =============================================================
``mnist``               VAE-GAN trained on the bundled MNIST digits (16-d code, 28×28
                        grey); weights in ``generators/weights/mnist.pt``, model card
                        ``generators/MNIST_GAN.md``, made by ``train_mnist_gan.py``
``PATH.pt``             a checkpoint written by ``train_mnist_gan.py --out PATH.pt``
                        (your own data; see the model card's "Train your own")
======================  =============================================================

>>> g = load("mnist")
>>> g.fvis_generator.code_shape, g.fvis_generator.size
((16,), (1, 28, 28))
>>> g(torch.zeros(1, 16)).shape
torch.Size([1, 1, 28, 28])
>>> g(g.fvis_generator.sample(8, torch.Generator().manual_seed(0))).shape  # random digits
torch.Size([8, 1, 28, 28])

Your own generator: ``declare(my_net, code_shape=(128,), size=(3, 64, 64),
output_range=(-1, 1))`` attaches the interface; it then works everywhere a bundled one
does (:class:`fvis.codespace.GeneratorParam`, :func:`fvis.codespace.maximize`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BUNDLED",
    "WEIGHTS_DIR",
    "GeneratorInfo",
    "available",
    "code_stats",
    "declare",
    "info",
    "load",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED = {"mnist": "mnist.pt"}  # name -> weight file in WEIGHTS_DIR


@dataclass(frozen=True, eq=False)
class GeneratorInfo:
    """The declared interface of a generator.

    ``code_shape``: shape of one code, without batch. ``prior``: the distribution codes
    are drawn from for random starts, ``"normal"`` (``mean + std·N(0, 1)``) or
    ``"uniform"`` (uniform in ``[low, high]``). ``mean``/``std``: per-element statistics
    of the codes (tensors of ``code_shape``, or ``None`` for 0 and 1). ``low``/``high``:
    per-element bounds the code is clipped to (tensors, or ``None`` for no clipping).
    ``radius``: optional bound on ``‖code − mean‖₂``. ``output_range``: the range of
    the generator's images, mapped to [0, 1] by the adapters. ``size``: ``(C, H, W)``
    of its images. ``bounds_from``: where the bounds came from, in words.
    ``mixture``: optional sampling prior fitted to encoded real data (see
    :mod:`fvis.generators.fit_prior`), ``{"weights" (K,), "means" (K, *code_shape
    flattened), "scale_tril" (K, D, D)}`` of a Gaussian mixture; when declared,
    :meth:`sample` draws from it (``prior``, ``mean`` and ``std`` still define the code
    decay, PPGN's Gaussian score and the starting codes of code-space search).
    """

    code_shape: tuple[int, ...]
    size: tuple[int, int, int]
    output_range: tuple[float, float] = (0.0, 1.0)
    prior: str = "normal"
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    radius: float | None = None
    bounds_from: str = ""
    name: str = ""
    extra: dict = field(default_factory=dict)
    mixture: dict | None = None

    def __post_init__(self):
        if self.prior not in ("normal", "uniform"):
            raise ValueError(f"prior must be 'normal' or 'uniform', not {self.prior!r}")
        if self.prior == "uniform" and (self.low is None or self.high is None):
            raise ValueError("a uniform prior needs low and high bounds")
        lo, hi = self.output_range
        if not hi > lo:
            raise ValueError(f"output_range must be (low, high) with high > low, not {lo, hi}")
        if self.mixture is not None:
            d = math.prod(self.code_shape)
            k = len(self.mixture["weights"])
            shapes = (self.mixture["means"].shape, self.mixture["scale_tril"].shape)
            if shapes != ((k, d), (k, d, d)):
                raise ValueError(
                    f"mixture of {k} components needs means ({k}, {d}) and scale_tril "
                    f"({k}, {d}, {d}), not {tuple(shapes[0])} and {tuple(shapes[1])}"
                )

    def with_(self, **changes) -> GeneratorInfo:
        return replace(self, **changes)

    def stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` as tensors of ``code_shape`` on ``like``'s device and dtype."""
        kw = {"dtype": like.dtype, "device": like.device}
        mean = self.mean.to(**kw) if self.mean is not None else torch.zeros(self.code_shape, **kw)
        std = self.std.to(**kw) if self.std is not None else torch.ones(self.code_shape, **kw)
        return mean, std

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device=None,
        scale: float = 1.0,
        mixture: bool | None = None,
    ) -> torch.Tensor:
        """``n`` codes from the prior, ``(n, *code_shape)``, clipped to the bounds: from the
        fitted sampling prior ``mixture`` when declared (``mixture=None``/``True``), each
        code shrunk by ``scale`` towards its component's mean (truncation), else (or with
        ``mixture=False``) from ``prior``, shrunk by ``scale`` towards ``mean``. Drawn on
        the CPU from ``generator`` so a seed gives the same codes on any device."""
        ref = torch.zeros((), device=device)
        mean, std = self.stats(ref)
        shape = (n, *self.code_shape)
        if mixture and self.mixture is None:
            raise ValueError("this generator declares no sampling mixture (see fit_prior)")
        if self.mixture is not None and mixture is not False:
            m = self.mixture
            comp = torch.multinomial(m["weights"].float(), n, replacement=True, generator=generator)
            eps = torch.randn(n, m["means"].shape[1], generator=generator)
            z = m["means"][comp] + scale * (m["scale_tril"][comp] @ eps[..., None])[..., 0]
            return self.clip(z.view(shape).to(ref.device))
        if self.prior == "normal":
            z = torch.randn(shape, generator=generator).to(ref.device)
            z = mean + scale * std * z
        else:
            u = torch.rand(shape, generator=generator).to(ref.device)
            lo, hi = self.low.to(ref.device), self.high.to(ref.device)
            z = mean + scale * (lo + (hi - lo) * u - mean)
        return self.clip(z)

    def clip(self, z: torch.Tensor) -> torch.Tensor:
        """Project codes ``(N, *code_shape)`` onto the bounds: the ball of ``radius``
        around ``mean`` (if declared), then the box ``[low, high]`` (if declared)."""
        if self.radius is not None:
            mean, _ = self.stats(z)
            d = z - mean
            norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.radius / norm).clamp(max=1.0)
            z = mean + d * factor.view(-1, *([1] * len(self.code_shape)))
        if self.low is not None or self.high is not None:
            lo = self.low.to(z) if self.low is not None else None
            hi = self.high.to(z) if self.high is not None else None
            z = torch.clamp(z, lo, hi)
        return z

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """The generator's images, in ``output_range``, → [0, 1] (clamped)."""
        lo, hi = self.output_range
        if (lo, hi) != (0.0, 1.0):
            images = (images - lo) / (hi - lo)
        return images.clamp(0.0, 1.0)


def declare(
    generator: nn.Module,
    *,
    code_shape,
    size,
    output_range=(0.0, 1.0),
    prior: str = "normal",
    mean=None,
    std=None,
    low=None,
    high=None,
    radius: float | None = None,
    bounds_from: str = "declared",
    name: str = "",
    mixture: dict | None = None,
) -> nn.Module:
    """Attach a :class:`GeneratorInfo` to ``generator`` (as ``generator.fvis_generator``)
    and return it. ``code_shape`` is an int or a tuple; ``size`` is ``(C, H, W)`` or
    ``(H, W)`` (one channel). Bounds may be numbers or tensors of ``code_shape``.
    ``mixture``: a sampling prior, e.g. ``fvis.generators.fit_prior.fit_prior(encode,
    images)`` (optional)."""
    code_shape = (code_shape,) if isinstance(code_shape, int) else tuple(code_shape)
    size = tuple(int(s) for s in size)
    if len(size) == 2:
        size = (1, *size)

    def tensor(v):
        if v is None:
            return None
        return torch.as_tensor(v, dtype=torch.float32).expand(code_shape).clone()

    generator.fvis_generator = GeneratorInfo(
        code_shape=code_shape,
        size=size,
        output_range=(float(output_range[0]), float(output_range[1])),
        prior=prior,
        mean=tensor(mean),
        std=tensor(std),
        low=tensor(low),
        high=tensor(high),
        radius=radius,
        bounds_from=bounds_from,
        name=name or type(generator).__name__,
        mixture=_mixture(mixture),
    )
    return generator


def _mixture(sampler: dict | None) -> dict | None:
    """The tensors of a stored sampling prior (:func:`fit_prior.fit_prior`'s dict)."""
    if sampler is None:
        return None
    return {k: torch.as_tensor(sampler[k], dtype=torch.float32) for k in _MIXTURE_KEYS}


_MIXTURE_KEYS = ("weights", "means", "scale_tril")


def info(generator: nn.Module) -> GeneratorInfo:
    """The generator's declared :class:`GeneratorInfo`; an error says how to declare one."""
    found = getattr(generator, "fvis_generator", None)
    if isinstance(found, GeneratorInfo):
        return found
    raise ValueError(
        f"{type(generator).__name__} has no declared generator interface. Declare it with "
        "fvis.generators.declare(generator, code_shape=(D,), size=(C, H, W), "
        "output_range=(lo, hi)), or load a bundled one: fvis.generators.load('mnist')."
    )


def available() -> list[str]:
    """Names of the bundled generators whose weights are present."""
    return [n for n, f in BUNDLED.items() if (WEIGHTS_DIR / f).exists()]


@torch.no_grad()
def code_stats(
    encode: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    quantile: float = 0.005,
    radius_quantile: float = 0.99,
    batch: int = 500,
) -> dict:
    """Code statistics measured on real data: encode ``images`` (N, C, H, W) and return
    ``{"mean", "std", "low", "high"}`` per code element (``low``/``high`` are the
    ``quantile`` and ``1 − quantile`` quantiles) and ``"radius"``, the
    ``radius_quantile`` quantile of ``‖z − mean‖₂``."""
    z = torch.cat([encode(images[i : i + batch]) for i in range(0, len(images), batch)])
    mean = z.mean(0)
    radius = torch.quantile((z - mean).flatten(1).norm(dim=1), radius_quantile)
    return {
        "mean": mean,
        "std": z.std(0),
        "low": torch.quantile(z, quantile, dim=0),
        "high": torch.quantile(z, 1.0 - quantile, dim=0),
        "radius": float(radius),
        "quantile": quantile,
        "radius_quantile": radius_quantile,
        "n": len(z),
    }


def _checkpoint_path(name: str | os.PathLike) -> Path:
    name = str(name)
    if name in BUNDLED:
        path = WEIGHTS_DIR / BUNDLED[name]
        if not path.exists():
            raise FileNotFoundError(
                f"Weights of the bundled generator {name!r} are missing: looked for {path}. "
                "Recreate them with `python -m fvis.generators.train_mnist_gan` (about 10 "
                "minutes on a CPU) or reinstall fvis."
            )
        return path
    path = Path(name)
    if path.suffix in (".pt", ".pth") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"No generator checkpoint at {path}.")
        return path
    raise ValueError(
        f"Unknown generator {name!r}. Bundled: {', '.join(BUNDLED)}; or give the path of a "
        "checkpoint written by `python -m fvis.generators.train_mnist_gan --out PATH.pt`."
    )


def load(name: str | os.PathLike = "mnist", *, device=None, encoder: bool = True) -> nn.Module:
    """Load a generator by bundled name or checkpoint path, in eval mode with gradients
    off for its weights, its :class:`GeneratorInfo` attached (bounds measured on its
    training data) and, if ``encoder``, its encoder (``generator.encode``)."""
    from fvis.generators.mnist_gan import Encoder, Generator

    path = _checkpoint_path(name)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("fvis_format") != 1 or "generator" not in ckpt:
        raise ValueError(f"{path} is not a generator checkpoint written by train_mnist_gan.py.")
    cfg = ckpt["config"]
    gen = Generator(cfg["code_dim"], cfg["channels"], cfg["size"], cfg["width"])
    gen.load_state_dict(ckpt["generator"])
    if encoder and "encoder" in ckpt:
        enc = Encoder(cfg["code_dim"], cfg["channels"], cfg["size"], cfg["enc_width"])
        enc.load_state_dict(ckpt["encoder"])
        gen.encoder = enc
    c = ckpt["code"]
    gen.fvis_generator = GeneratorInfo(
        code_shape=(cfg["code_dim"],),
        size=(cfg["channels"], cfg["size"], cfg["size"]),
        output_range=(0.0, 1.0),
        prior="normal",
        mean=c["mean"],
        std=c["std"],
        low=c["low"],
        high=c["high"],
        radius=c["radius"],
        bounds_from=(
            f"encoder means of {c['n']} training images: {100 * c['quantile']:g}–"
            f"{100 - 100 * c['quantile']:g} percentiles per element, radius the "
            f"{100 * c['radius_quantile']:g}th percentile of the distance to the mean"
        ),
        name=ckpt.get("name", str(name)),
        extra={
            "train": ckpt.get("train", {}),
            "metrics": ckpt.get("metrics", {}),
            "sampler": {k: v for k, v in ckpt.get("sampler", {}).items() if k not in _MIXTURE_KEYS},
        },
        mixture=_mixture(ckpt.get("sampler")),
    )
    gen.eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen.to(device) if device is not None else gen
