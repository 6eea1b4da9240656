"""Taylor decompositions (Montavon et al. 2017, "Explaining nonlinear classification
decisions with deep Taylor decomposition").

* :class:`SimpleTaylor`: first-order Taylor expansion at a root point ``x̃``,
  ``R_i = (x_i − x̃_i) · ∂t/∂x_i(p)`` with the gradient taken at ``p = x`` (default) or at
  ``p = x̃``. ``Σ_i R_i = t(x) − t(x̃)`` up to the second-order remainder (exactly, for a
  piecewise-linear ``t`` whose linear region contains both points; ``return_delta`` reports
  the remainder). With ``x̃ = 0`` and ``p = x`` this is gradient × input.
* :class:`DeepTaylor`: deep Taylor decomposition of a ReLU network: every conv/linear layer
  is expanded at the root point its rule implies, which gives the z⁺ rule for layers with
  ReLU inputs and, for the input layer, zᴮ (bounded input ``l ≤ x ≤ h``; default the
  model's valid input range), z⁺ (``x ≥ 0``) or w² (unbounded). Relevance propagation and
  residual/BatchNorm handling are those of :class:`~fvis.attribution.lrp.LRP`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fvis.attribution.base import Attribution, gradients, resolve_target, scores
from fvis.attribution.composites import Composite
from fvis.attribution.lrp import LRP
from fvis.attribution.rules import Rule, WSquare, ZBox, ZPlus

__all__ = ["DeepTaylor", "SimpleTaylor"]


class DeepTaylor(LRP):
    """Deep Taylor decomposition: z⁺ on hidden conv/linear/pool layers, ``first`` on the
    input layer: ``"zb"`` (bounds ``low``/``high``, default the valid input range),
    ``"zplus"``, ``"w2"`` or any :class:`~fvis.attribution.rules.Rule`.

    >>> DeepTaylor(model).attribute(x, target=3)   # (B, C, H, W), sums to ≈ logit 3
    """

    method = "DeepTaylor"

    def __init__(self, model, *, first: str | Rule = "zb", low=None, high=None,
                 canonizers=None):  # fmt: skip
        if isinstance(first, str):
            choices = {"zb": lambda: ZBox(low, high), "zplus": ZPlus, "w2": WSquare}
            if first not in choices:
                raise ValueError(f"first must be one of {sorted(choices)} or a Rule, not "
                                 f"{first!r}")  # fmt: skip
            first = choices[first]()
        composite = Composite(conv=ZPlus(), linear=ZPlus(), pool=ZPlus(), first=first)
        super().__init__(model, composite, canonizers=canonizers)


class SimpleTaylor(Attribution):
    """``R = (x − x̃) ⊙ ∇t(p)`` (module docstring), ``(B, ...)`` like the input.

    >>> SimpleTaylor(model).attribute(x, 3, root=blurred, gradient_at="root")
    """

    def attribute(self, inputs: Tensor, target=None, *, root=None, gradient_at: str = "input",
                  return_delta: bool = False):  # fmt: skip
        """``root``: the root point ``x̃`` (like one input or like ``inputs``; default 0).
        ``gradient_at``: ``"input"`` or ``"root"``. With ``return_delta`` also ``(B,)``
        ``Σ_i R_i − (t(x) − t(x̃))``."""
        if gradient_at not in ("input", "root"):
            raise ValueError(f"gradient_at must be 'input' or 'root', not {gradient_at!r}")
        objective = resolve_target(self.model, inputs, target)
        x = inputs.detach()
        x0 = torch.zeros_like(x) if root is None else torch.as_tensor(
            root, dtype=x.dtype, device=x.device).expand_as(x)  # fmt: skip
        at = x if gradient_at == "input" else x0
        g, _, s_at = gradients(self.model, at, objective)
        relevance = (x - x0) * g
        if not return_delta:
            return relevance
        with torch.no_grad():
            sx = s_at if gradient_at == "input" else scores(self.model, x, objective)[0]
            s0 = scores(self.model, x0, objective)[0] if gradient_at == "input" else s_at
        return relevance, relevance.flatten(1).sum(1) - (sx - s0).detach()
