"""SmoothGrad (Smilkov et al. 2017), SmoothGrad² and VarGrad (Adebayo et al. 2018),
wrapping any attribution method.

For ``n`` noisy copies ``x + ε_j`` of each input, with ``R`` the wrapped method:

* SmoothGrad   ``mean_j R(x + ε_j)``
* SmoothGrad²  ``mean_j R(x + ε_j)²``
* VarGrad      ``var_j R(x + ε_j)`` (population variance, ``mean R² − (mean R)²``)

**Noise semantics.** ``ε ~ N(0, σ_c²)`` independently per element, with
``σ_c = noise · (hi_c − lo_c)`` where ``[lo_c, hi_c]`` is the range of model inputs
that images in [0, 1] map to in channel ``c`` (``model.fvis_info.valid_range``). So
``noise=0.15`` is 15 % of the pixel range whatever the normalization (the paper's
``σ / (x_max − x_min)``, which it recommends at 10–20 %). It is *not* an absolute std in
model-input units (captum's ``stdevs``). ``relative_to="sample"`` takes zennit's
convention instead: ``σ_b = noise · (max_i x_b,i − min_i x_b,i)``, the range of each
sample's own values (all channels and positions), so a dark image gets less noise.
``clip=True`` clips the noisy copies to the valid range.

The target is resolved once on the clean inputs (``None`` → predicted class of ``x``),
so every noisy copy explains the same class.
"""

from __future__ import annotations

import torch
from torch import nn

from fvis.attribution.base import Attribution, Target, check_inputs, default_rows, row_chunks
from fvis.attribution.baselines import generator, rand, valid_range
from fvis.attribution.gradient import Gradient
from fvis.errors import check_finite, check_int

__all__ = ["SmoothGrad", "SmoothGradSquared", "VarGrad"]


class SmoothGrad(Attribution):
    """``mean_j R(x + ε_j)`` for the wrapped method ``R`` (see the module docstring).

    ``SmoothGrad(model)`` smooths the plain gradient; ``SmoothGrad(IntegratedGradients(m))``
    or ``SmoothGrad(GradCAM(m))`` any other method (its options pass through
    ``attribute``). Output: the wrapped method's output shape.

    >>> from fvis.attribution import Saliency
    >>> sg = SmoothGrad(Saliency(model)).attribute(x, target=3, n=50, noise=0.15, generator=0)
    """

    def __init__(self, method: Attribution | nn.Module):
        if isinstance(method, Attribution):
            self.method = method
        elif isinstance(method, nn.Module):
            self.method = Gradient(method)
        else:
            raise TypeError(
                f"{type(self).__name__} wraps an Attribution (e.g. Saliency(model)) or a "
                f"model, not {type(method).__name__}"
            )
        super().__init__(self.method.model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method!r})"

    def reduce(self, total: torch.Tensor, total_sq: torch.Tensor, n: int) -> torch.Tensor:
        return total / n

    squares = False  # whether reduce needs Σ R²

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        n: int = 25,
        noise: float = 0.15,
        relative_to: str = "valid",
        clip: bool = False,
        generator: torch.Generator | int | None = None,
        internal_batch_size: int | None = None,
        **options,
    ) -> torch.Tensor:
        """Average over ``n`` noisy copies of ``inputs`` (B, ...); ``noise`` is the noise
        std as a fraction of the valid input range, or of each sample's own value range
        with ``relative_to="sample"`` (module docstring); ``generator``: a
        ``torch.Generator`` or seed. ``internal_batch_size``: noisy copies per call of the
        wrapped method, default ``default_rows(B)``. ``options`` go to the wrapped method.
        """
        check_int("n", n)
        check_finite("noise (a fraction of the valid range)", noise, minimum=0)
        gen = _generator(generator)
        x = check_inputs(self.model, inputs, shape=False).detach()
        b = x.shape[0]
        tgt = Target(self.model, x, target, shape=False)  # the wrapped method checks shapes
        if relative_to == "valid":
            lo, hi = valid_range(self.info, x)
            sigma = noise * (hi - lo)
        elif relative_to == "sample":
            flat = x.reshape(b, -1)
            spread = flat.amax(1) - flat.amin(1)
            sigma = noise * spread.view(b, *[1] * (x.dim() - 1))
            lo, hi = valid_range(self.info, x) if clip else (None, None)
        else:
            raise ValueError(
                f"relative_to must be 'valid' (the valid input range) or 'sample' (each "
                f"sample's own range), not {relative_to!r}"
            )
        # Noise is drawn one copy of the batch at a time, in order, so the result does not
        # depend on internal_batch_size.
        copies: dict[int, torch.Tensor] = {}

        def noisy(j: int) -> torch.Tensor:
            if j not in copies:
                copies.clear()
                t = x + sigma * rand("normal", x, gen)
                copies[j] = torch.maximum(torch.minimum(t, hi), lo) if clip else t
            return copies[j]

        total = total_sq = None
        size = default_rows(b) if internal_batch_size is None else internal_batch_size
        for sl in row_chunks(n * b, size):
            r = torch.arange(sl.start, sl.stop)
            batch = torch.stack([noisy(int(i) // b)[int(i) % b] for i in r])
            out = self.method.attribute(batch, tgt.rows(r % b), **options)
            if isinstance(out, tuple):
                raise TypeError("the wrapped method returned a tuple; drop return_delta")
            out = out.detach().double()
            part = torch.zeros(b, *out.shape[1:], dtype=out.dtype, device=out.device)
            idx = (r % b).to(out.device)
            total = (0 if total is None else total) + part.index_add(0, idx, out)
            if self.squares:
                total_sq = (0 if total_sq is None else total_sq) + part.index_add(0, idx, out**2)
        return self.reduce(total, total_sq, n).to(inputs.dtype)


class SmoothGradSquared(SmoothGrad):
    """SmoothGrad²: ``mean_j R(x + ε_j)²`` (Hooker et al. 2019). Values ≥ 0."""

    squares = True

    def reduce(self, total, total_sq, n):
        return total_sq / n


class VarGrad(SmoothGrad):
    """VarGrad: ``var_j R(x + ε_j) = mean R² − (mean R)²`` over the noisy copies
    (Adebayo et al. 2018). Values ≥ 0."""

    squares = True

    def reduce(self, total, total_sq, n):
        mean = total / n
        return (total_sq / n - mean**2).clamp(min=0)


def _generator(seed) -> torch.Generator:
    return generator(seed)
