"""Layouts: which dimension of an activation holds the features, and where the grid is.

Every unit, map and layer listing in fvis means the *feature* dimension, whatever the
layout of the activation ``A`` (shapes with batch):

==========  ===================  =====================================================
layout      shape                features, spatial grid
==========  ===================  =====================================================
``NCHW``    (B, C, H, W)         dim 1, (H, W); also (B, C) vectors (no grid) and
                                 other ranks with the features at dim 1
``NHWC``    (B, H, W, C)         the last dim, (H, W): Swin stages, ConvNeXt blocks'
                                 permuted insides
``tokens``  (B, N, D)            the last dim; with a grid, ``N = prefix + h·w`` (a
                                 class token and the like first, then the patches in
                                 row-major order: ViT, DeiT, Hugging Face Swin)
==========  ===================  =====================================================

:meth:`Layout.to_grid` gives every layout as features-first ``(B, D, h, w)`` (tokens:
the patch tokens only, the prefix dropped), which is what the objectives and the CAM
family read; for tokens this is the ``reshape_transform`` pytorch-grad-cam users write
by hand.

Detection (:func:`detect`, run once per trace, in the order module calls finish) is
conservative; the first rule that applies decides:

1. the module itself: ``nn.Linear`` and ``nn.LayerNorm`` act on the last dim, so their
   output is channels-last (a ``LayerNorm2d``, whose name says 2d, is channels-first);
   convolutions, BatchNorm, pooling are channels-first; torchvision's ``Permute`` says
   by its ``dims``;
2. a container (``Sequential``, a block) takes the layout of the last module call inside
   it, if that call's output has the container's shape;
3. a shape-keeping module (GELU, Dropout, Identity, ...) takes the layout of the module
   call whose output it received;
4. otherwise channels-first.

A channels-last output of rank 3 (H, W, C) is ``NHWC``; of rank 2 (N, D) it is
``tokens``. A rank-2 output in a model with a patch embedding (a convolution with
``kernel_size == stride > 1``) is ``tokens`` with a grid when ``N − prefix = h·w`` with
``h : w = H : W`` of the input, where ``prefix`` is the model's declared number of
leading tokens (timm's ``num_prefix_tokens``, else one per ``class_token`` /
``cls_token`` / ``dist_token`` / ``distillation_token`` parameter) or 0. Where this is
wrong, declare the layout: ``ModelInfo(..., layouts={"blocks.3": "tokens"})`` (also
``"NCHW"``, ``"NHWC"``, or a :class:`Layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["KINDS", "Layout", "detect", "patch_grid", "prefix_tokens"]

KINDS = ("NCHW", "NHWC", "tokens")


@dataclass(frozen=True)
class Layout:
    """How an activation is laid out: ``kind`` one of :data:`KINDS`; for ``tokens``,
    ``prefix`` leading non-patch tokens and the patch ``grid`` (h, w), or ``None``."""

    kind: str = "NCHW"
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"layout must be one of {', '.join(KINDS)}, not {self.kind!r}")

    def __str__(self) -> str:
        if self.kind != "tokens":
            return self.kind
        if self.grid is None:
            return "tokens"
        lead = f"{self.prefix}+" if self.prefix else ""
        return f"tokens {lead}{self.grid[0]}×{self.grid[1]}"

    def features(self, shape: Sequence[int]) -> int:
        """The number of features of an activation of ``shape`` (without batch)."""
        if not shape:
            return 1
        return shape[0] if self.kind == "NCHW" else shape[-1]

    def spatial(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The positions' shape: ``(H, W)``, the token ``grid``, or ``()`` for none."""
        if self.kind == "NCHW":
            return tuple(shape[1:])
        if self.kind == "NHWC":
            return tuple(shape[:-1])
        return self.grid or ()

    def to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (B, ...) in this layout → features first: ``(B, D, h, w)`` for a grid,
        ``(B, D, N)`` for tokens without one; ``NCHW`` is returned as it is (a view).

        >>> import torch
        >>> t = torch.arange(15.0).view(1, 5, 3)  # a class token, then 2×2 patches of 3 dims
        >>> Layout("tokens", prefix=1, grid=(2, 2)).to_grid(t)[0, 0]  # dim 0 of each patch
        tensor([[ 3.,  6.],
                [ 9., 12.]])
        """
        if self.kind == "NCHW":
            return t
        if self.kind == "NHWC":
            return t.movedim(-1, 1)
        if self.grid is None:
            return t.transpose(1, 2)
        b, _, d = t.shape
        return t[:, self.prefix :].transpose(1, 2).reshape(b, d, *self.grid)


def parse(value, shape: Sequence[int], grid_of) -> Layout:
    """A declared layout: a :class:`Layout`, or ``"NCHW"`` / ``"NHWC"`` / ``"tokens"``
    (then ``grid_of(shape)`` finds the prefix and grid)."""
    if isinstance(value, Layout):
        return value
    if value == "tokens":
        if len(shape) != 2:
            raise ValueError(f"a tokens layout needs (N, D) activations, not {tuple(shape)}")
        return grid_of(shape) or Layout("tokens")
    if value == "NHWC" and len(shape) != 3:
        raise ValueError(f"an NHWC layout needs (H, W, C) activations, not {tuple(shape)}")
    return Layout(value)


def prefix_tokens(model: nn.Module) -> int | None:
    """Leading non-patch tokens the model declares (timm's ``num_prefix_tokens``, or
    its class / distillation token parameters), ``None`` if it declares none."""
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    names = ("class_token", "cls_token", "dist_token", "distillation_token")
    found = [p for name, p in model.named_parameters() if name.rpartition(".")[2] in names]
    return sum(p.shape[1] if p.dim() == 3 else 1 for p in found) if found else None


def _patch_embedding(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and max(m.stride) > 1
        for m in model.modules()
    )


def patch_grid(shape: Sequence[int], image: tuple[int, int], prefix: int | None) -> Layout | None:
    """``tokens`` with a grid if ``shape`` (N, D) is ``prefix + h·w`` patch tokens with
    ``h : w = H : W`` of the ``image`` (H, W) (``prefix`` ``None``: 0), else ``None``."""
    if len(shape) != 2:
        return None
    big_h, big_w = image
    for lead in dict.fromkeys((prefix or 0, 0)):
        n = shape[0] - lead
        for h in range(1, big_h + 1):
            if n > 0 and n % h == 0 and h * big_w == (n // h) * big_h:
                return Layout("tokens", lead, (h, n // h))
    return None


_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.GroupNorm,
)


def _own(module: nn.Module, shape: tuple[int, ...]) -> bool | None:
    """Rule 1: ``True`` channels-last, ``False`` channels-first, ``None`` unknown."""
    if isinstance(module, _FIRST):
        return False
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.LayerNorm):
        if "2d" in type(module).__name__.lower():
            return False
        return len(module.normalized_shape) == 1 and shape[-1] == module.normalized_shape[0]
    dims = getattr(module, "dims", None)
    if type(module).__name__ == "Permute" and isinstance(dims, Sequence):
        return {(0, 2, 3, 1): True, (0, 3, 1, 2): False}.get(tuple(dims))
    return None


def detect(
    model: nn.Module,
    finished: Sequence[tuple[str, int]],
    calls: dict[str, list],
    feeds: Sequence[tuple[tuple[str, int], tuple[str, int], int]],
    input_shape: tuple[int, ...],
) -> dict[tuple[str, int], Layout]:
    """The layout of every module call with a tensor output (module docstring)."""
    modules = dict(model.named_modules())
    source = {call: src for call, src, _ in feeds}
    image = tuple(input_shape[-2:]) if len(input_shape) == 3 else None
    tokens_ok = image is not None and _patch_embedding(model)
    prefix = prefix_tokens(model) if tokens_ok else None
    last: dict[tuple[str, int], bool] = {}  # call -> channels-last
    out: dict[tuple[str, int], Layout] = {}
    for i, (name, k) in enumerate(finished):
        shape = calls[name][k]
        if shape is None:
            continue
        own = _own(modules[name], shape) if name else None
        if own is None:  # rule 2: the last call inside this one with the same shape
            for inner, j in reversed(finished[:i]):
                if name == "" or inner.startswith(name + "."):
                    if calls[inner][j] == shape and (inner, j) in last:
                        own = last[inner, j]
                    break
        if own is None and source.get((name, k)) in last:  # rule 3
            src = source[name, k]
            own = last[src] if calls[src[0]][src[1]] == shape else None
        lay = Layout("NCHW")
        if len(shape) == 2 and tokens_ok and own is not False:
            lay = patch_grid(shape, image, prefix) or lay
        if lay.kind == "NCHW" and own and len(shape) in (2, 3):
            lay = Layout("tokens" if len(shape) == 2 else "NHWC")
        out[name, k] = lay
        last[name, k] = lay.kind != "NCHW"
    return out
