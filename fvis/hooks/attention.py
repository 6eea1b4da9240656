"""Fused attention written out in the operations attribution rules act on.

``F.scaled_dot_product_attention`` (timm's ViT) and ``F.multi_head_attention_forward``
(``nn.MultiheadAttention``, torchvision's ViT) run as one torch function, so the
interceptor (:mod:`fvis.hooks.intercept`) would see neither the softmax nor the two
products inside. For a policy that acts on those, it runs them as written here instead,
with the interceptor active:

    A = softmax(q kᵀ · scale + mask),   out = A v                         (B, ..., L, E)

``mha`` adds the input and output projections of ``nn.MultiheadAttention``
(``q = x_q W_qᵀ + b_q``, heads split from the embedding, ``out = concat_h(A_h v_h) W_oᵀ +
b_o``). Both give the fused function's value up to float rounding. Options they do not
write out (dropout in training, ``bias_k``/``bias_v``, ``add_zero_attn``, static keys,
grouped-query attention) raise ``NotImplementedError`` naming the option.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mha", "sdpa"]


def _as_float_mask(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """A boolean mask (True = attend) as an additive one (0 / -inf)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
        ~mask, float("-inf")
    )


def _is_bool(mask: Tensor | None) -> bool:
    return mask is not None and mask.dtype == torch.bool


def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
         enable_gqa=False) -> Tensor:  # fmt: skip
    """``F.scaled_dot_product_attention`` as ``softmax(q kᵀ · scale + mask) v``, with
    ``scale = 1/√E`` by default and ``is_causal`` a lower-triangular mask."""
    if dropout_p:
        raise NotImplementedError("attention dropout (dropout_p > 0): call model.eval()")
    if enable_gqa:
        raise NotImplementedError("grouped-query attention (enable_gqa=True)")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1)
    scores = scores * scale
    if is_causal:
        n, s = query.shape[-2], key.shape[-2]
        causal = torch.ones(n, s, dtype=torch.bool, device=query.device).tril()
        scores = scores + _as_float_mask(causal, scores)
    mask = _as_float_mask(attn_mask, scores)
    if mask is not None:
        scores = scores + mask
    return F.softmax(scores, dim=-1) @ value


def mha(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
        bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
        training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
        use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
        v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
        is_causal=False):  # fmt: skip
    """``F.multi_head_attention_forward`` for inputs ``(L, N, E)`` (or unbatched ``(L, E)``):
    ``(output, attention weights or None)`` as it returns them."""
    for name, v in (("bias_k", bias_k), ("bias_v", bias_v), ("static_k", static_k),
                    ("static_v", static_v)):  # fmt: skip
        if v is not None:
            raise NotImplementedError(f"nn.MultiheadAttention with {name}")
    if add_zero_attn:
        raise NotImplementedError("nn.MultiheadAttention with add_zero_attn=True")
    if training and dropout_p:
        raise NotImplementedError("attention dropout in training mode: call model.eval()")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = (t.unsqueeze(1) for t in (query, key, value))
    e = query.shape[-1]
    if e != embed_dim_to_check:
        raise ValueError(f"query's embedding size {e} is not embed_dim {embed_dim_to_check}")
    if use_separate_proj_weight:
        wq, wk, wv = q_proj_weight, k_proj_weight, v_proj_weight
    else:
        wq, wk, wv = in_proj_weight.chunk(3)
    bq, bk, bv = in_proj_bias.chunk(3) if in_proj_bias is not None else (None, None, None)
    # batch first: (N, L, E), so that every nonlinear step sees items along dim 0
    q = F.linear(query.transpose(0, 1), wq, bq)
    k = F.linear(key.transpose(0, 1), wk, bk)
    v = F.linear(value.transpose(0, 1), wv, bv)
    n, lq, s, hd = q.shape[0], q.shape[1], k.shape[1], e // num_heads

    def heads(t, length):  # (N, L, E) -> (N, H, L, E/H)
        return t.reshape(n, length, num_heads, hd).transpose(1, 2)

    q, k, v = heads(q, lq), heads(k, s), heads(v, s)
    # nn.MultiheadAttention's boolean masks mark what may *not* be attended (sdpa's: may)
    mask = _as_float_mask(~attn_mask if _is_bool(attn_mask) else attn_mask, q)
    if mask is not None and mask.dim() == 3:  # (N·H, L, S)
        mask = mask.reshape(n, num_heads, lq, s)
    if key_padding_mask is not None:
        pad = key_padding_mask.reshape(n, 1, 1, s)
        pad = _as_float_mask(~pad if _is_bool(pad) else pad, q)
        mask = pad if mask is None else mask + pad
    if is_causal and mask is None:
        mask = _as_float_mask(torch.ones(lq, s, dtype=torch.bool, device=q.device).tril(), q)
    scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores, dim=-1)  # (N, H, L, S)
    out = (weights @ v).transpose(1, 2).reshape(n, lq, e)
    out = F.linear(out, out_proj_weight, out_proj_bias).transpose(0, 1)  # (L, N, E)
    if not need_weights:
        w = None
    else:
        w = weights.mean(1) if average_attn_weights else weights
    if unbatched:
        out = out.squeeze(1)
        w = w.squeeze(0) if w is not None else None
    return out, w
