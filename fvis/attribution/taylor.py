"""Taylor decompositions (Montavon et al. 2017, "Explaining nonlinear classification
decisions with deep Taylor decomposition"; Bach et al. 2015).

* :class:`SimpleTaylor`: first-order Taylor expansion at a root point ``x̃``,
  ``R_i = (x_i − x̃_i) · ∂t/∂x_i(p)`` with the gradient taken at ``p = x`` (default) or at
  ``p = x̃``. ``Σ_i R_i = t(x) − t(x̃)`` up to the second-order remainder (exactly, for a
  piecewise-linear ``t`` whose linear region contains both points; ``return_delta`` reports
  the remainder). ``root`` is a named reference (``"black"``, the default, ``"blur"``, ...;
  see :mod:`~fvis.attribution.integrated`), a number, a tensor or a callable. With
  ``search=True`` the root is what the method assumes, a point where the target vanishes:
  :func:`find_root` takes the point nearest to ``x`` on the segment from ``x`` to ``root``
  with ``t(x̃) = 0``, so ``Σ_i R_i = t(x)`` up to the remainder. (On the bundled CNN the
  remainder is smallest with the gradient at the input: 0.03–0.5 for logits of 18–21,
  against 1.2–1.9 at the fixed black root and 11–14 with the gradient at the found root.)
* :class:`DeepTaylor`: deep Taylor decomposition of a ReLU network: every conv/linear layer
  is expanded at the root point its rule implies, which gives the z⁺ rule (no bias) for
  layers with ReLU inputs (average pools: the proportional z-rule) and, for the input
  layer, zᴮ (bounded input ``l ≤ x ≤ h``; default the model's valid input range), z⁺
  (``x ≥ 0``) or w² (unbounded). Each rule is
  applied only inside the domain it is derived for: a z⁺ layer whose input has negative
  values (after a tanh, or a residual sum without ReLU) is refused, and so is an input
  outside the zᴮ box. Relevance propagation and residual/BatchNorm handling are those of
  :class:`~fvis.attribution.lrp.LRP`; max-pooling ``"winner_take_all"`` or
  ``"proportional"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fvis.attribution.base import Attribution, Target, gradients, item_sums, resolve_target, scores
from fvis.attribution.composites import Composite
from fvis.attribution.deeplift import reference_for
from fvis.attribution.lrp import LRP
from fvis.attribution.rules import Epsilon, Rule, WSquare, ZBox, ZPlus

__all__ = ["DeepTaylor", "SimpleTaylor", "find_root"]


class DeepTaylor(LRP):
    """Deep Taylor decomposition: z⁺ (no bias) on hidden conv/linear layers, the z-rule
    ``a_i / Σ a · R`` on average pools (= z⁺ for ``a ≥ 0``; any sign), ``first``
    on the input layer: ``"zb"`` (bounds ``low``/``high``, default the valid input range),
    ``"zplus"``, ``"w2"`` or any :class:`~fvis.attribution.rules.Rule`. Refuses inputs
    outside a rule's domain (module docstring).

    >>> DeepTaylor(model).attribute(x, target=3).shape   # like the input; sums to ≈ logit 3
    torch.Size([2, 1, 28, 28])
    """

    method = "DeepTaylor"
    check_domain = True

    def __init__(self, model, *, first: str | Rule = "zb", low=None, high=None,
                 max_pool: str = "winner_take_all", canonizers=None):  # fmt: skip
        if isinstance(first, str):
            choices = {
                "zb": lambda: ZBox(low, high),
                "zplus": lambda: ZPlus(bias=False),
                "w2": lambda: WSquare(bias=False),
            }
            if first not in choices:
                raise ValueError(f"first must be one of {sorted(choices)} or a Rule, not "
                                 f"{first!r}")  # fmt: skip
            first = choices[first]()
        zplus = ZPlus(bias=False)
        # average pools: the z-rule (sum-pooling in Montavon et al. 2017), z⁺ for a ≥ 0
        composite = Composite(conv=zplus, linear=zplus, pool=Epsilon(1e-6), first=first)
        composite.norm = composite.product = None  # not derived: refused
        super().__init__(model, composite, max_pool=max_pool, canonizers=canonizers)


@torch.no_grad()
def find_root(model, inputs: Tensor, objective, reference: Tensor, *, steps: int = 32,
              iterations: int = 40) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The point nearest to each input on the segment ``x + s (x⁰ − x)``, ``s ∈ [0, 1]``,
    where ``objective`` vanishes: ``(roots (B, ...), s (B,))``.

    ``steps`` equally spaced points locate the first sign change (one batched forward), then
    ``iterations`` bisection steps refine it (``|Δs| ≤ 2^-iterations / steps``). An item
    whose objective keeps its sign along the whole segment is refused (ValueError naming
    it): the segment holds no root.
    """
    x, ref = inputs.detach(), reference.detach()
    b, shape = x.shape[0], x.shape[1:]
    ones = (1,) * len(shape)
    s = torch.linspace(0, 1, steps + 1, dtype=x.dtype, device=x.device)
    points = (x.unsqueeze(0) + s.view(-1, 1, *ones) * (ref - x).unsqueeze(0)).view(-1, *shape)
    f = _grouped_scores(model, points, objective, b).view(steps + 1, b)
    sign0 = torch.sign(f[0])
    changed = (torch.sign(f) != sign0) | (f == 0)
    changed[0] = f[0] == 0
    if not changed.any(0).all():
        bad = (~changed.any(0)).nonzero().flatten().tolist()
        i = bad[0]
        raise ValueError(
            f"no root of the target on the segment from input {i} to the reference (target "
            f"{f[0, i].item():.4g} at the input, {f[-1, i].item():.4g} at the reference; "
            f"items without a root: {bad[:8]}). Pass a reference across the decision "
            "boundary (root=...) or search=False"
        )
    k = changed.float().argmax(0)  # first grid point at or past the root
    hi = s[k]
    lo = torch.where(k > 0, s[(k - 1).clamp(min=0)], hi)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        fm = _grouped_scores(model, x + mid.view(-1, *ones) * (ref - x), objective, b)
        past = (torch.sign(fm) != sign0) | (fm == 0)
        hi, lo = torch.where(past, mid, hi), torch.where(past, lo, mid)
    return x + hi.view(-1, *ones) * (ref - x), hi


def _grouped_scores(model, points: Tensor, objective, b: int) -> Tensor:
    """``objective`` on ``points`` made of consecutive blocks of ``b`` items."""
    n = points.shape[0] // b
    items = torch.arange(b).repeat(n)
    return scores(model, points, Target(model, points[:b], objective).rows(items))[0]


class SimpleTaylor(Attribution):
    """``R = (x − x̃) ⊙ ∇t(p)`` (module docstring), ``(B, ...)`` like the input.

    >>> r = SimpleTaylor(model).attribute(x, 3, root="blur", gradient_at="root")
    >>> r, remainder = SimpleTaylor(model).attribute(x, 3, return_delta=True)
    >>> r.shape, remainder.shape
    (torch.Size([2, 1, 28, 28]), torch.Size([2]))

    ``search=True`` looks for a root on the segment to ``root`` (it must cross the class's
    decision boundary, e.g. an image of another class).
    """

    def attribute(self, inputs: Tensor, target=None, *, root="black", search: bool = False,
                  gradient_at: str = "input", return_delta: bool = False,
                  generator=None):  # fmt: skip
        """``root``: the root point ``x̃`` or, with ``search``, the end of the segment searched
        for one (a name, a number, a tensor like one input or like ``inputs``, a callable;
        default ``"black"``). ``gradient_at``: ``"input"`` or ``"root"``. With
        ``return_delta`` also ``(B,)`` the remainder ``Σ_i R_i − (t(x) − t(x̃))``."""
        if gradient_at not in ("input", "root"):
            raise ValueError(f"gradient_at must be 'input' or 'root', not {gradient_at!r}")
        objective = resolve_target(self.model, inputs, target)
        x = inputs.detach()
        x0 = reference_for(root, x, self.info, generator)
        if search:
            x0, _ = find_root(self.model, x, objective, x0)
        at = x if gradient_at == "input" else x0
        g, _, s_at = gradients(self.model, at, objective)
        relevance = (x - x0) * g
        if not return_delta:
            return relevance
        with torch.no_grad():
            sx = s_at if gradient_at == "input" else scores(self.model, x, objective)[0]
            s0 = scores(self.model, x0, objective)[0] if gradient_at == "input" else s_at
        return relevance, item_sums(relevance) - (sx - s0).detach()
