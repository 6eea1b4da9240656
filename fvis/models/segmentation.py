"""Segmentation models: regions of a class to explain or visualize.

torchvision's segmentation models (``torchvision:fcn_resnet50``, ``deeplabv3_*``,
``lraspp_*``) load offline with ``weights=None`` (their backbone is never fetched) and
return ``{"out": (B, K, H, W)[, "aux": ...]}`` at the input's resolution. Attribution
targets address the logits by key, ``target=("out", 15)`` (the class map's mean), or a
region with :func:`fvis.objectives.class_region`, whose mask :func:`predicted_mask` makes.

>>> from fvis.attribution import IntegratedGradients
>>> seg = fvis.load_model("torchvision:lraspp_mobilenet_v3_large", weights=None)
>>> x = torch.rand(1, 3, 64, 64)
>>> k = int(seg(x)["out"][0, :, 32, 32].argmax())        # the class seen at the centre
>>> mask = predicted_mask(seg, x, k)                      # where the model sees class k
>>> IntegratedGradients(seg).attribute(x, O.class_region(k, mask), steps=4).shape
torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fvis.outputs import select

__all__ = ["predicted_mask"]


@torch.no_grad()
def predicted_mask(
    model: nn.Module, inputs: torch.Tensor, label: int, *, key: str | None = None
) -> torch.Tensor:
    """``(B, H, W)`` bool: the pixels whose most likely class is ``label``, at the
    input's resolution (coarser logits are resized bilinearly first). ``inputs`` are
    model inputs (normalized)."""
    from fvis.hooks import guard

    with guard(model):  # eval mode, restored after
        out = select(model(inputs), key)
    if out.dim() != 4:
        raise ValueError(
            f"predicted_mask needs a (B, classes, H, W) output, not {tuple(out.shape)}"
        )
    if not -out.shape[1] <= label < out.shape[1]:
        raise IndexError(f"class {label} is out of range for {out.shape[1]} classes")
    size = inputs.shape[-2:]
    if out.shape[-2:] != size:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out.argmax(1) == label % out.shape[1]
