"""Attention rollout (fvis.attribution.rollout): exact numbers on a hand-set token model,
equality with a rollout computed here from attention probabilities recomputed by hand on
torchvision's and timm's ViTs (and Hugging Face's own attention output), and refusals
(a CNN, a ViT without a class token, Swin's windows)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
import transformers
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis.attribution import AttentionRollout
from fvis.hooks import UnsupportedOperation, attention_probabilities

torch.set_num_threads(1)


class _Tokens(nn.Module):
    """Patch embedding (8×8 patches of a 16×16 image: a 2×2 grid), a class token and
    ``depth`` blocks ``x + sdpa(x W_q, x W_k, x)`` with 2 heads of 2 dims."""

    def __init__(self, depth=2, d=4, heads=2):
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(1, d, 8, stride=8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.wq = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(depth))
        self.wk = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(depth))
        self.head = nn.Linear(d, 3)

    def split(self, t):  # (B, N, D) -> (B, H, N, D/H)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1)
        for wq, wk in zip(self.wq, self.wk):
            o = F.scaled_dot_product_attention(self.split(wq(t)), self.split(wk(t)), self.split(t))
            t = t + o.transpose(1, 2).flatten(2)
        return self.head(t[:, 0])


def _tokens(zero_keys: bool):
    torch.manual_seed(0)
    model = _Tokens().eval()
    if zero_keys:
        with torch.no_grad():
            for wk in model.wk:
                wk.weight.zero_()
    return model


def _reference(probs, fuse="mean", discard=0.0, r=0.5):
    """The product formula written out: P (B, H, N, N) per block, first block first."""
    out = None
    for p in probs:
        a = {"mean": p.mean(1), "max": p.amax(1), "min": p.amin(1)}[fuse].double()
        n = a.shape[-1]
        k = int(n * discard)
        if k:
            a = a.clone()
            for b in range(a.shape[0]):
                for i in range(n):
                    order = [j for j in a[b, i].argsort().tolist() if j != 0]
                    a[b, i, order[:k]] = 0
        a = (1 - r) * a + r * torch.eye(n, dtype=a.dtype)
        a = a / a.sum(-1, keepdim=True)
        out = a if out is None else a @ out
    return out


def test_uniform_attention_gives_the_hand_computed_rollout():
    """W_k = 0: every attention row is uniform, A = J/5 (N = 1 + 2·2). Â = 0.1 J + 0.5 I,
    Â² = 0.15 J + 0.25 I, so each patch gets 0.15; residual 0: (J/5)² = J/5 → 0.2;
    residual 1: I → 0."""
    model = _tokens(zero_keys=True)
    x = torch.rand(2, 1, 16, 16)
    method = AttentionRollout(model)
    m = method.attribute(x)
    assert m.shape == (2, 1, 2, 2)
    assert torch.allclose(m, torch.full_like(m, 0.15), atol=1e-6)
    assert torch.allclose(method.attribute(x, residual=0.0), torch.full_like(m, 0.2), atol=1e-6)
    assert torch.equal(method.attribute(x, residual=1.0), torch.zeros_like(m))
    up = method.attribute(x, upsample=True)
    assert up.shape == (2, 1, 16, 16) and torch.allclose(up, torch.full_like(up, 0.15), atol=1e-6)


def test_hand_set_model_equals_the_product_of_explicit_softmaxes():
    model = _tokens(zero_keys=False)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    # the attention probabilities written out: softmax(q kᵀ/√d), d = 2
    t = model.patch(x).flatten(2).transpose(1, 2)
    t = torch.cat([model.cls_token.expand(2, -1, -1), t], 1)
    probs = []
    with torch.no_grad():
        for wq, wk in zip(model.wq, model.wk):
            q, k, v = model.split(wq(t)), model.split(wk(t)), model.split(t)
            p = torch.softmax(q @ k.transpose(-2, -1) / 2**0.5, -1)
            probs.append(p)
            t = t + (p @ v).transpose(1, 2).flatten(2)
    recorded = attention_probabilities(model, x)
    assert len(recorded) == 2
    for a, b in zip(recorded, probs):
        assert torch.allclose(a, b, atol=1e-6)
    method = AttentionRollout(model)
    for opts in ({}, {"head_fusion": "max", "discard_ratio": 0.4}, {"head_fusion": "min"}):
        ref = _reference(probs, opts.get("head_fusion", "mean"), opts.get("discard_ratio", 0.0))
        want = ref[:, 0, 1:].reshape(2, 1, 2, 2).float()
        assert torch.allclose(method.attribute(x, **opts), want, atol=1e-6), opts
    assert_clean(model, before)


def _torchvision_vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()


def test_torchvision_vit_equals_rollout_of_need_weights_attention():
    model = _torchvision_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    before = snapshot(model)
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(2)]
    with torch.no_grad():
        acts = fvis.capture(model, x, [f"{b}.ln_1" for b in blocks])
        probs = [
            model.get_submodule(f"{b}.self_attention")(
                y := acts[f"{b}.ln_1"], y, y, need_weights=True, average_attn_weights=False
            )[1]
            for b in blocks
        ]
    assert probs[0].shape == (2, 2, 17, 17)
    method = AttentionRollout(model)
    for opts in ({}, {"head_fusion": "max", "discard_ratio": 0.3, "residual": 0.3}):
        ref = _reference(probs, opts.get("head_fusion", "mean"), opts.get("discard_ratio", 0.0),
                         opts.get("residual", 0.5))  # fmt: skip
        m = method.attribute(x, **opts)
        assert m.shape == (2, 1, 4, 4) and torch.isfinite(m).all()
        assert torch.allclose(m, ref[:, 0, 1:].reshape(2, 1, 4, 4).float(), atol=1e-5), opts
    assert_clean(model, before)


def test_timm_vit_equals_rollout_of_hand_computed_attention():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64)
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    before = snapshot(model)
    with torch.no_grad():
        acts = fvis.capture(model, x, ["blocks.0.norm1", "blocks.1.norm1"])
        probs = []
        for i in range(2):
            attn, y = model.blocks[i].attn, acts[f"blocks.{i}.norm1"]
            qkv = attn.qkv(y).reshape(2, 17, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            probs.append(torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, -1))
    ref = _reference(probs)[:, 0, 1:].reshape(2, 1, 4, 4).float()
    m = AttentionRollout(model).attribute(x, target=5)
    assert m.shape == (2, 1, 4, 4) and torch.isfinite(m).all()
    assert torch.allclose(m, ref, atol=1e-5)
    assert torch.allclose(AttentionRollout(model).attribute(x[1:]), m[1:], atol=1e-6)  # per item
    for blk in model.blocks:  # timm's written-out attention (explicit softmax) gives the same
        blk.attn.fused_attn = False
    assert torch.allclose(AttentionRollout(model).attribute(x), ref, atol=1e-5)
    assert_clean(model, before)


def test_hugging_face_vit_equals_rollout_of_its_output_attentions():
    """Hugging Face's eager attention (an explicit softmax) and its own attention output."""
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
        intermediate_size=32, num_labels=10, attn_implementation="eager",
    )  # fmt: skip
    raw = transformers.ViTForImageClassification(config).eval()
    model = fvis.load_model(raw)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        probs = raw(pixel_values=x, output_attentions=True).attentions
    ref = _reference(probs, "min", 0.2)[:, 0, 1:].reshape(2, 1, 4, 4).float()
    m = AttentionRollout(model).attribute(x, head_fusion="min", discard_ratio=0.2)
    assert torch.allclose(m, ref, atol=1e-5)


def test_refuses_a_cnn_a_vit_without_class_token_and_swin(mnist_model):
    with pytest.raises(UnsupportedOperation, match="needs attention layers.*MnistCNN runs none"):
        AttentionRollout(mnist_model).attribute(torch.rand(1, 1, 28, 28))
    torch.manual_seed(0)
    gap = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32,
                            class_token=False, global_pool="avg").eval()  # fmt: skip
    with pytest.raises(UnsupportedOperation, match="no class token"):
        AttentionRollout(gap).attribute(torch.rand(1, 3, 32, 32))
    swin = torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2]
    ).eval()  # windows of 2×2 tokens, 4 then 1 per image
    with pytest.raises(UnsupportedOperation, match="same \\(B, N, N\\).*SwinTransformer"):
        AttentionRollout(swin).attribute(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(_tokens(True)).attribute(torch.rand(1, 1, 16, 16), head_fusion="sum")
