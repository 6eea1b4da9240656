"""The hook layer: the one place fvis touches ``nn.Module`` internals.

Visualization and attribution both ask this package for activations and gradients by
layer name; nothing else registers a hook or enters a ``TorchFunctionMode``.

===========================================  ==============================================
to ...                                       use
===========================================  ==============================================
list the layers, their shapes and per-call   :func:`layers`, :func:`trace` (:mod:`.names`)
names (``layer1.0.relu:1``)
know which dim holds the features (NCHW,     :func:`layout` (:mod:`.layouts`),
NHWC, ViT tokens) and the spatial grid       ``Activations.grid(name)``
read activations (stopping early)            :func:`capture` (:mod:`.forward`)
read the attention probabilities of a        :func:`attention_probabilities`
forward pass (ViT, nn.MultiheadAttention)    (:mod:`.probabilities`)
read an activation's gradient                ``capture(..., retain_grads=True)``, or
                                             ``torch.autograd.grad`` on the captured tensor
change a backward rule for a kind of         a :class:`Policy` run by :func:`run`
operation (ReLU, conv, sum, ...)             (:mod:`.intercept`)
know which call of which module is running   :class:`CallTracker` (:mod:`.calls`)
rewrite weights reversibly                   a canonizer (:mod:`fvis.attribution.canonizers`)
                                             inside ``with canonizer.apply(model, x)``
run a model in eval mode, one fvis call at    :func:`guard` (:mod:`.state`; its docstring says
a time, modes restored                       why calls on one model are serialized)
run a model on channels-last input          :func:`channels_last_input` (:mod:`.state`)
===========================================  ==============================================

Every function here installs hooks only on the modules it needs and removes them in
``finally``, so no hook survives a call, also one that raised.

>>> acts = capture(model, x, ["conv2", "fc1"])      # stops after fc1 runs
>>> acts["conv2"].shape, acts.output is None
(torch.Size([2, 32, 28, 28]), True)
"""

from fvis.hooks.calls import CallTracker
from fvis.hooks.forward import Activations, capture, input_gradient, run
from fvis.hooks.handles import check_no_hooks, hookable, hooks_on
from fvis.hooks.intercept import (
    Interceptor,
    LayerNorm,
    LinearCalls,
    Op,
    Policy,
    UnsupportedOperation,
    is_activation,
    op_name,
)
from fvis.hooks.layouts import Layout
from fvis.hooks.names import (
    INPUT,
    OUTPUT,
    LayerError,
    LayerInfo,
    Trace,
    layers,
    layout,
    locate,
    model_device,
    module_for,
    parse,
    trace,
)
from fvis.hooks.probabilities import attention_probabilities
from fvis.hooks.state import channels_last_input, guard, refuse_script

__all__ = [
    "INPUT",
    "OUTPUT",
    "Activations",
    "CallTracker",
    "Interceptor",
    "LayerError",
    "LayerInfo",
    "LayerNorm",
    "Layout",
    "LinearCalls",
    "Op",
    "Policy",
    "Trace",
    "UnsupportedOperation",
    "attention_probabilities",
    "capture",
    "channels_last_input",
    "check_no_hooks",
    "guard",
    "hookable",
    "hooks_on",
    "input_gradient",
    "is_activation",
    "layers",
    "layout",
    "locate",
    "model_device",
    "module_for",
    "op_name",
    "parse",
    "refuse_script",
    "run",
    "trace",
]
