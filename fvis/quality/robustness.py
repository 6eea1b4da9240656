"""Robustness of explanations: how they move when the input moves, and how well they
predict the effect of a perturbation.

* :func:`continuity` (Montavon et al. 2017, §5.1): ``max_{x′} ‖τR(x) − R(x′)‖₁ / ‖x − x′‖₂``
  over the translations ``x′ = τx`` of ``x`` by at most ``max_shift`` pixels: an
  explanation that moves with the image scores 0. Lower is better.
* :func:`infidelity` (Yeh et al. 2019; captum.metrics.infidelity):
  ``E_I[(Iᵀ R(x) − (f(x) − f(x − I)))²]`` over Gaussian perturbations ``I``. Lower is better.
* :func:`max_sensitivity` (Yeh et al. 2019; captum.metrics.sensitivity_max):
  ``max_δ ‖R(x + δ) − R(x)‖ / ‖R(x)‖`` over uniform ``δ`` in an L∞ ball. Lower is better.

``method`` arguments are :class:`fvis.attribution.base.Attribution` instances;
``options`` go to their ``attribute``. Every perturbed copy of the batch goes through the
model or the method in one call (rows: sample-major, ``row = s · B + item``).
"""

from __future__ import annotations

import torch
from torch import nn

from fvis.attribution.base import Attribution, Target, row_chunks, scores
from fvis.attribution.baselines import generator as make_generator
from fvis.attribution.baselines import make_baselines, valid_range
from fvis.models.metadata import info as model_info

__all__ = ["continuity", "infidelity", "max_sensitivity"]


def _translate(x: torch.Tensor, fill: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved ``dy`` px down and ``dx`` px right; uncovered pixels from ``fill``."""
    out = fill.clone()
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def continuity(
    method: Attribution,
    inputs: torch.Tensor,
    target=None,
    *,
    max_shift: int = 2,
    fill="black",
    align: bool = True,
    **options,
) -> torch.Tensor:
    """Continuity per item, ``(B,)``, ≥ 0, lower is better:
    ``C(x) = max_{x′} ‖τR(x) − R(x′)‖₁,Ω / ‖x − x′‖₂``.

    ``x′ = τx`` ranges over the translations of ``x`` by ``(dy, dx)``, ``0 < max(|dy|,
    |dx|) ≤ max_shift`` pixels (24 shifts for 2), uncovered pixels taken from the baseline
    ``fill`` (default the black image). ``R(x′)`` explains the same target as ``R(x)``
    (``None`` → predicted class of ``x``). ``align=True``: the explanation of the moved
    image is compared with the moved explanation ``τR(x)`` on ``Ω``, the pixels of ``x′``
    that come from ``x`` — a translation-equivariant explanation scores 0.
    ``align=False``: Montavon et al.'s literal Lipschitz quotient, ``R(x′)`` against
    ``R(x)`` position by position over the whole image. Units are those of the map:
    compare methods on normalized maps or by their ranking on the same inputs.
    """
    model = method.model
    x = inputs.detach()
    if x.dim() != 4:
        raise ValueError(f"continuity translates images (B, C, H, W), got {tuple(x.shape)}")
    b = x.shape[0]
    tgt = Target(model, x, target)
    base = make_baselines(fill, x, model_info(model), make_generator(0))[0]
    shifts = [
        (dy, dx)
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
        if (dy, dx) != (0, 0)
    ]
    if not shifts:
        raise ValueError(f"max_shift must be ≥ 1, not {max_shift}")
    moved = torch.cat([_translate(x, base, dy, dx) for dy, dx in shifts])  # (S·B, ...)
    rows = torch.cat([x, moved])
    items = torch.arange(rows.shape[0]) % b
    maps = method.attribute(rows, tgt.rows(items), **options).detach()
    r0, r = maps[:b], maps[b:].view(len(shifts), b, *maps.shape[1:])
    if align:
        if maps.shape[-2:] != x.shape[-2:]:
            raise ValueError("continuity(align=True) needs maps at the input's resolution")
        zero, one = torch.zeros_like(r0), torch.ones_like(r0)
        ref = torch.stack([_translate(r0, zero, dy, dx) for dy, dx in shifts])
        cover = torch.stack([_translate(one, zero, dy, dx) for dy, dx in shifts])
        num = ((r - ref) * cover).abs().flatten(2).sum(2)
    else:
        num = (r - r0).abs().flatten(2).sum(2)
    den = (moved.view(len(shifts), b, -1) - x.view(1, b, -1)).norm(dim=2)
    ratio = torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))
    return ratio.max(0).values


def infidelity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    target=None,
    *,
    n: int = 16,
    sigma: float = 0.1,
    normalize: bool = False,
    internal_batch_size: int | None = 256,
    generator: torch.Generator | int | None = 0,
) -> torch.Tensor:
    """Infidelity per item, ``(B,)``, ≥ 0, lower is better (Yeh et al. 2019, as
    ``captum.metrics.infidelity`` with its ``perturb_func`` returning ``I``, ``x − I``).

    ``INFD(R, x) = (1/n) Σ_s (a_s − d_s)²`` with ``a_s = Σ_i I_{s,i} R_i(x)`` and
    ``d_s = f(x) − f(x − I_s)``, ``f`` the target score (``None`` → predicted class).
    Pinned perturbation: ``I_s = sigma · (hi_c − lo_c) · ε_s``, ``ε`` standard normal drawn
    from ``generator`` in shape ``(n, B, C, H, W)`` (images; the valid range ``[lo_c,
    hi_c]`` of the model's inputs) or ``(n, *inputs.shape)`` with scale ``sigma``
    (non-images). ``normalize=True`` first rescales the explanation by the least-squares
    ``β = Σ_s a_s d_s / Σ_s a_s²`` (captum's ``normalize``): ``(1/n) Σ_s (β a_s − d_s)²``.
    ``maps`` must have the inputs' shape.
    """
    x = inputs.detach()
    r = maps.detach().to(x)
    if r.shape != x.shape:
        raise ValueError(f"maps of shape {tuple(r.shape)} must match inputs {tuple(x.shape)}")
    gen = make_generator(generator)
    eps = torch.randn((n, *x.shape), generator=gen, device=gen.device, dtype=x.dtype)
    eps = eps.to(x.device)
    if x.dim() == 4:
        lo, hi = valid_range(model_info(model), x)
        perturbation = sigma * (hi - lo) * eps
    else:
        perturbation = sigma * eps
    b = x.shape[0]
    tgt = Target(model, x, target)
    a = (perturbation * r).flatten(2).sum(2)  # (n, B)
    rows = (x - perturbation).flatten(0, 1)
    items = torch.arange(n * b) % b
    with torch.inference_mode():
        f0 = scores(model, x, tgt.all())[0]
        f = torch.cat(
            [
                scores(model, rows[sl], tgt.rows(items[sl]))[0]
                for sl in row_chunks(n * b, internal_batch_size)
            ]
        ).view(n, b)
    d = f0 - f
    if normalize:
        beta = (a * d).sum(0) / (a * a).sum(0)
        beta = torch.where(torch.isfinite(beta), beta, torch.zeros_like(beta))
        a = beta * a
    return ((a - d) ** 2).mean(0)


def max_sensitivity(
    method: Attribution,
    inputs: torch.Tensor,
    target=None,
    *,
    n: int = 10,
    radius: float = 0.02,
    generator: torch.Generator | int | None = 0,
    **options,
) -> torch.Tensor:
    """Max-sensitivity per item, ``(B,)``, ≥ 0, lower is better (Yeh et al. 2019, as
    ``captum.metrics.sensitivity_max`` with its default perturbation and norm).

    ``SENS(R, x) = max_s ‖R(x + δ_s) − R(x)‖_F / ‖R(x)‖_F`` (a zero ``‖R(x)‖`` counts as
    1, as in captum) with ``δ_s ~ U(−radius, radius)`` per element, drawn from
    ``generator`` in shape ``(n, *inputs.shape)``; ``R(x + δ)`` explains the target fixed
    on ``x`` (``None`` → predicted class). All ``(n + 1) · B`` rows go to ``method`` in
    one call (its own ``internal_batch_size`` option bounds the memory).
    """
    model = method.model
    x = inputs.detach()
    b = x.shape[0]
    gen = make_generator(generator)
    u = torch.rand((n, *x.shape), generator=gen, device=gen.device, dtype=x.dtype)
    delta = (2 * u - 1).to(x.device) * radius
    rows = torch.cat([x, (x + delta).flatten(0, 1)])
    tgt = Target(model, x, target)
    maps = method.attribute(rows, tgt.rows(torch.arange(rows.shape[0]) % b), **options).detach()
    r0, r = maps[:b].flatten(1), maps[b:].reshape(n, b, -1)
    norm0 = r0.norm(dim=1)
    norm0 = torch.where(norm0 == 0, torch.ones_like(norm0), norm0)
    return ((r - r0).norm(dim=2) / norm0).max(0).values
