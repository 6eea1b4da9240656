"""The CAM family: class activation maps from a convolutional layer's activation
``A`` (B, K, h, w).

* :class:`CAM` (Zhou et al. 2016) ``M = Σ_k W[c, k] A_k`` for a network that ends in
  global average pooling → one linear layer ``W``; other networks are refused.
* :class:`GradCAM` (Selvaraju et al. 2017) ``L = ReLU(Σ_k α_k A_k)``,
  ``α_k = mean_{ij} ∂f/∂A_kij``. On a GAP → linear network ``∂f/∂A_kij = W[c, k] / (hw)``,
  so Grad-CAM without the ReLU is CAM / (hw).
* :class:`GradCAMPlusPlus` (Chattopadhyay et al. 2018, eq. 19): with ``Y = exp(f)`` and
  ``g = ∂f/∂A``, the second and third derivatives of ``Y`` are ``exp(f) g²`` and
  ``exp(f) g³`` (the network above ``A`` is piecewise linear, so ``∂²f/∂A² = 0``), and
  ``α_kij = g²_kij / (2 g²_kij + Σ_ab A_kab · g³_kij)`` (0 where ``g = 0``);
  ``w_k = Σ_ij α_kij ReLU(∂Y/∂A_kij)``, ``L = ReLU(Σ_k w_k A_k)``. Note ``Σ_ab A_kab`` is
  the channel's total activation, not ``Σ_ab A_kab g³_kab``. ``∂Y/∂A = exp(f) g``, so the
  paper's map is ``exp(f)`` times the returned one; ``paper_scale=True`` multiplies it in
  (overflows float32 for ``f > 88``).
* :class:`GuidedGradCAM` Grad-CAM upsampled to the input × Guided Backpropagation.

Maps are ``(B, 1, h, w)``, or ``(B, 1, H, W)`` with ``upsample=True`` (bilinear, or
``interpolate_mode="nearest"``); ``per_channel=True`` gives the terms ``w_k A_k``
``(B, K, h, w)``; ``attribute_to_layer_input=True`` reads the input of the layer's
module; several layers average their maps scaled to [0, 1] (pytorch-grad-cam).
``layer`` defaults to :func:`fvis.attribution.layer.default_layer` (``"layer4"`` for a
ResNet, the last stage of a Swin, the last block's input LayerNorm of a ViT); any
hook-layer name with a spatial grid (h·w > 1) works (``"layer4.1.relu:1"``); others are
refused. Channels-last ``(B, H, W, C)`` and ViT tokens ``(B, 1 + h·w, D)`` are read as
``A`` (B, D, h, w), the class token left out (:mod:`fvis.hooks.layouts`): the
``reshape_transform`` pytorch-grad-cam users write by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fvis import hooks
from fvis.attribution.base import Attribution, Target, check_inputs, gradients, row_chunks, scores
from fvis.attribution.base import upsample as _upsample
from fvis.attribution.layer import default_layer, execution_order, layer_grid

__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM"]


def _spatial(a: torch.Tensor, layer: str, method: str) -> None:
    if a.dim() != 4 or a.shape[2] * a.shape[3] < 2:
        raise ValueError(
            f"{method} needs a layer with a spatial output (B, C, H, W), H·W > 1; {layer!r} "
            f"gives {tuple(a.shape)}, which has no spatial map to weight. Pick a "
            "convolutional layer before the pooling (`fvis.layers(model)`)."
        )


def _finish(maps: torch.Tensor, inputs: torch.Tensor, up: bool) -> torch.Tensor:
    return _upsample(maps, inputs.shape[-2:]) if up else maps


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """``(m − min) / (max − min + 1e-7)`` per item: pytorch-grad-cam's ``scale_cam_image``."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
    return (maps - lo) / (hi - lo + 1e-7)


def layer_input_gradients(
    model: nn.Module, x: torch.Tensor, objective, layer: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(∂f/∂I, I, f)`` for the *input* ``I`` of the module call ``layer`` (its one
    tensor argument), as :func:`~fvis.attribution.base.gradients` gives them for its
    output. The module runs on a copy of ``I``, so an in-place module cannot change it."""
    hooks.trace(model, x).shape(layer)  # validates the name (reused modules, typos)
    _, call = hooks.parse(layer)
    kept: list[torch.Tensor] = []
    calls = 0

    def pre(mod, args):
        nonlocal calls
        calls += 1
        if calls - 1 != (call or 0):
            return None
        tensors = [t for t in args if isinstance(t, torch.Tensor)]
        if len(tensors) != 1 or not isinstance(args[0], torch.Tensor):
            raise ValueError(
                f"attribute_to_layer_input needs a module called with one tensor; {layer!r} "
                f"({type(mod).__name__}) gets {len(tensors)}. Use its output instead."
            )
        kept.append(args[0])
        return (args[0].clone(), *args[1:])

    xr = x.detach().requires_grad_(True)
    with hooks.hooks_on([(hooks.module_for(model, layer), pre)], kind="forward_pre"):
        s, _ = scores(model, xr, objective)
    if not kept:
        raise ValueError(f"{layer!r} did not run before the objective was computed")
    (g,) = torch.autograd.grad(s.sum(), kept[0])
    return g, kept[0], s


class _LayerGradientCAM(Attribution):
    """Shared driver: ``weights(g, A, f)`` → per-channel weights ``w`` ``(B, K, 1, 1)``;
    the map is ``ReLU(Σ_k w_k A_k)``."""

    name = "Grad-CAM"

    def weights(self, g, a, s) -> torch.Tensor:
        raise NotImplementedError

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        layer: str | Sequence[str] | None = None,
        upsample: bool = False,
        relu: bool = True,
        per_channel: bool = False,
        attribute_to_layer_input: bool = False,
        interpolate_mode: str = "bilinear",
        internal_batch_size: int | None = None,
        **options,
    ) -> torch.Tensor:
        """Map ``ReLU(Σ_k w_k A_k)`` ``(B, 1, h, w)``, or ``(B, 1, H, W)`` with ``upsample``
        (``interpolate_mode`` ``"bilinear"`` or ``"nearest"``); ``relu=False`` keeps the
        sign. ``per_channel=True``: the terms ``w_k A_k`` themselves, ``(B, K, h, w)``
        (their channel sum is the map before the ReLU). ``attribute_to_layer_input``:
        ``A`` is the input of ``layer``'s module instead of its output (captum's
        keyword). ``layer``: a name (default :func:`default_layer`) or several names: then
        each layer's map is scaled to [0, 1] per item, ``(m − min) / (max − min + 1e-7)``,
        upsampled to the input and the maps are averaged, as pytorch-grad-cam does with
        several target layers (it rescales the average to [0, 1] once more); ``(B, 1, H, W)``.
        ``internal_batch_size``: items per pass."""
        x = check_inputs(self.model, inputs).detach()
        tgt = Target(self.model, x, target)
        if isinstance(layer, list | tuple):
            if not layer or per_channel or not relu:
                raise ValueError(
                    f"{self.name} over several layers averages maps scaled to [0, 1]; that "
                    "needs one or more names, relu=True and per_channel=False (channels and "
                    "signs do not line up across layers)"
                )
            maps = [
                self.attribute(x, tgt.all(), layer=name,
                               attribute_to_layer_input=attribute_to_layer_input,
                               internal_batch_size=internal_batch_size, **options)
                for name in layer
            ]  # fmt: skip
            size = x.shape[-2:]
            return torch.stack(
                [_upsample(_unit_range(m), size, interpolate_mode) for m in maps]
            ).mean(0)
        layer = layer or default_layer(self.model, x)
        grads = layer_input_gradients if attribute_to_layer_input else gradients
        parts = []
        for sl in row_chunks(x.shape[0], internal_batch_size):
            g, a, s = grads(self.model, x[sl], tgt.rows(torch.arange(x.shape[0])[sl]), layer)
            g, a = layer_grid(self.model, x, layer, g, a)
            _spatial(a, layer, self.name)
            g, a, s = g.detach(), a.detach(), s.detach()
            terms = self.weights(g, a, s, **options) * a
            if not per_channel:
                terms = terms.sum(1, keepdim=True)
                terms = F.relu(terms) if relu else terms
            parts.append(terms)
        maps = torch.cat(parts)
        return _upsample(maps, x.shape[-2:], interpolate_mode) if upsample else maps


class GradCAM(_LayerGradientCAM):
    """Grad-CAM: ``L = ReLU(Σ_k α_k A_k)``, ``α_k = mean_ij ∂f/∂A_kij``. Options: see
    :meth:`_LayerGradientCAM.attribute` (``layer``, ``upsample``, ``relu``,
    ``per_channel``, ``attribute_to_layer_input``, ``interpolate_mode``)."""

    def weights(self, g, a, s):
        return g.mean((2, 3), keepdim=True)


class GradCAMPlusPlus(_LayerGradientCAM):
    """Grad-CAM++ as in the paper's closed form (eq. 19; module docstring). Options as
    :class:`GradCAM`, plus ``paper_scale`` (multiply by ``exp(f)``)."""

    name = "Grad-CAM++"

    def weights(self, g, a, s, paper_scale: bool = False):
        g2 = g.pow(2)
        denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1), 0)
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
        # exp(f) > 0 commutes with the ReLU, so scaling the weights scales the map
        return w * torch.exp(s).view(-1, 1, 1, 1) if paper_scale else w


class CAM(Attribution):
    """Class activation map ``M_c = Σ_k W[c, k] A_k`` (Zhou et al. 2016), for networks
    whose output is ``W · mean_{ij} A + b`` (global average pooling of ``A`` → one
    linear layer; dropout and flatten in between are fine). Checked on the input:
    other networks (VGG's two hidden FC layers, the MNIST CNN) get a ``ValueError``.
    ``mean_ij M_c + b_c = f_c``. Signed; ``relu=True`` rectifies. Target: classes only.
    """

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        layer: str | None = None,
        relu: bool = False,
        upsample: bool = False,
    ) -> torch.Tensor:
        x = check_inputs(self.model, inputs).detach()
        layer = layer or default_layer(self.model, x)
        tgt = Target(self.model, x, target)
        if tgt.classes is None:
            raise ValueError(
                "CAM explains class logits; pass a class (int, tensor), not an "
                "Objective — or use GradCAM, which explains any objective"
            )
        head_name, head = self._head(x)
        with torch.no_grad():
            acts = hooks.capture(self.model, x, [layer, head_name, hooks.OUTPUT])
        (a,), out = layer_grid(self.model, x, layer, acts[layer]), acts[hooks.OUTPUT]
        _spatial(a, layer, "CAM")
        self._check(a, out, acts[head_name], head, layer, head_name)
        n = head.out_features
        if ((tgt.classes >= n) | (tgt.classes < -n)).any():
            raise IndexError(
                f"target classes {tgt.classes.tolist()} out of range for {n} "
                f"classes (valid: 0..{n - 1})"
            )
        w = head.weight[tgt.classes]  # (B, K)
        m = (w[:, :, None, None] * a).sum(1, keepdim=True)
        return _finish(F.relu(m) if relu else m, x, upsample)

    def _head(self, x) -> tuple[str, nn.Linear]:
        linears = [(n, m) for n, m, _ in execution_order(self.model, x) if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                f"CAM needs a network that ends in global average pooling → one nn.Linear "
                f"layer; {type(self.model).__name__} has no nn.Linear. Use GradCAM."
            )
        return linears[-1]

    def _check(self, a, out, head_out, head, layer, head_name) -> None:
        need = (
            "CAM needs a network whose output is W · (global average pool of the layer) + b "
            "with one nn.Linear W"
        )
        if (
            not isinstance(out, torch.Tensor)
            or out.shape != head_out.shape
            or not torch.allclose(
                out, head_out, rtol=1e-4, atol=1e-5 * (1 + out.abs().max().item())
            )
        ):
            raise ValueError(
                f"{need}; the model's output is not the output of its last linear layer "
                f"{head_name!r} (something follows it). Use GradCAM."
            )
        if a.shape[1] != head.in_features:
            raise ValueError(
                f"{need}; {layer!r} has {a.shape[1]} channels but {head_name!r} takes "
                f"{head.in_features} features, so {head_name!r} does not read a global "
                f"average pool of {layer!r} (e.g. hidden linear layers in between, as in "
                "VGG). Use GradCAM, which works on any network and equals CAM up to scale "
                "on GAP → linear ones."
            )
        gap = F.linear(a.mean((2, 3)), head.weight, head.bias)
        err = (gap - out).abs().max().item()
        if err > 1e-4 * (1 + out.abs().max().item()):
            raise ValueError(
                f"{need}; {head_name!r} applied to the spatial mean of {layer!r} differs from "
                f"the output by {err:.3g} (a non-linear op, max pooling or another layer sits "
                "between them). Use GradCAM, or pass the layer that feeds the pooling."
            )


class GuidedGradCAM(Attribution):
    """Guided Grad-CAM (Selvaraju et al. 2017): ``GuidedBackprop(x) ⊙ up(GradCAM(x))``,
    Grad-CAM upsampled to the input, ``interpolate_mode="bilinear"`` (default) or
    ``"nearest"`` (captum's default). Shape of the inputs. Options: ``layer`` (one or
    several, as :class:`GradCAM`), ``attribute_to_layer_input``, ``interpolate_mode``."""

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        layer: str | Sequence[str] | None = None,
        attribute_to_layer_input: bool = False,
        interpolate_mode: str = "bilinear",
    ):
        from fvis.attribution.guided import GuidedBackprop

        x = check_inputs(self.model, inputs).detach()
        objective = Target(self.model, x, target).all()
        cam = GradCAM(self.model).attribute(
            x, objective, layer=layer, upsample=True, interpolate_mode=interpolate_mode,
            attribute_to_layer_input=attribute_to_layer_input,
        )  # fmt: skip
        guided = GuidedBackprop(self.model).attribute(x, objective)
        return guided * cam
