"""What every attribution method shares: targets, scores and gradients through the hook layer.

``Method(model).attribute(inputs, target=...)`` returns a tensor shaped like
``inputs`` (layer methods: like the layer's activation, or upsampled to the input
with ``upsample=True``). ``inputs`` are model inputs (already normalized, as the
model takes them). ``target`` is an int class, a per-item tensor of classes, any
:class:`fvis.objectives.Objective` (so a hidden channel can be explained), or
``None`` for each item's predicted class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fvis import hooks
from fvis.hooks import INPUT
from fvis.models.info import info as model_info
from fvis.objectives import Objective, as_objective

__all__ = ["Attribution", "resolve_target", "scores", "gradients", "upsample"]


def resolve_target(model: nn.Module, inputs: torch.Tensor, target) -> Objective:
    """The objective an attribution explains; ``None`` → each item's predicted class."""
    if target is None:
        with torch.no_grad():
            target = model(inputs).argmax(1)
    return as_objective(target)


def scores(
    model: nn.Module, inputs: torch.Tensor, objective: Objective, layers=()
) -> tuple[torch.Tensor, hooks.Activations]:
    """``(objective value per item (B,), activations)``, capturing ``objective.layers`` and
    ``layers``; the forward pass stops after the last of them."""
    acts = hooks.capture(model, inputs, list(objective.layers) + list(layers))
    return objective(acts), acts


def gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    layer: str = INPUT,
    *,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d score / d A_layer, A_layer, score)`` for the activation ``A`` of ``layer``
    (``"input"`` by default). Each item's score depends on its own input only, so one
    backward of the summed scores gives every item's gradient."""
    obj = target if isinstance(target, Objective) else resolve_target(model, inputs, target)
    x = inputs.detach().requires_grad_(True)
    s, acts = scores(model, x, obj, [layer])
    a = acts[layer]
    (g,) = torch.autograd.grad(s.sum(), a, create_graph=create_graph)
    return g, a, s


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of maps (B, H, W) or (B, C, H, W) to ``size`` (H', W')."""
    squeeze = maps.dim() == 3
    m = maps.unsqueeze(1) if squeeze else maps
    m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
    return m.squeeze(1) if squeeze else m


class Attribution:
    """Base class: holds the model and its metadata; subclasses implement ``attribute``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.info = model_info(model)

    def attribute(self, inputs: torch.Tensor, target=None, **options) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name or type(self.model).__name__})"
