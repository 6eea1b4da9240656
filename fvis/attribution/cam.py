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

Maps are ``(B, 1, h, w)``, or ``(B, 1, H, W)`` with ``upsample=True`` (bilinear).
``layer`` defaults to :func:`fvis.attribution.layer.conv_layer` (``"layer4"`` for a
ResNet); any hook-layer name with a spatial output works (``"layer4.1.relu:1"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fvis import hooks
from fvis.attribution.base import Attribution, Target, gradients, row_chunks, upsample
from fvis.attribution.layer import conv_layer, execution_order

__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM"]


def _spatial(a: torch.Tensor, layer: str, method: str) -> None:
    if a.dim() != 4:
        raise ValueError(
            f"{method} needs a layer with a spatial output (B, C, H, W); {layer!r} gives "
            f"{tuple(a.shape)}. Pick a convolutional layer (`fvis.layers(model)`)."
        )


def _finish(maps: torch.Tensor, inputs: torch.Tensor, up: bool) -> torch.Tensor:
    return upsample(maps, inputs.shape[-2:]) if up else maps


class _LayerGradientCAM(Attribution):
    """Shared driver: ``weights(g, A, f)`` → per-channel weights ``(B, K, 1, 1)``."""

    name = "Grad-CAM"

    def maps(self, g, a, s) -> torch.Tensor:
        raise NotImplementedError

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        layer: str | None = None,
        upsample: bool = False,
        internal_batch_size: int | None = None,
        **options,
    ) -> torch.Tensor:
        """Map ``(B, 1, h, w)`` (``(B, 1, H, W)`` with ``upsample``); see the module
        docstring. ``internal_batch_size``: items per pass."""
        x = inputs.detach()
        layer = layer or conv_layer(self.model, x)
        tgt = Target(self.model, x, target)
        parts = []
        for sl in row_chunks(x.shape[0], internal_batch_size):
            g, a, s = gradients(self.model, x[sl], tgt.rows(torch.arange(x.shape[0])[sl]), layer)
            _spatial(a, layer, self.name)
            parts.append(self.maps(g.detach(), a.detach(), s.detach(), **options))
        return _finish(torch.cat(parts), x, upsample)


class GradCAM(_LayerGradientCAM):
    """Grad-CAM: ``L = ReLU(Σ_k α_k A_k)``, ``α_k = mean_ij ∂f/∂A_kij``; ``relu=False``
    keeps the signed map. Options: ``layer``, ``upsample``, ``relu``."""

    def maps(self, g, a, s, relu: bool = True):
        alpha = g.mean((2, 3), keepdim=True)
        m = (alpha * a).sum(1, keepdim=True)
        return F.relu(m) if relu else m


class GradCAMPlusPlus(_LayerGradientCAM):
    """Grad-CAM++ as in the paper's closed form (eq. 19; module docstring). Options:
    ``layer``, ``upsample``, ``paper_scale`` (multiply by ``exp(f)``)."""

    name = "Grad-CAM++"

    def maps(self, g, a, s, paper_scale: bool = False):
        g2 = g.pow(2)
        denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1), 0)
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
        m = F.relu((w * a).sum(1, keepdim=True))
        if paper_scale:
            m = m * torch.exp(s).view(-1, 1, 1, 1)
        return m


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
        x = inputs.detach()
        layer = layer or conv_layer(self.model, x)
        tgt = Target(self.model, x, target)
        if tgt.classes is None:
            raise ValueError(
                "CAM explains class logits; pass a class (int, tensor), not an "
                "Objective — or use GradCAM, which explains any objective"
            )
        head_name, head = self._head(x)
        with torch.no_grad():
            acts = hooks.capture(self.model, x, [layer, head_name, hooks.OUTPUT])
        a, out = acts[layer], acts[hooks.OUTPUT]
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
    Grad-CAM bilinearly upsampled to the input. Shape of the inputs. Options: ``layer``."""

    def attribute(self, inputs: torch.Tensor, target=None, *, layer: str | None = None):
        from fvis.attribution.guided import GuidedBackprop

        x = inputs.detach()
        objective = Target(self.model, x, target).all()
        cam = GradCAM(self.model).attribute(x, objective, layer=layer, upsample=True)
        guided = GuidedBackprop(self.model).attribute(x, objective)
        return guided * cam
