"""Attribution to a hidden layer: how much each channel / position of a layer's
activation ``A`` contributes to the target, for one input.

* :class:`LayerGradientXActivation` ``R = A ⊙ ∂f/∂A`` (the first-order Taylor term at
  ``A = 0``; exact ``Σ R = f`` for a bias-free ReLU network above the layer).
* :class:`LayerIntegratedGradients` IG in activation space:
  ``R = (A − A′) ⊙ Σ_k w_k ∂F/∂A(A′ + α_k (A − A′))``, with ``A′`` the activation of the
  baseline input and ``F`` the network from the layer on (the layer's output replaced,
  everything else computed from ``x``). ``Σ R = F(A) − F(A′)``, which is
  ``f(x) − f(x′)`` when every path from the input to the output passes through the
  layer (a stage output like ``"layer3"``, not a conv inside a residual block).

Results are features first (:func:`layer_grid`): channels-last and ViT tokens come back
as ``(B, D, h, w)`` (patch tokens only; IG's ``return_delta`` still counts the class
token). ``reduce``: ``None`` keeps that shape; ``"channel"`` sums over positions,
``(B, C)``; ``"position"`` sums over channels, ``(B, 1, H, W)``.
``upsample=True`` resizes spatial outputs to the input's size (bilinear).

Layers are addressed by hook-layer names (``"conv3"``, ``"layer4"``,
``"layer1.0.relu:1"`` for the second call of a reused module).
"""

from __future__ import annotations

import torch
from torch import nn

from fvis import hooks
from fvis.attribution.base import (
    Attribution,
    Target,
    check_inputs,
    default_rows,
    gradients,
    row_chunks,
    upsample,
)
from fvis.attribution.baselines import generator, make_baselines
from fvis.attribution.integrated import (
    PathAttribution,
    completeness_delta,
    path_integral,
    quadrature,
)
from fvis.errors import check_int

__all__ = [
    "LayerGradientXActivation",
    "LayerIntegratedGradients",
    "conv_layer",
    "default_layer",
    "execution_order",
    "layer_grid",
    "top_channels",
]

# Modules that act elementwise and keep the shape: a conv layer's default for the
# CAM family extends through them (conv3 → relu3), as Grad-CAM reads rectified maps.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


def execution_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """``(layer name, module, output shape without batch)`` for every module call, in
    the order the calls *finish* (a container after its children), for inputs shaped
    like ``x``. Names follow the hook layer (``"relu:1"`` for a module's second call)."""
    return [
        (label, model.get_submodule(module), shape)
        for label, module, shape in hooks.trace(model, x).execution_order()
    ]


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _block_of(model: nn.Module, name: str) -> bool:
    """``name`` is one of several blocks in a ``Sequential`` / ``ModuleList``."""
    parent, _, _ = name.rpartition(".")
    box = model.get_submodule(parent) if parent else model
    return isinstance(box, nn.Sequential | nn.ModuleList) and len(box) > 1


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The default layer of the CAM family and the layer methods: the last block that
    still has spatial structure (a grid with ``h·w > 1``), never the input embedding.

    * Feature maps (``NCHW``): the last module call that is or contains a convolution,
      extended through the elementwise layers right after it (ReLU, BatchNorm, ...):
      ``"relu3"`` for ``fvis:mnist``, ``"layer4"`` for a ResNet, ``"features"`` for VGG
      and ConvNeXt.
    * Channels-last and tokens on a patch grid (:mod:`fvis.hooks.layouts`), when they
      come after every such convolution: the last container (a stage, a sequence of
      blocks) with that layout, else the last such call — Swin's last stage. With a
      class token the head reads only that token, so after the last block's attention
      no patch token reaches the output and their gradient is 0; the default is then the
      first call of the last block (its input LayerNorm: ``ln_1`` / ``norm1`` /
      ``layernorm_before``), as pytorch-grad-cam's ViT example does.
    """
    order = execution_order(model, x)
    layouts = [hooks.layout(model, x, name) for name, _, _ in order]
    found, last_first = None, -1
    for i, ((_, mod, shape), lay) in enumerate(zip(order, layouts, strict=True)):
        grid = lay.spatial(shape)
        if len(grid) != 2 or grid[0] * grid[1] < 2:
            continue
        if lay.kind == "NCHW":
            if _has_conv(mod):
                found = last_first = i
        else:
            found = i
    if found is None:
        raise hooks.LayerError(
            f"{type(model).__name__} has no layer with a spatial grid for inputs of shape "
            f"{tuple(x.shape[1:])}; pass layer=... (`fvis.layers(model)` lists the layers)"
        )
    if found == last_first:
        shape = order[found][2]
        while (
            found + 1 < len(order)
            and order[found + 1][2] == shape
            and isinstance(order[found + 1][1], _ELEMENTWISE)
        ):
            found += 1
        return order[found][0]
    late = [
        i
        for i in range(last_first + 1, len(order))
        if layouts[i].kind != "NCHW" and len(layouts[i].spatial(order[i][2])) == 2
    ]
    boxes = [i for i in late if any(True for _ in order[i][1].children())]
    found = boxes[-1] if boxes else found
    if layouts[found].kind == "tokens" and layouts[found].prefix:
        blocks = [i for i in late if _block_of(model, hooks.parse(order[i][0])[0])]
        if blocks:
            block = hooks.parse(order[blocks[-1]][0])[0] + "."
            found = next(i for i in late if order[i][0].startswith(block))
    return order[found][0]


conv_layer = default_layer  # its name before layouts; Swin and ViT have no conv blocks


def layer_grid(model: nn.Module, x: torch.Tensor, layer: str, *tensors: torch.Tensor):
    """``tensors`` shaped like the activation of ``layer`` → features first,
    ``(B, D, h, w)`` (:meth:`fvis.hooks.layouts.Layout.to_grid`: channels-last and tokens
    reshaped to their grid, the class token dropped; the ``reshape_transform`` of
    pytorch-grad-cam). A tensor of another shape (a module's input) is left as it is."""
    lay = hooks.layout(model, x, layer)
    shape = hooks.trace(model, x).shape(layer)
    return tuple(lay.to_grid(t) if tuple(t.shape[1:]) == shape else t for t in tensors)


def _reduce(r: torch.Tensor, reduce: str | None, upsample_to, name: str) -> torch.Tensor:
    if reduce == "channel":
        return r.flatten(2).sum(2) if r.dim() > 2 else r
    if reduce not in (None, "position"):
        raise ValueError(f"reduce must be None, 'channel' or 'position', not {reduce!r}")
    if reduce == "position":
        if r.dim() != 4:
            raise ValueError(
                f"reduce='position' needs a spatial layer; {name!r} gives {tuple(r.shape)}"
            )
        r = r.sum(1, keepdim=True)
    if upsample_to is not None and r.dim() == 4:
        r = upsample(r, upsample_to)
    return r


class LayerGradientXActivation(Attribution):
    """``R = A ⊙ ∂f/∂A`` at ``layer`` (module docstring)."""

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        layer: str | None = None,
        reduce: str | None = None,
        upsample: bool = False,
        internal_batch_size: int | None = None,
    ) -> torch.Tensor:
        """``layer`` defaults to :func:`default_layer`. Shapes: module docstring."""
        x = check_inputs(self.model, inputs).detach()
        layer = layer or default_layer(self.model, x)
        tgt = Target(self.model, x, target)
        parts = []
        for sl in row_chunks(x.shape[0], internal_batch_size):
            g, a, _ = gradients(self.model, x[sl], tgt.rows(torch.arange(x.shape[0])[sl]), layer)
            parts.append((a * g).detach())
        size = x.shape[-2:] if upsample and x.dim() == 4 else None
        (r,) = layer_grid(self.model, x, layer, torch.cat(parts))
        return _reduce(r, reduce, size, layer)


def forward_replacing(model, x, layer: str, value: torch.Tensor, objective):
    """The objective's value ``(B,)`` when the activation of ``layer`` is replaced by
    ``value`` (same shape), differentiable with respect to ``value``."""
    return objective(hooks.capture(model, x, objective.layers, replace={layer: value}))


class LayerIntegratedGradients(PathAttribution):
    """IG in the activation space of ``layer`` (module docstring).

    Options as :meth:`IntegratedGradients.attribute` (``baselines`` are *input*
    baselines, mapped through the network to ``A′``), plus ``layer``, ``reduce``,
    ``upsample``. ``return_delta``: also ``Σ R − (F(A) − mean_j F(A′_j))`` per item.
    ``multiply_by_inputs=False``: the path-averaged gradient ``Σ_k w_k ∂F/∂A`` without
    the factor ``A − A′`` (:class:`~fvis.attribution.integrated.PathAttribution`).
    """

    def attribute(
        self,
        inputs: torch.Tensor,
        target=None,
        *,
        layer: str | None = None,
        baselines="black",
        steps: int = 50,
        method: str = "gausslegendre",
        n_baselines: int = 1,
        reduce: str | None = None,
        upsample: bool = False,
        internal_batch_size: int | None = None,
        return_delta: bool = False,
        generator: torch.Generator | int | None = None,
    ):
        x = check_inputs(self.model, inputs).detach()
        layer = layer or default_layer(self.model, x)
        if layer == hooks.INPUT:
            raise hooks.LayerError(
                "LayerIntegratedGradients attributes to a hidden layer; for layer='input' "
                "use IntegratedGradients"
            )
        tgt = Target(self.model, x, target)
        base = make_baselines(baselines, x, self.info, _gen(generator), n_baselines)
        n_base, b = base.shape[0], x.shape[0]
        with torch.no_grad():
            acts = hooks.capture(self.model, torch.cat([x, base.flatten(0, 1)]), [layer])
            all_a = acts[layer].detach()
        a, a0 = all_a[:b], all_a[b:].view(n_base, b, *all_a.shape[1:])
        size = default_rows(b) if internal_batch_size is None else internal_batch_size

        def grad(value, path):  # ∂F/∂A at the activations ``value`` of items ``path % B``
            value, item = value.requires_grad_(True), path % b
            s = forward_replacing(self.model, x[item.to(x.device)], layer, value, tgt.rows(item))
            return torch.autograd.grad(s.sum(), value)[0]

        def value(ends, item):  # F at the activations ``ends`` of items ``item``
            return forward_replacing(self.model, x[item.to(x.device)], layer, ends, tgt.rows(item))

        diff = a.unsqueeze(0) - a0  # A − A′ per (baseline, item)
        alphas, weights = quadrature(method, steps)
        total = path_integral(
            a0.flatten(0, 1), diff.flatten(0, 1), alphas, weights, grad, size, fused=False
        ).view_as(a0)
        attr = (diff * total).mean(0)
        out = attr if self.multiply_by_inputs else total.mean(0)
        (out,) = layer_grid(self.model, x, layer, out)
        out = _reduce(out, reduce, x.shape[-2:] if upsample and x.dim() == 4 else None, layer)
        if not return_delta:
            return out
        ends = torch.cat([a.unsqueeze(0), a0]).flatten(0, 1)  # (1 + N)·B activations
        return out, completeness_delta(attr, ends, value, size)


def _gen(seed):
    return generator(seed)


def top_channels(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    layer: str | None = None,
    k: int = 8,
    *,
    method: str = "gradient_x_activation",
    absolute: bool = False,
    **options,
) -> torch.return_types.topk:
    """The ``k`` channels of ``layer`` that contribute most to the target, per item:
    ``torch.topk`` of the per-channel attribution ``Σ_{y,x} R[b, c, y, x]``, largest
    first (``values`` and ``indices``, each ``(B, k)``). ``method``:
    ``"gradient_x_activation"`` or ``"integrated_gradients"`` (``options`` go to it).
    ``absolute=True`` ranks by ``|R|`` (evidence for or against); values stay signed.
    """
    methods = {
        "gradient_x_activation": LayerGradientXActivation,
        "integrated_gradients": LayerIntegratedGradients,
    }
    if method not in methods:
        raise ValueError(f"method must be one of {', '.join(methods)}, not {method!r}")
    k = check_int("k (channels to show)", k)
    per_channel = methods[method](model).attribute(
        inputs, target, layer=layer, reduce="channel", **options
    )
    k = min(k, per_channel.shape[1])
    key = per_channel.abs() if absolute else per_channel
    idx = key.topk(k, dim=1).indices
    return torch.return_types.topk((per_channel.gather(1, idx), idx))
