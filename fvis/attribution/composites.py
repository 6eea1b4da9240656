"""Composites: which LRP rule each linear operation of a model gets.

A composite maps a :class:`Layer` (one call of a conv, linear or average-pool operation,
as seen during the forward pass) to a :class:`~fvis.attribution.rules.Rule`. Precedence:

1. ``layers[name]``: an exact layer name (``"features.0"``, ``"layer1.0.conv1"``, or a per
   call name ``"block.conv:1"``; the bare name matches every call);
2. ``first``: the first conv/linear operation executed (the input layer);
3. by kind: ``conv`` (any convolution), ``linear`` (``F.linear``), ``pool`` (average pools),
   ``norm`` (layer norms, Ali et al. 2022's LN-rule: an ε-rule; default ``Epsilon(1e-6)``)
   and ``product`` (a product with a constant factor, e.g. attention weights × values
   under the AH-rule; default ``Epsilon(1e-6)``). ``None`` refuses the kind.

Additions of activations (residual connections) are not assigned by composites: they
always split relevance in proportion to the summands (see :mod:`fvis.attribution.lrp`).

==========================  ===========  ==============  ==========  ===============
composite                   first        conv            linear      pool
==========================  ===========  ==============  ==========  ===============
``Uniform(rule)``           rule         rule            rule        rule
``EpsilonPlus``             (conv)       ZPlus           Epsilon     Epsilon(1e-6)
``EpsilonPlusFlat``         Flat         ZPlus           Epsilon     Epsilon(1e-6)
``EpsilonAlpha2Beta1``      (conv)       AlphaBeta(2,1)  Epsilon     Epsilon(1e-6)
``EpsilonGammaBox``         ZBox         Gamma           Epsilon     Epsilon(1e-6)
==========================  ===========  ==============  ==========  ===============

Every composite takes ``first=`` and ``layers=`` to override these; ``norm`` and
``product`` are ``Epsilon(1e-6)`` in all but ``Uniform``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from fvis.attribution.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus
from fvis.hooks import parse

__all__ = [
    "Layer",
    "Composite",
    "Uniform",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "EpsilonAlpha2Beta1",
    "EpsilonGammaBox",
]


@dataclass(frozen=True)
class Layer:
    """One linear operation: module ``name`` (``":k"`` for the k-th call of a module run
    several times; ``""`` for an operation in the model's own ``forward``), the module,
    ``kind`` (``"conv"``, ``"linear"``, ``"pool"``, ``"norm"``, ``"product"``) and
    ``index``, its position among the conv/linear operations in execution order (``-1``
    for the other kinds)."""

    name: str
    module: nn.Module | None
    kind: str
    index: int

    @property
    def first(self) -> bool:
        return self.index == 0


class Composite:
    """Rules by layer name, position and kind (see the module docstring)."""

    def __init__(
        self,
        *,
        conv: Rule,
        linear: Rule,
        pool: Rule | None = None,
        first: Rule | None = None,
        layers: Mapping[str, Rule] | None = None,
        norm: Rule | None = None,
        product: Rule | None = None,
    ):
        self.conv, self.linear = conv, linear
        self.pool = pool if pool is not None else Epsilon(1e-6)
        self.norm = norm if norm is not None else Epsilon(1e-6)
        self.product = product if product is not None else Epsilon(1e-6)
        self.first = first
        self.layers = dict(layers or {})

    def rule(self, layer: Layer) -> Rule | None:
        if layer.name in self.layers:
            return self.layers[layer.name]
        base = parse(layer.name)[0]
        if base in self.layers:
            return self.layers[base]
        if layer.first and self.first is not None:
            return self.first
        return getattr(self, layer.kind)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(conv={self.conv!r}, linear={self.linear!r}, "
                f"pool={self.pool!r}, first={self.first!r})")  # fmt: skip


class Uniform(Composite):
    """The same rule for every layer, layer norms and constant products included (e.g.
    ``Uniform(Epsilon(0))`` is LRP-0; layer norms take only ε-type rules)."""

    def __init__(self, rule: Rule, *, first: Rule | None = None, layers=None):
        super().__init__(conv=rule, linear=rule, pool=rule, first=first, layers=layers,
                         norm=rule, product=rule)  # fmt: skip


class EpsilonPlus(Composite):
    """z⁺ for convolutions, ε for fully connected layers (zennit's EpsilonPlus)."""

    def __init__(self, epsilon: float = 1e-6, *, first: Rule | None = None, layers=None):
        super().__init__(conv=ZPlus(), linear=Epsilon(epsilon), first=first, layers=layers)


class EpsilonPlusFlat(Composite):
    """EpsilonPlus with the flat rule on the input layer."""

    def __init__(self, epsilon: float = 1e-6, *, layers=None):
        super().__init__(conv=ZPlus(), linear=Epsilon(epsilon), first=Flat(), layers=layers)


class EpsilonAlpha2Beta1(Composite):
    """α2β1 for convolutions, ε for fully connected layers."""

    def __init__(self, epsilon: float = 1e-6, *, first: Rule | None = None, layers=None):
        super().__init__(conv=AlphaBeta(2.0, 1.0), linear=Epsilon(epsilon), first=first,
                         layers=layers)  # fmt: skip


class EpsilonGammaBox(Composite):
    """zᴮ on the input layer (bounds: ``low``/``high``, default the model's valid input
    range), γ for convolutions, ε for fully connected layers (zennit's EpsilonGammaBox)."""

    def __init__(self, low=None, high=None, *, epsilon: float = 1e-6, gamma: float = 0.25,
                 layers=None):  # fmt: skip
        super().__init__(conv=Gamma(gamma), linear=Epsilon(epsilon), first=ZBox(low, high),
                         layers=layers)  # fmt: skip
