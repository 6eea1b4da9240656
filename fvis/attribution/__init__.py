"""Attribution on the shared hook layer: ``Method(model).attribute(inputs, target=...)``.

Every method returns a tensor shaped like ``inputs`` (layer methods: like the layer, or
upsampled with ``upsample=True``); ``target`` is a class index, a per-item tensor of
classes, any :class:`fvis.objectives.Objective`, or ``None`` (the predicted class).
:data:`METHODS` names each method for the command line, the studio and the gallery;
:func:`get` builds one by name.
"""

from collections.abc import Callable

from torch import nn

from fvis.attribution import canonizers, composites, rules
from fvis.attribution.base import Attribution
from fvis.attribution.baselines import baseline
from fvis.attribution.cam import CAM, GradCAM, GradCAMPlusPlus, GuidedGradCAM
from fvis.attribution.deeplift import DeepLift
from fvis.attribution.gradient import Gradient, GradientXInput, Saliency, Sensitivity
from fvis.attribution.guided import Deconvnet, GuidedBackprop
from fvis.attribution.integrated import IntegratedGradients
from fvis.attribution.layer import LayerGradientXActivation, LayerIntegratedGradients, top_channels
from fvis.attribution.lrp import LRP
from fvis.attribution.rollout import AttentionRollout
from fvis.attribution.smooth import SmoothGrad, SmoothGradSquared, VarGrad
from fvis.attribution.taylor import DeepTaylor, SimpleTaylor

METHODS: dict[str, Callable[[nn.Module], Attribution]] = {
    "gradient": Gradient,
    "saliency": Saliency,
    "sensitivity": Sensitivity,
    "gradient_x_input": GradientXInput,
    "integrated_gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "smoothgrad_squared": SmoothGradSquared,
    "vargrad": VarGrad,
    "deconvnet": Deconvnet,
    "guided_backprop": GuidedBackprop,
    "deeplift": lambda model: DeepLift(model, "rescale"),
    "deeplift_reveal_cancel": lambda model: DeepLift(model, "reveal_cancel"),
    "lrp": LRP,
    "deep_taylor": DeepTaylor,
    "simple_taylor": SimpleTaylor,
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam_plus_plus": GradCAMPlusPlus,
    "guided_gradcam": GuidedGradCAM,
    "attention_rollout": AttentionRollout,
}


def get(name: str) -> Callable[[nn.Module], Attribution]:
    """The method called ``name`` in :data:`METHODS` (call it with the model)."""
    key = name.lower().replace("-", "_").replace("+", "_plus")
    key = {"ig": "integrated_gradients", "gradcam__plus_plus": "gradcam_plus_plus"}.get(key, key)
    if key not in METHODS:
        import difflib

        near = difflib.get_close_matches(key, METHODS, n=4, cutoff=0.4)
        raise ValueError(
            f"Unknown attribution method {name!r}. Nearest: {', '.join(near) or 'none'}. "
            f"All: {', '.join(METHODS)}."
        )
    return METHODS[key]


__all__ = [
    "CAM", "LRP", "METHODS", "AttentionRollout", "Attribution", "Deconvnet", "DeepLift",
    "DeepTaylor", "GradCAM", "GradCAMPlusPlus", "Gradient", "GradientXInput", "GuidedBackprop",
    "GuidedGradCAM", "IntegratedGradients", "LayerGradientXActivation",
    "LayerIntegratedGradients", "Saliency", "Sensitivity", "SimpleTaylor", "SmoothGrad",
    "SmoothGradSquared", "VarGrad", "baseline", "canonizers", "composites", "get", "rules",
    "top_channels",
]  # fmt: skip
