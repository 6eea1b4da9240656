"""Transformer rules: LRP's LN- and AH-rules (Ali et al. 2022), DeepLIFT through layer norms,
softmax and products, Guided Backprop / Deconvnet on GELU and SiLU.

The hand-set block's reference LRP is written out below with explicit formulas (no fvis);
the tiny torchvision ViT, Swin and ConvNeXt and timm ViT check conservation and
summation-to-delta on real layouts (fused attention, window attention, channels-last
layer norms, layer scale). zennit and captum have no rules for layer norm or attention, so
there is no peer to compare with.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from fvis.attribution import LRP, Deconvnet, DeepLift, DeepTaylor, Gradient, GuidedBackprop, lrp
from fvis.attribution.composites import Uniform
from fvis.attribution.rules import Epsilon, ZPlus
from fvis.hooks import UnsupportedOperation, attention, check_no_hooks
from fvis.models import ModelInfo, attach

CONSERVE = Uniform(Epsilon(0.0, bias=False))  # the bias-free rules: relevance is conserved
D, N = 4, 3  # embedding size, tokens


class Block(nn.Module):
    """A pre-norm transformer block and a linear head on the token mean. Input (B, D, 1, N):
    D features of N tokens."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(12)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(D, 6), nn.GELU(), nn.Linear(6, D)
        self.head = nn.Linear(D, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            for ln in (self.ln1, self.ln2):
                ln.weight.add_(1.0)  # γ ≈ 1 ± 0.5, β ≈ ±0.5

    def forward(self, img):
        x = img.flatten(2).transpose(1, 2)  # (B, N, D)
        u = self.ln1(x)
        a = torch.softmax(self.q(u) @ self.k(u).transpose(1, 2) / 2, dim=-1)  # √D = 2
        h = x + self.o(a @ self.v(u))
        y = h + self.fc2(self.act(self.fc1(self.ln2(h))))
        return self.head(y.mean(1))


@pytest.fixture(scope="module")
def block():
    return attach(Block().double().eval(), ModelInfo((D, 1, N)))


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, D, 1, N, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- the reference LRP
def _linear(a, lin, r):
    """ε = 0, bias-free: ``R_i = a_i Σ_j w_ji R_j / Σ_k a_k w_jk``."""
    return a * ((r / (a @ lin.weight.T)) @ lin.weight)


def _layer_norm(x, ln, r):
    """LN-rule: σ constant, ``y_j = γ_j/σ (x_j − μ)`` bias-free; ``R_i = x_i Σ_j
    (γ_j/σ)(δ_ij − 1/D) R_j / y_j``."""
    mu = x.mean(-1, keepdim=True)
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    t = r / ((x - mu) / sigma * ln.weight) * ln.weight / sigma
    return x * (t - t.mean(-1, keepdim=True))


def _split(a, b, r):
    """A residual sum: ``R_a = a R / (z + 1e-6 sign z)`` (fvis's SUM_RULE)."""
    z = a + b
    d = z + 1e-6 * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    return a * r / d, b * r / d


def _uniform(a, b, f, r):
    """AttnLRP's uniform rule for ``y = f(a, b)`` bilinear, ε = 0: half to each factor."""
    la, lb = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
    with torch.enable_grad():
        y = f(la, lb)
        ga, gb = torch.autograd.grad(y, (la, lb), r / y.detach() / 2)
    return a * ga, b * gb


def reference_lrp(m: Block, img, c: int, attnlrp: bool = False):
    x = img.flatten(2).transpose(1, 2)
    u = m.ln1(x)
    a = torch.softmax(m.q(u) @ m.k(u).transpose(1, 2) / 2, dim=-1)
    v = m.v(u)
    av = a @ v
    o = m.o(av)
    h = x + o
    l2 = m.ln2(h)
    p = m.fc1(l2)
    gl = m.act(p)
    f = m.fc2(gl)
    y = h + f
    mean = y.mean(1)
    logits = m.head(mean)
    r = torch.zeros_like(logits)
    r[:, c] = logits[:, c]  # R = A ⊙ ∂t/∂A at the logits
    r_mean = _linear(mean, m.head, r)
    r_y = y / N * (r_mean / mean).unsqueeze(1)  # the mean over tokens: z-rule
    r_h, r_f = _split(h, f, r_y)
    r_gl = _linear(gl, m.fc2, r_f)
    r_p = r_gl  # GELU: identity rule
    r_l2 = _linear(l2, m.fc1, r_p)
    r_h = r_h + _layer_norm(h, m.ln2, r_l2)
    r_x, r_o = _split(x, o, r_h)
    r_av = _linear(av, m.o, r_o)
    if not attnlrp:
        r_v = v * (a.transpose(1, 2) @ (r_av / (a @ v)))  # AH-rule: A constant, q and k get 0
        r_u = _linear(u, m.v, r_v)
    else:  # AttnLRP: A v and q kᵀ uniform, softmax R_z = z ⊙ (R − s ⊙ Σ R)
        r_a, r_v = _uniform(a, v, torch.matmul, r_av)
        q, kt = m.q(u), m.k(u).transpose(1, 2)
        z = q @ kt / 2
        r_z = z * (r_a - a * r_a.sum(-1, keepdim=True))
        r_q, r_kt = _uniform(q, kt, torch.matmul, r_z)  # the scale by 1/2 passes relevance
        r_u = _linear(u, m.v, r_v) + _linear(u, m.q, r_q) + _linear(u, m.k, r_kt.transpose(1, 2))
    r_x = r_x + _layer_norm(x, m.ln1, r_u)
    return r_x.transpose(1, 2).reshape(img.shape), logits[:, c]


# ---------------------------------------------------------------- hand-set block
def test_lrp_on_a_transformer_block_equals_the_written_out_rules_and_conserves(block):
    x = _inputs()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    for c in (0, 1):
        r = LRP(block, CONSERVE).attribute(x, c)
        with torch.no_grad():
            expected, logit = reference_lrp(block, x, c)
        torch.testing.assert_close(r, expected, rtol=1e-9, atol=1e-12)
        # conserved: the only loss is the residual sums' 1e-6 stabilizer
        assert (r.sum((1, 2, 3)) - logit).abs().max() < 1e-5
        assert (r.sum((1, 2, 3)) - logit).abs().max() > 0  # not the logit copied out
    assert check_no_hooks(block) == []
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in before.items())


def test_attnlrp_on_a_transformer_block_equals_the_written_out_rules(block):
    x = _inputs()
    r = LRP(block, CONSERVE, attention="attnlrp").attribute(x, 0)
    with torch.no_grad():
        expected, logit = reference_lrp(block, x, 0, attnlrp=True)
        ah, _ = reference_lrp(block, x, 0)
    torch.testing.assert_close(r, expected, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(r, ah)  # queries and keys get relevance now


def test_layer_norm_takes_only_epsilon_rules_and_deep_taylor_refuses_it(block):
    with pytest.raises(UnsupportedOperation, match="Epsilon"):
        LRP(block, Uniform(ZPlus())).attribute(_inputs(), 0)
    with pytest.raises(UnsupportedOperation, match="DeepTaylor .*F.layer_norm in module 'ln1'"):
        DeepTaylor(block, first="w2").attribute(_inputs(), 0)
    assert check_no_hooks(block) == []


class _ScoresOut(nn.Module):
    """Attention scores that reach the output other than through softmax."""

    def forward(self, img):
        x = img.flatten(2).transpose(1, 2)
        s = x @ x.transpose(1, 2)
        return (torch.softmax(s, -1) @ x).mean((1, 2)).unsqueeze(1) + s.mean((1, 2)).unsqueeze(1)


def test_lrp_refuses_relevance_that_reaches_a_product_other_than_through_softmax():
    net = attach(_ScoresOut(), ModelInfo((D, 1, N)))
    with pytest.raises(UnsupportedOperation, match="Tensor.matmul in module '<model>'"):
        LRP(net).attribute(_inputs().float(), 0)
    assert check_no_hooks(net) == []


def test_deeplift_through_layer_norm_softmax_and_products_sums_to_delta(block):
    x, ref = _inputs(), _inputs(seed=1)[:1]
    for c in (0, 1):
        attr, delta = DeepLift(block).attribute(x, c, reference=ref[0], return_delta=True)
        assert delta.abs().max() < 1e-12
        assert attr.abs().sum() > 0.1
    with pytest.raises(UnsupportedOperation, match="RevealCancel.*'rescale'"):
        DeepLift(block, "reveal_cancel").attribute(x, 0)


class _Product(nn.Module):
    def forward(self, img):
        return (img[:, 0] * img[:, 1]).flatten(1)


def test_deeplift_product_rule_splits_the_cross_term_equally():
    """``Δ(ab) = Δa·(b + b⁰)/2 + Δb·(a + a⁰)/2`` (the two factors' Shapley values)."""
    net = attach(_Product(), ModelInfo((2, 1, 1)))
    x = torch.tensor([[[[3.0]], [[5.0]]]], dtype=torch.float64)
    ref = torch.tensor([[[1.0]], [[2.0]]], dtype=torch.float64)
    attr = DeepLift(net).attribute(x, 0, reference=ref)
    # Δa = 2, Δb = 3: C_a = 2·(5 + 2)/2 = 7, C_b = 3·(3 + 1)/2 = 6; 7 + 6 = 15 − 2
    assert attr.flatten().tolist() == [7.0, 6.0]


# ---------------------------------------------------------------- tiny real transformers
class RoutedViT(VisionTransformer):
    """torchvision's ViT with its class token written ``token + 0·mean(patches)``: the same
    values, but the relevance of the class token — a constant, which absorbs relevance as
    a bias does — passes on (scaling passes relevance) to the image, so the whole logit
    is conserved to the input."""

    def forward(self, x):
        t = self._process_input(x)
        pooled = F.adaptive_avg_pool1d(t.transpose(1, 2), 1).transpose(1, 2)
        t = torch.cat([self.class_token + 0 * pooled, t], dim=1)
        return self.heads(self.encoder(t)[:, 0])


def _tiny(name):
    torch.manual_seed(0)
    if name == "vit":
        m = RoutedViT(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                      mlp_dim=32)  # fmt: skip
    elif name == "swin":
        m = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                            window_size=[4, 4], num_classes=10)  # fmt: skip
    elif name == "convnext":
        m = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=10)
    else:  # timm's ViT through F.scaled_dot_product_attention; no class token: avg pool
        m = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, pretrained=False,
                              class_token=False, global_pool="avg", num_classes=10)  # fmt: skip
    for p in m.modules():  # torchvision's ViT head starts at 0
        if isinstance(p, nn.Linear) and not p.weight.any():
            nn.init.normal_(p.weight, std=0.1)
    size = 64 if name == "timm_vit" else 32
    return attach(m.double().eval(), ModelInfo((3, size, size))), size


@pytest.mark.parametrize("name", ["vit", "swin", "convnext", "timm_vit"])
def test_tiny_transformers_conserve_and_sum_to_delta(name, monkeypatch):
    model, size = _tiny(name)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)  # fmt: skip
    with torch.no_grad():
        logits = model(x)
    c = int(logits[0].argmax())

    def error():
        r = LRP(model, CONSERVE).attribute(x, c)
        assert torch.isfinite(r).all() and r.std() > 0
        return ((r.sum((1, 2, 3)) - logits[:, c]).abs() / logits[:, c].abs()).max()

    # the residual sums' stabilizer (ε = 1e-6, absolute) is the only loss: ~1e-5 of the
    # logit here (Swin 2.4e-5, ConvNeXt 6e-6, ViT 5e-6); without it, none
    assert error() < 1e-4
    monkeypatch.setattr(lrp, "SUM_RULE", Epsilon(0.0))
    assert error() < 1e-12
    monkeypatch.undo()
    for kw in ({}, {"attention": "attnlrp"}):  # biases, softmax rule: finite, not conserved
        default = LRP(model, **kw).attribute(x, c)
        assert torch.isfinite(default).all() and default.std() > 0
    attr, delta = DeepLift(model).attribute(x, c, return_delta=True)
    assert torch.isfinite(attr).all() and attr.std() > 0
    assert delta.abs().max() < 1e-9 * max(1.0, float(logits.abs().max()))
    assert check_no_hooks(model) == []


def test_timm_vit_with_class_token_runs():
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, pretrained=False,
                          num_classes=10)  # fmt: skip
    model = attach(m.eval(), ModelInfo((3, 64, 64)))
    x = torch.rand(1, 3, 64, 64)
    r = LRP(model).attribute(x, 3)
    attr, delta = DeepLift(model).attribute(x, 3, return_delta=True)
    assert torch.isfinite(r).all() and r.std() > 0 and torch.isfinite(attr).all()
    assert delta.abs().max() < 1e-4


# ---------------------------------------------------------------- Guided Backprop on GELU/SiLU
def _rect_net(act):
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False), act, nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(2))
        net[3].weight.fill_(2.0)
    return attach(net.double().eval(), ModelInfo((2, 1, 1)))


# f'(1), f'(−1): GELU Φ(z) + z φ(z); SiLU σ(z)(1 + z(1 − σ(z)))
@pytest.mark.parametrize(
    ("act", "grad", "guided"),
    [
        (nn.GELU(), [2.166631, -0.166631], [2.166631, 0.0]),
        (nn.SiLU(), [1.855342, 0.144658], [1.855342, 0.0]),
    ],
)
def test_guided_backprop_and_deconvnet_on_gelu_and_silu(act, grad, guided):
    """z = (1, −1), g = (2, 2) at the unit: Guided Backprop ``1[z > 0] max(f'(z) g, 0)`` drops
    z = −1 also where ``f'(z) g > 0`` (SiLU); Deconvnet ``max(g, 0)`` = 2 at both."""
    net = _rect_net(act)
    x = torch.tensor([[[[1.0]], [[-1.0]]]], dtype=torch.float64)
    for method, expected in ((Gradient, grad), (GuidedBackprop, guided)):
        got = method(net).attribute(x, 0).flatten()
        torch.testing.assert_close(got, torch.tensor(expected).double(), atol=2e-6, rtol=0)
    assert Deconvnet(net).attribute(x, 0).flatten().tolist() == [2.0, 2.0]


def test_guided_backprop_on_a_net_with_relu_and_gelu_modifies_both():
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 4), nn.ReLU(),
                        nn.Linear(4, 1))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    net = attach(net.double().eval(), ModelInfo((3, 1, 1)))
    x = torch.randn(5, 3, 1, 1, generator=g, dtype=torch.float64)
    a, b, c = net[1], net[3], net[5]
    z1 = a(x.flatten(1))
    z2 = b(F.gelu(z1))
    d1 = 0.5 * (1 + torch.erf(z1 / math.sqrt(2))) + z1 * torch.exp(-(z1**2) / 2) / math.sqrt(
        2 * math.pi
    )  # GELU'(z1)
    g2 = c.weight.expand(5, -1)
    # Guided Backprop: ReLU 1[z2 > 0] max(g, 0), GELU 1[z1 > 0] max(f'(z1) g, 0)
    g1 = (torch.where(z2 > 0, g2.clamp(min=0), 0)) @ b.weight
    expected = (torch.where(z1 > 0, (d1 * g1).clamp(min=0), 0)) @ a.weight
    torch.testing.assert_close(GuidedBackprop(net).attribute(x, 0).flatten(1), expected)
    # Deconvnet: max(g, 0) at both
    expected = ((g2.clamp(min=0) @ b.weight).clamp(min=0)) @ a.weight
    torch.testing.assert_close(Deconvnet(net).attribute(x, 0).flatten(1), expected)
    assert not torch.allclose(GuidedBackprop(net).attribute(x, 0), Gradient(net).attribute(x, 0))


# ---------------------------------------------------------------- fused attention written out
def test_written_out_attention_equals_the_fused_functions():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    keep = torch.rand(5, 5, generator=g) > 0.3
    keep.fill_diagonal_(True)
    float_mask = torch.randn(5, 5, generator=g, dtype=torch.float64)
    for kw in ({}, {"attn_mask": keep}, {"attn_mask": float_mask}, {"is_causal": True},
               {"scale": 0.3}):  # fmt: skip
        torch.testing.assert_close(attention.sdpa(q, k, v, **kw),
                                   F.scaled_dot_product_attention(q, k, v, **kw))  # fmt: skip
    mha = nn.MultiheadAttention(8, 2).double().eval()
    x = torch.randn(5, 3, 8, generator=g, dtype=torch.float64)  # (L, N, E)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[1, 3:] = True
    args = (x, x, x, 8, 2, mha.in_proj_weight, mha.in_proj_bias, None, None, False, 0.0,
            mha.out_proj.weight, mha.out_proj.bias)  # fmt: skip
    for kw in ({"need_weights": False}, {"need_weights": True}, {"key_padding_mask": pad},
               {"attn_mask": ~keep, "average_attn_weights": False}):  # fmt: skip
        got, want = (
            attention.mha(*args, training=False, **kw),
            F.multi_head_attention_forward(*args, training=False, **kw),
        )
        torch.testing.assert_close(got[0], want[0])
        assert (got[1] is None) == (want[1] is None)
        if want[1] is not None:
            torch.testing.assert_close(got[1], want[1])


class _TorchMHA(nn.Module):
    """``nn.MultiheadAttention`` in its default (L, N, E) layout, with a residual and a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.attn, self.head = nn.MultiheadAttention(D, 2), nn.Linear(D, 2)

    def forward(self, img):
        x = img.flatten(2).transpose(1, 2)  # (B, N, D)
        t = x.transpose(0, 1)  # (N, B, D)
        y = t + self.attn(t, t, t)[0]
        return self.head(y.transpose(0, 1).mean(1))


def test_lrp_and_deeplift_through_nn_multihead_attention():
    net = attach(_TorchMHA().double().eval(), ModelInfo((D, 1, N)))
    x = _inputs()
    with torch.no_grad():
        logit = net(x)[:, 1]
    r = LRP(net, CONSERVE).attribute(x, 1)
    assert (r.sum((1, 2, 3)) - logit).abs().max() < 1e-5
    _, delta = DeepLift(net).attribute(x, 1, reference=0.0, return_delta=True)
    assert delta.abs().max() < 1e-12
    assert check_no_hooks(net) == []


class _Gated(nn.Module):
    def forward(self, img):
        return (img[:, 0] * torch.sigmoid(img[:, 1])).flatten(1)


def test_lrp_holds_a_sigmoid_gate_constant():
    """Squeeze-excitation's ``x · σ(s)``: all relevance to ``x`` (signal-take-all)."""
    net = attach(_Gated(), ModelInfo((2, 1, 1)))
    x = torch.tensor([[[[3.0]], [[0.5]]]])
    r = LRP(net).attribute(x, 0).flatten()
    assert r[1] == 0 and r[0] == pytest.approx(3.0 * torch.sigmoid(torch.tensor(0.5)).item())


class _EinsumBlock(Block):
    """The block with its attention in ``torch.einsum`` (as torchvision's MaxViT)."""

    def forward(self, img):
        x = img.flatten(2).transpose(1, 2)
        u = self.ln1(x)
        s = torch.einsum("bnd,bmd->bnm", self.q(u), self.k(u)) / 2
        a = torch.softmax(s, dim=-1)
        h = x + self.o(torch.einsum("bnm,bmd->bnd", a, self.v(u)))
        y = h + self.fc2(self.act(self.fc1(self.ln2(h))))
        return self.head(y.mean(1))


def test_einsum_attention_gets_the_same_rules(block):
    einsum = attach(_EinsumBlock().double().eval(), ModelInfo((D, 1, N)))
    x = _inputs()
    torch.testing.assert_close(LRP(einsum, CONSERVE).attribute(x, 1),
                               LRP(block, CONSERVE).attribute(x, 1))  # fmt: skip
    _, delta = DeepLift(einsum).attribute(x, 1, reference=0.0, return_delta=True)
    assert delta.abs().max() < 1e-12
