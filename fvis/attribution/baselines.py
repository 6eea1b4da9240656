"""Baselines for Integrated Gradients, DeepLIFT and the quality measures (Sturmfels et al.,
Distill 2020), and the seeded generators their random draws use.

Baselines are model inputs (normalized), built per channel from the valid range
``[lo_c, hi_c]`` that images in [0, 1] map to (``model.fvis_info.valid_range``):

* ``"zero"`` or ``"black"``: the black image, ``lo_c`` everywhere (0 without
  normalization; note: *not* the all-zero model input, which is the mean image).
* ``"blur"``: the input blurred by a Gaussian of ``sigma`` px (default: image side / 16).
* ``"uniform"`` (random): ``U(lo_c, hi_c)`` per element.
* ``"gaussian"`` (random): ``clip(x + N(0, (sigma · (hi_c − lo_c))²), lo_c, hi_c)``,
  ``sigma`` = 0.25.
* ``"max_distance"``: per element the valid value farthest from the input, ``hi_c`` where
  ``x < (lo_c + hi_c) / 2`` else ``lo_c`` (the valid image at the largest L1 distance).
* a number: that constant, in model-input units.
* a tensor broadcastable to the inputs; with one more leading dimension, several baselines.
* a callable ``fn(inputs, generator) -> tensor`` like the inputs (treated as random).

:func:`baseline` builds one with parameters (``baseline("blur", sigma=3)``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from fvis.errors import check_finite_tensor, check_int
from fvis.models.metadata import ModelInfo
from fvis.transforms import gaussian_blur

__all__ = ["RANDOM_BASELINES", "baseline", "generator", "make_baselines", "rand", "valid_range"]

RANDOM_BASELINES = ("uniform", "gaussian")


def generator(seed: torch.Generator | int | None, device=None) -> torch.Generator:
    """A ``torch.Generator``: the one given, or a new CPU one seeded with ``seed``
    (an unseeded one for ``None``). Noise drawn on the CPU is reproducible on any device."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def rand(kind: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``like``-shaped noise, ``"normal"`` or uniform, drawn from ``gen`` on its device
    (the CPU for reproducibility) and moved to ``like``'s."""
    draw = torch.randn if kind == "normal" else torch.rand
    t = draw(like.shape, generator=gen, device=gen.device, dtype=like.dtype)
    return t.to(like.device)


def baseline(name: str, **params) -> Callable:
    """A named baseline with parameters, as a callable ``fn(inputs, generator, info)``:
    ``baseline("blur", sigma=3.0)``, ``baseline("gaussian", sigma=0.1)``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(_BUILDERS)}")
    builder = _BUILDERS[name]

    def fn(x, gen, info):
        return builder(x, gen, info, **params)

    fn.random = name in RANDOM_BASELINES
    fn.__name__ = f"baseline_{name}"
    return fn


def valid_range(info: ModelInfo, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)`` of model inputs that images in [0, 1] map to, broadcastable
    to ``x``; ``(0, 1)`` for non-image inputs of a model without normalization."""
    if x.dim() == 4:
        return info.valid_range(x)
    if info.mean is None and info.std is None:
        return x.new_zeros(()), x.new_ones(())
    raise ValueError(
        f"inputs of shape {tuple(x.shape)} are not images (B, C, H, W), so the valid range of "
        "this normalized model is unknown; pass baselines as a number or a tensor"
    )


def _black(x, gen, info):
    lo, _ = valid_range(info, x)
    return lo.expand_as(x).clone()


def _blur(x, gen, info, sigma: float | None = None):
    # Default σ: 1/16 of the image side, 14 px at 224 px, 1.75 px at 28 px: strong enough
    # to remove edges, weak enough to keep the colour layout (Distill's "blurred" baseline).
    sigma = max(x.shape[-2:]) / 16 if sigma is None else sigma
    return gaussian_blur(x.detach(), sigma, border="replicate")


def _uniform(x, gen, info):
    lo, hi = valid_range(info, x)
    return lo + (hi - lo) * rand("uniform", x, gen)


def _gaussian(x, gen, info, sigma: float = 0.25):
    # σ as a fraction of the valid range; 0.25 is mid-range of the Distill article's slider.
    lo, hi = valid_range(info, x)
    noisy = x.detach() + sigma * (hi - lo) * rand("normal", x, gen)
    return torch.maximum(torch.minimum(noisy, hi), lo)


def _max_distance(x, gen, info):
    lo, hi = valid_range(info, x)
    return torch.where(x.detach() < (lo + hi) / 2, hi, lo)


_BUILDERS = {
    "zero": _black,
    "black": _black,
    "blur": _blur,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "max_distance": _max_distance,
}


def make_baselines(
    spec, inputs: torch.Tensor, info: ModelInfo, gen: torch.Generator | None = None, n: int = 1
) -> torch.Tensor:
    """Baselines ``(N, *inputs.shape)`` for ``spec`` (see the module docstring): ``n``
    draws of a random baseline, one of a fixed one (or those of a stacked tensor)."""
    check_int("n_baselines", n)
    return check_finite_tensor("baselines", _baselines(spec, inputs, info, gen, n))


def _baselines(spec, inputs, info, gen, n) -> torch.Tensor:
    x = inputs.detach()
    if isinstance(spec, str):
        spec = baseline(spec)
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return torch.full_like(x, float(spec)).unsqueeze(0)
    if isinstance(spec, torch.Tensor):
        b = spec.detach().to(device=x.device, dtype=x.dtype)
        if b.dim() == x.dim() + 1:
            return b.expand(-1, *x.shape).clone()
        try:
            return b.expand_as(x).clone().unsqueeze(0)
        except RuntimeError:
            raise ValueError(
                f"baseline of shape {tuple(b.shape)} does not broadcast to inputs of shape "
                f"{tuple(x.shape)}"
            ) from None
    if callable(spec):
        gen = gen if gen is not None else generator(None)
        random = getattr(spec, "random", True)
        draws = [_call(spec, x, gen, info) for _ in range(n if random else 1)]
        for d in draws:
            if d.shape != x.shape:
                raise ValueError(
                    f"baseline function returned shape {tuple(d.shape)}, "
                    f"inputs are {tuple(x.shape)}"
                )
        return torch.stack([d.detach().to(x) for d in draws])
    raise TypeError(
        "baselines must be a name (" + ", ".join(_BUILDERS) + "), a number, a tensor or a "
        f"callable, not {type(spec).__name__}"
    )


def _call(fn, x, gen, info):
    try:
        return fn(x, gen, info)
    except TypeError:  # a user function fn(inputs, generator)
        return fn(x, gen)
