"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers")
for vision transformers with a class token.

For each attention call ``l`` of the forward pass (in execution order) with attention
probabilities ``P_l = softmax(q kᵀ/√d)`` (B, H, N, N), read by
:func:`fvis.hooks.attention_probabilities`:

    A_l = fuse_h P_l                           (B, N, N), fuse = mean | max | min over heads
    A_l[i, j] = 0 for the ⌊N · discard_ratio⌋ smallest j of each row i (j ≠ class token)
    Â_l = (1 − r) · A_l + r · I, rows renormalized to sum 1          (r = ``residual``)
    R = Â_L · … · Â_1                           (B, N, N)
    map = R[class token, patch tokens] on the patch grid             (B, 1, h, w)

``r = 0.5`` is the paper's account of the residual connection. The map is the share of
the class token's final representation that flows from each patch: non-negative, and
with ``discard_ratio = 0`` the patch entries plus the prefix tokens' sum to 1. It does not
depend on the class (``target`` is accepted and not used). jacobgil/vit-explain, the usual
implementation, drops the lowest entries of the whole flattened matrix and rescales the
map to max 1; here the lowest of each row are dropped and the map is not rescaled. The
class token is token 0, the patches follow the model's prefix tokens (class, distillation,
register tokens) in row-major order (:mod:`fvis.hooks.layouts`). Models without attention
(CNNs), without a class token, or whose attention is not over those tokens (Swin's
windows) are refused with an :class:`~fvis.hooks.UnsupportedOperation`.
"""

from __future__ import annotations

import torch

from fvis import hooks
from fvis.attribution.base import Attribution, check_inputs
from fvis.attribution.base import upsample as _upsample
from fvis.errors import check_finite
from fvis.hooks import Layout, UnsupportedOperation

__all__ = ["AttentionRollout", "rollout"]

_FUSE = {
    "mean": lambda p: p.mean(1),
    "max": lambda p: p.amax(1),
    "min": lambda p: p.amin(1),
}


def rollout(
    probabilities: list[torch.Tensor],
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    residual: float = 0.5,
) -> torch.Tensor:
    """``R = Â_L · … · Â_1`` (B, N, N) from attention probabilities ``P_l`` (B, H, N, N),
    first call first (module docstring); column 0 (the class token) is never discarded."""
    if head_fusion not in _FUSE:
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', not {head_fusion!r}")
    if not 0.0 <= check_finite("discard_ratio", discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), not {discard_ratio}")
    if not 0.0 <= check_finite("residual", residual) <= 1.0:
        raise ValueError(f"residual must be in [0, 1], not {residual}")
    r = None
    for p in probabilities:
        a = _FUSE[head_fusion](p.double())
        n = a.shape[-1]
        k = int(n * discard_ratio)
        if k:
            keep_cls = a.clone()
            keep_cls[..., 0] = float("inf")  # the class token's column is never dropped
            low = keep_cls.topk(k, dim=-1, largest=False).indices
            a = a.scatter(-1, low, 0.0)
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        a = (1.0 - residual) * a + residual * eye
        a = a / a.sum(-1, keepdim=True)
        r = a if r is None else a @ r
    return r


def _grid(model, x, n: int) -> Layout:
    """The token layout with a class token whose ``prefix + h·w`` is ``n``, or a refusal."""
    names = ("class_token", "cls_token")
    if not any(name.rpartition(".")[2] in names for name, _ in model.named_parameters()):
        raise UnsupportedOperation(
            f"attention rollout reads the class token's row; {type(model).__name__} has no "
            "class token (no cls_token / class_token parameter), e.g. a ViT with global "
            "average pooling. Use GradCAM or a gradient method."
        )
    tr = hooks.trace(model, x)
    for lay in tr.layouts.values():
        grid = lay.grid if lay.kind == "tokens" else None
        if grid and lay.prefix >= 1 and lay.prefix + grid[0] * grid[1] == n:
            return lay
    raise UnsupportedOperation(
        f"attention rollout needs attention over one class token and the patch grid; the "
        f"attention of {type(model).__name__} is over {n} tokens, which match no token "
        "layout with a class token (windowed attention, as in Swin, is not over the image's "
        "patches). Use GradCAM or a gradient method."
    )


class AttentionRollout(Attribution):
    """Attention rollout of a ViT with a class token (module docstring): a map
    ``(B, 1, h, w)`` on the patch grid, or ``(B, 1, H, W)`` with ``upsample=True``
    (``interpolate_mode`` ``"bilinear"`` or ``"nearest"``), as the CAM family returns.
    Options: ``head_fusion`` (``"mean"``, ``"max"``, ``"min"``), ``discard_ratio`` (0),
    ``residual`` (0.5). ``target`` is not used: rollout does not depend on the class."""

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        residual: float = 0.5,
        upsample: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> torch.Tensor:
        x = check_inputs(self.model, inputs).detach()
        probs = hooks.attention_probabilities(self.model, x)
        if not probs:
            raise UnsupportedOperation(
                f"attention rollout needs attention layers (softmax(q kᵀ) over tokens); "
                f"{type(self.model).__name__} runs none. Use GradCAM or a gradient method."
            )
        shapes = {tuple(p.shape[:1]) + tuple(p.shape[2:]) for p in probs}
        if len(shapes) != 1 or probs[0].shape[0] != x.shape[0]:
            raise UnsupportedOperation(
                f"attention rollout multiplies the attention of every block, which needs the "
                f"same (B, N, N) for each; {type(self.model).__name__} attends over "
                f"{sorted(shapes)} (windowed or pooled attention, as in Swin or MViT). Use "
                "GradCAM or a gradient method."
            )
        lay = _grid(self.model, x, probs[0].shape[-1])
        r = rollout(probs, head_fusion=head_fusion, discard_ratio=discard_ratio,
                    residual=residual)  # fmt: skip
        m = r[:, 0, lay.prefix :].reshape(x.shape[0], 1, *lay.grid).to(x.dtype)
        return _upsample(m, x.shape[-2:], interpolate_mode) if upsample else m
