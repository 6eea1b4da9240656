"""The hooked forward pass: read activations, with early stop, and run under a policy.

:func:`capture` installs hooks only on the modules it needs and removes them in
``finally``, so no hook survives a call, also one that raised. :func:`run` is the same
pass with every torch operation routed to a :class:`~fvis.hooks.intercept.Policy`
(the modified backward passes of the rule-based attribution methods).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from fvis.hooks.calls import CallTracker
from fvis.hooks.handles import hooks_on
from fvis.hooks.intercept import Interceptor, Policy
from fvis.hooks.names import INPUT, OUTPUT, LayerError, locate, trace
from fvis.hooks.state import guard, refuse_script
from fvis.models.metadata import info as model_info

__all__ = ["Activations", "capture", "input_gradient", "run"]


class _Stop(BaseException):
    """Raised by a forward hook once every needed activation is captured.

    A ``BaseException`` so that a model's own ``except Exception`` cannot swallow it.
    """


class Activations(dict):
    """``{layer name: activation}`` captured by :func:`capture`.

    ``.output``: the model output if the forward pass finished (else ``None``);
    ``.grads``: gradients (with ``retain_grads``); ``.info``: the model's ``ModelInfo``;
    ``.layouts``: ``{layer name: Layout}`` (:mod:`fvis.hooks.layouts`), read by
    :meth:`grid`.
    """

    output: torch.Tensor | None = None
    layouts: Mapping = {}  # noqa: RUF012 - replaced per instance by capture

    def map(self, fn, output: torch.Tensor | None = None) -> Activations:
        """New activations ``{name: fn(name, activation)}`` of the same model (``info``
        and ``layouts`` kept), with no gradients yet and ``output`` as the model output."""
        out = Activations({k: fn(k, v) for k, v in self.items()})
        out.info, out.layouts = getattr(self, "info", None), self.layouts
        out.grads, out.output = {}, output
        return out

    def grid(self, name: str) -> torch.Tensor:
        """Activation ``name`` with its features first: ``(B, D, h, w)`` for NCHW, NHWC
        and tokens on a patch grid (class token dropped), ``(B, D)`` for vectors
        (:meth:`fvis.hooks.layouts.Layout.to_grid`)."""
        lay = self.layouts.get(name)
        return self[name] if lay is None else lay.to_grid(self[name])


def capture(
    model: nn.Module,
    x: torch.Tensor,
    names: Iterable[str],
    *,
    stop: bool = True,
    retain_grads: bool = False,
    replace: Mapping[str, Tensor] | None = None,
    grad_masks: Mapping[str, Tensor] | None = None,
) -> Activations:
    """Forward ``x`` through ``model`` and return the activations named in ``names``.

    With ``stop=True`` the forward pass is cut as soon as the last needed activation
    exists, so an early layer does not pay for the rest of the network. Captured
    tensors stay in the autograd graph (differentiate with ``torch.autograd.grad``);
    a captured tensor that the network goes on using is cloned first, so later
    in-place ops (``ReLU(inplace=True)``) cannot change it. With ``retain_grads``,
    ``acts.grads[name]`` holds each activation's gradient after a backward pass.

    ``replace={layer: value}`` sets activations (activation patching): the layer's output
    is ``value`` (same shape; a copy, so the graph runs back to ``value``) and the forward
    pass goes on from it. ``grad_masks={layer: mask}`` multiplies the gradient flowing
    back through each named activation by ``mask`` (broadcast to its shape), e.g. to
    keep one channel's share of a relevance or gradient (concept-conditional attribution).
    The model runs in eval mode, its modes restored after (:func:`fvis.hooks.guard`).
    """
    with guard(model):
        return _capture(model, x, names, stop, retain_grads, replace or {}, grad_masks or {})


def _capture(model, x, names, stop, retain_grads, replace, grad_masks) -> Activations:
    names = list(dict.fromkeys([*names, *grad_masks]))
    tr = trace(model, x)
    wanted: dict[str, dict[int, str]] = {}  # module -> {call: layer name}
    special = set()  # "input" / "output", when no module has that name
    for name in names:
        module, call = locate(tr, name)
        if module is None:
            special.add(name)
        else:
            wanted.setdefault(module, {})[call] = name
    patches: dict[str, dict[int, Tensor]] = {}  # module -> {call: replacement}
    for name, value in replace.items():
        module, call = locate(tr, name)
        if module is None:
            raise LayerError(f"replace sets inner layers; {name!r} is the model's {name}.")
        patches.setdefault(module, {})[call] = value
    acts = Activations()
    acts.grads = {}
    acts.info = model_info(model)
    acts.layouts = {n: tr.layout(n, acts.info.layouts) for n in names}
    if INPUT in special:
        acts[INPUT] = x
    need_output = OUTPUT in special
    remaining = sum(len(c) for c in wanted.values())
    can_stop = stop and not need_output

    def keep(name: str, t: torch.Tensor) -> None:
        acts[name] = t
        if name in grad_masks and t.requires_grad:
            t.register_hook(lambda g, m=grad_masks[name]: g * m)
        if retain_grads and t.requires_grad:
            t.register_hook(lambda g, name=name: acts.grads.__setitem__(name, g))

    if INPUT in acts and x.requires_grad:
        if INPUT in grad_masks:
            x.register_hook(lambda g: g * grad_masks[INPUT])
        if retain_grads:
            x.register_hook(lambda g: acts.grads.__setitem__(INPUT, g))

    counters = dict.fromkeys({**wanted, **patches}, 0)

    def make_hook(module_name: str):
        def hook(mod, inp, out):
            nonlocal remaining
            call = counters[module_name]
            counters[module_name] += 1
            value = patches.get(module_name, {}).get(call)
            if value is not None:
                if value.shape != out.shape:
                    raise ValueError(
                        f"replacement of shape {tuple(value.shape)} for an "
                        f"output of shape {tuple(out.shape)}"
                    )
                out = value.clone()  # downstream in-place ops must not touch the given tensor
            layer = wanted.get(module_name, {}).get(call)
            if layer is None:
                return out if value is not None else None
            remaining -= 1
            if can_stop and remaining == 0:
                keep(layer, out)
                raise _Stop
            keep(layer, out)
            return out.clone()  # downstream in-place ops must not touch what we keep

        return hook

    with hooks_on((model.get_submodule(m), make_hook(m)) for m in counters):
        try:
            out = model(x)
        except _Stop:
            out = None
    if out is not None:
        acts.output = out
        if need_output:
            keep(OUTPUT, out)
    missing = [n for n in names if n not in acts]
    if missing:
        raise LayerError(f"Layers {missing} did not run in this forward pass.")
    return acts


def run(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[str],
    policy: Policy,
    *,
    bounds: tuple[Tensor, Tensor] | None = None,
) -> Activations:
    """Forward ``x`` under ``policy`` and capture ``layers`` (:func:`capture`).

    ``bounds`` = (low, high) broadcastable to ``x``: the value range of the input, carried
    through neutral and scaling operations to the first layers (for the zᴮ rule). All
    hooks are removed on exit, also on error; the interceptor detaches the parameters, so
    every tensor that requires grad depends on ``x``.
    """
    refuse_script(model, policy.method)
    tracker = CallTracker(model, x) if policy.modules else None
    mode = Interceptor(policy, tracker)
    policy.interceptor = mode
    if bounds is not None:
        lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device).expand_as(x) for b in bounds)
        mode.bounds[id(x)] = (x, lo, hi)
    with contextlib.ExitStack() as stack:
        stack.enter_context(guard(model))
        stack.callback(mode.bounds.clear)
        if tracker is not None:
            pairs = [(m, tracker.pre) for m in tracker.modules]
            stack.enter_context(hooks_on(pairs, kind="forward_pre"))
            stack.enter_context(hooks_on((m, tracker.post) for m in tracker.modules))
        stack.enter_context(mode)
        return capture(model, x, layers)


def input_gradient(model: nn.Module, inputs: Tensor, objective, policy: Policy) -> Tensor:
    """``∂ objective / ∂ inputs`` with the backward modified by ``policy``: (B, ...) like
    ``inputs``. Each item's objective depends on its own input only."""
    x = inputs.detach().requires_grad_(True)
    acts = run(model, x, objective.layers, policy)
    s = objective(acts)
    (g,) = torch.autograd.grad(s.sum(), x)
    return g
