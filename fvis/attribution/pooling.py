"""The windows of a max pool, for rules that look at every input of a window, not only its
maximum: LRP's proportional max-pool rule and DeepLIFT's Shapley max-pool rule.

:func:`windows` turns a max-pool call (``F.max_pool1-3d`` with kernel, stride, padding,
dilation and ceil mode, or ``F.adaptive_max_pool1-3d``) into an index table ``(O, K)``:
row ``o`` lists the flat spatial positions of the ``K`` inputs of output position ``o``
(``O`` = output positions, ``K`` = the largest window; padding and short adaptive windows
are marked invalid). :func:`gather` reads the windows of a tensor, :func:`scatter` adds
per-window values back onto the input positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Windows", "windows", "gather", "scatter", "shapley_max"]

_ADAPTIVE = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}
_FIXED = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}


class Windows:
    """``index`` (O, K) flat input positions, ``valid`` (O, K) bool, for inputs whose
    trailing ``nd`` dimensions are ``in_size`` and outputs ``out_size``."""

    def __init__(self, index: Tensor, valid: Tensor, nd: int, in_size, out_size):
        self.index, self.valid, self.nd = index, valid, nd
        self.in_size, self.out_size = tuple(in_size), tuple(out_size)


def _tuple(v, nd: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * nd
    v = tuple(v)
    return v * nd if len(v) == 1 else v


def _axis(n_in: int, n_out: int, k: int, s: int, p: int, d: int, device) -> tuple[Tensor, Tensor]:
    """Positions ``o·s − p + j·d`` (j < k) of each output ``o`` along one axis."""
    idx = torch.arange(n_out, device=device)[:, None] * s - p + torch.arange(k, device=device) * d
    return idx, (idx >= 0) & (idx < n_in)


def _adaptive_axis(n_in: int, n_out: int, device) -> tuple[Tensor, Tensor]:
    """torch's adaptive windows ``[⌊o·I/O⌋, ⌈(o+1)·I/O⌉)`` along one axis."""
    starts = [(o * n_in) // n_out for o in range(n_out)]
    ends = [-((-(o + 1) * n_in) // n_out) for o in range(n_out)]
    k = max(e - s for s, e in zip(starts, ends))
    idx = torch.tensor(starts, device=device)[:, None] + torch.arange(k, device=device)
    return idx, idx < torch.tensor(ends, device=device)[:, None]


def windows(func, options: dict, in_shape, out_shape, device=None) -> Windows:
    """The windows of ``func(input, **options)`` for an input of shape ``in_shape`` with
    output ``out_shape`` (only their trailing spatial dimensions are used)."""
    if func in _ADAPTIVE:
        nd = _ADAPTIVE[func]
        ins, outs = tuple(in_shape[-nd:]), tuple(out_shape[-nd:])
        axes = [_adaptive_axis(i, o, device) for i, o in zip(ins, outs)]
    elif func in _FIXED:
        nd = _FIXED[func]
        ins, outs = tuple(in_shape[-nd:]), tuple(out_shape[-nd:])
        k = _tuple(options["kernel_size"], nd)
        stride = options.get("stride")
        s = k if stride is None or stride == [] or stride == () else _tuple(stride, nd)
        p = _tuple(options.get("padding", 0), nd)
        d = _tuple(options.get("dilation", 1), nd)
        axes = [_axis(*args, device) for args in zip(ins, outs, k, s, p, d)]
    else:
        raise TypeError(f"not a max pool: {func}")
    index = torch.zeros((), dtype=torch.long, device=device)
    valid = torch.ones((), dtype=torch.bool, device=device)
    stride = 1
    # combine the axes, last axis fastest: (O1, K1) x (O2, K2) -> (O1, O2, K1, K2)
    for a in reversed(range(nd)):
        idx, ok = axes[a]
        shape = [1] * (2 * nd)
        shape[a], shape[nd + a] = idx.shape
        index = index + (idx.clamp(0, ins[a] - 1) * stride).view(shape)
        valid = valid & ok.view(shape)
        stride *= ins[a]
    n_out, n_k = math.prod(outs), math.prod(ax[0].shape[1] for ax in axes)
    index = index.expand(*outs, *(ax[0].shape[1] for ax in axes)).reshape(n_out, n_k)
    valid = valid.expand_as(index.view(*outs, *(ax[0].shape[1] for ax in axes)))
    return Windows(index, valid.reshape(n_out, n_k), nd, ins, outs)


def gather(z: Tensor, w: Windows) -> Tensor:
    """The windows of ``z`` (..., *in_size) as (..., O, K); invalid entries hold an
    arbitrary member of their window (mask them with ``w.valid``)."""
    lead = z.shape[: z.dim() - w.nd]
    flat = z.reshape(*lead, -1)
    return flat[..., w.index]


def scatter(v: Tensor, w: Windows) -> Tensor:
    """The sum over windows of per-member values ``v`` (..., O, K) at their input positions:
    (..., *in_size); invalid entries are dropped."""
    lead = v.shape[:-2]
    v = torch.where(w.valid, v, 0).reshape(*lead, -1)
    out = v.new_zeros(*lead, math.prod(w.in_size))
    out.index_add_(out.dim() - 1, w.index.flatten(), v)
    return out.view(*lead, *w.in_size)


def shapley_max(x: Tensor, r: Tensor, valid: Tensor) -> Tensor:
    """Exact Shapley values of ``v(S) = max(x_i for i ∈ S, r_i for i ∉ S)`` per window.

    ``x``, ``r``: (..., K) the window's values at the input and at the reference;
    ``valid``: (..., K) or broadcastable, members that exist. Returns ``φ`` (..., K) with
    ``Σ_i φ_i = max x − max r`` and ``φ_i = 0`` where ``x_i = r_i`` or invalid.

    With ``v(S) = L + ∫_L^∞ 1[v(S) > t] dt`` (``L`` the smallest value) and Shapley values
    linear in the game, ``φ = ∫ φ(u_t) dt``. For a threshold ``t`` each member is *on*
    whatever the coalition (``x_i, r_i > t``: then ``u_t`` is constant and ``φ(u_t) = 0``),
    on only when in ``S`` (set ``A``: ``x_i > t ≥ r_i``), on only when out (``B``) or never.
    ``u_t = 1 − 1[S ∩ A = ∅, B ⊆ S]`` gives, with ``a = |A|``, ``b = |B|``,
    ``φ_i = b!(a−1)!/(a+b)!`` for ``i ∈ A`` and ``−(b−1)!a!/(a+b)!`` for ``i ∈ B``;
    ``u_t`` is constant between consecutive values, so the integral is a finite sum.
    Cost ``O(K²)`` per window.
    """
    valid = valid.expand_as(x)
    big = torch.finfo(x.dtype).max
    low = torch.minimum(torch.where(valid, x, big), torch.where(valid, r, big)).amin(-1, True)
    x, r = torch.where(valid, x, low), torch.where(valid, r, low)  # null players
    s = torch.cat([x, r], -1).sort(-1).values
    t, length = s[..., :-1], s[..., 1:] - s[..., :-1]  # (..., 2K−1) thresholds, widths
    on_x = x.unsqueeze(-2) > t.unsqueeze(-1)  # (..., 2K−1, K)
    on_r = r.unsqueeze(-2) > t.unsqueeze(-1)
    always = (on_x & on_r).any(-1, keepdim=True)
    in_a, in_b = on_x & ~on_r & ~always, on_r & ~on_x & ~always
    a = in_a.sum(-1, keepdim=True).to(x.dtype)
    b = in_b.sum(-1, keepdim=True).to(x.dtype)
    lg = torch.lgamma
    total = lg(a + b + 1)
    phi_a = torch.exp(lg(b + 1) + lg(a.clamp(min=1)) - total)
    phi_b = -torch.exp(lg(b.clamp(min=1)) + lg(a + 1) - total)
    per = torch.where(in_a, phi_a, 0) + torch.where(in_b, phi_b, 0)
    return (per * length.unsqueeze(-1)).sum(-2)
