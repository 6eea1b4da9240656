"""Generator priors and code-space AM: the declared interface, the parameterization's
shapes and ranges, clipping and decay, the DGN-AM/PPGN update (exact, on hand-set
networks), batching and restarts, a user-supplied generator, render integration, and
the transfer check on a small budget."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_clean, snapshot
from torch import nn

import fvis
from fvis import objectives as O
from fvis.codespace import GeneratorParam, adapt, maximize, param_for
from fvis.generators import GeneratorInfo, available, code_stats, declare, load
from fvis.hooks import capture


@pytest.fixture(scope="module")
def gen():
    return load("mnist")


@pytest.fixture(scope="module")
def mlp_model():
    return fvis.load_model("fvis:mnist-mlp")


def p_target(model, images, targets):
    with torch.no_grad():
        p = model(model.fvis_info.normalize(images)).softmax(1)
    return p[torch.arange(len(targets)), torch.as_tensor(targets)]


def mean_pairwise_rms(images):
    f = images.flatten(1)
    n = len(f)
    return float((torch.cdist(f, f) / f.shape[1] ** 0.5).sum() / (n * (n - 1)))


# ---- the bundled generator and its declared interface ----


def test_bundled_generator_interface(gen):
    gi = gen.fvis_generator
    assert "mnist" in available()
    assert gi.code_shape == (16,) and gi.size == (1, 28, 28) and gi.output_range == (0.0, 1.0)
    # bounds measured on encoded training data: a box around the mean, and a radius
    assert (gi.low < gi.mean).all() and (gi.mean < gi.high).all()
    assert 0 < gi.radius < (gi.high - gi.low).norm()
    assert "training images" in gi.bounds_from
    assert not any(p.requires_grad for p in gen.parameters()) and not gen.training
    with torch.no_grad():
        x = gen(gi.sample(8, torch.Generator().manual_seed(0)))
    assert x.shape == (8, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert x.std(0).mean() > 0.05  # different codes, different digits


def test_bounds_are_measured_from_real_data(gen, mnist_digits):
    """The stored bounds are the quantiles of encoded real digits (here: held-out ones,
    which must mostly fall inside the bounds measured on the training digits)."""
    gi = gen.fvis_generator
    z = gen.encode(mnist_digits[0])
    inside = ((z >= gi.low) & (z <= gi.high)).float().mean()
    assert inside > 0.97
    stats = code_stats(gen.encode, mnist_digits[0], quantile=0.25)
    assert torch.allclose(stats["low"], torch.quantile(z, 0.25, dim=0), atol=1e-5)
    assert torch.allclose(stats["mean"], z.mean(0), atol=1e-5)


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="Bundled: mnist"):
        load("nonexistent-generator")
    with pytest.raises(FileNotFoundError, match="No generator checkpoint"):
        load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="declare"):
        GeneratorParam(nn.Linear(4, 784))


# ---- clipping, sampling and the adapters: exact values ----


def test_clip_is_the_projection_onto_ball_then_box():
    gi = GeneratorInfo(
        code_shape=(2,),
        size=(1, 2, 2),
        mean=torch.tensor([1.0, 0.0]),
        low=torch.tensor([-1.0, -0.5]),
        high=torch.tensor([2.0, 0.5]),
        radius=2.0,
    )
    z = torch.tensor([[1.0, 0.25], [4.0, 4.0], [-5.0, 0.0]])
    out = gi.clip(z)
    # inside: unchanged; (3, 4) from the mean scaled to norm 2 → (2.2, 1.6), box → (2, 0.5);
    # (-6, 0) → (-2, 0) → box → (-1, 0)
    assert torch.allclose(out, torch.tensor([[1.0, 0.25], [2.0, 0.5], [-1.0, 0.0]]))
    assert torch.equal(gi.clip(out), out)  # a projection is idempotent


def test_sample_reproducible_and_within_bounds(gen):
    gi = gen.fvis_generator
    a = gi.sample(64, torch.Generator().manual_seed(3))
    b = gi.sample(64, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (64, 16)
    assert (a >= gi.low).all() and (a <= gi.high).all()
    assert ((a - gi.mean).norm(dim=1) <= gi.radius + 1e-4).all()
    small = gi.sample(64, torch.Generator().manual_seed(3), scale=0.1)
    assert (small - gi.mean).norm(dim=1).max() < (a - gi.mean).norm(dim=1).max()


def test_adapt_range_channels_and_size():
    gi = GeneratorInfo(code_shape=(1,), size=(3, 4, 4), output_range=(-1.0, 1.0))
    rgb = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    unit = adapt(rgb, gi)
    assert torch.allclose(unit[0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    grey = adapt(rgb, gi, (1, 4, 4))  # BT.601 luma of (0, 0.5, 1)
    assert torch.allclose(grey, torch.full((1, 1, 4, 4), 0.587 * 0.5 + 0.114))
    gi1 = GeneratorInfo(code_shape=(1,), size=(1, 4, 4))
    g = torch.rand(2, 1, 4, 4)
    assert torch.equal(adapt(g, gi1, (3, 4, 4)), g.expand(-1, 3, -1, -1))
    assert adapt(g, gi1, (1, 8, 6)).shape == (2, 1, 8, 6)
    assert adapt(torch.full((1, 1, 4, 4), 7.0), gi1).max() == 1.0  # clamped to [0, 1]
    with pytest.raises(ValueError, match="2-channel"):
        adapt(torch.rand(1, 2, 4, 4), gi1.with_(size=(2, 4, 4)), (3, 4, 4))


# ---- the parameterization ----


def test_param_shapes_ranges_and_parameters(gen):
    p = GeneratorParam(gen, 5, seed=1)
    x = p()
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert [n for n, q in p.named_parameters() if q.requires_grad] == ["code"]
    assert p.code.shape == (5, 16)
    assert GeneratorParam(gen, 2, size=(3, 56, 40))().shape == (2, 3, 56, 40)
    assert torch.equal(GeneratorParam(gen, 5, seed=1).codes, p.codes)
    assert not torch.equal(GeneratorParam(gen, 5, seed=2).codes, p.codes)
    mean = GeneratorParam(gen, 3, init="mean").codes
    assert torch.allclose(mean, gen.fvis_generator.mean.expand(3, 16))
    assert torch.equal(GeneratorParam(gen, 2, init=torch.zeros(16)).codes, torch.zeros(2, 16))


def test_param_clips_and_decays_in_place(gen):
    gi = gen.fvis_generator
    p = GeneratorParam(gen, 2, init="mean")
    with torch.no_grad():
        p.code.add_(100.0)
    p()
    assert (p.code <= gi.high + 1e-6).all() and (p.code >= gi.low - 1e-6).all()
    # decay: z ← mean + (1 − d)(z − mean), only in forward passes that record gradients
    q = GeneratorParam(gen, 2, init="mean", clip=False, decay=0.1)
    d = torch.linspace(-1, 1, 16)
    with torch.no_grad():
        q.code.add_(d)
        q()
    assert torch.allclose(q.code, gi.mean + d, atol=1e-6)
    q()
    assert torch.allclose(q.code, gi.mean + 0.9 * d, atol=1e-6)
    far = torch.full((16,), 100.0)
    assert torch.equal(GeneratorParam(gen, 1, init=far, clip=False).codes[0], far)
    assert (GeneratorParam(gen, 1, init=far).codes <= gi.high).all()


def test_param_for_cli_specs(mnist_model):
    p = param_for("generator:mnist", mnist_model, batch=3, seed=0)
    assert isinstance(p, GeneratorParam) and p().shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="generator:NAME"):
        param_for("fft", mnist_model)


HIDDEN = [
    O.channel("relu3", 0),
    O.channel("relu3", 2),
    O.channel("relu2", 1),
    O.neuron("relu3", 1),
    O.neuron("relu3", 3),
    O.neuron("fc1", 0),
    O.neuron("fc1", 2),
]


def _real_max(model, digits):
    """Each HIDDEN unit's largest value over the 1,000 held-out digits."""
    with torch.no_grad():
        acts = capture(model, model.fvis_info.normalize(digits), ["relu2", "relu3", "fc1"])
    return torch.stack([o(acts) for o in HIDDEN], 1).max(0).values


def test_hidden_units_in_code_space_beat_every_real_digit(mnist_model, gen, mnist_digits):
    """Channel and neuron objectives of hidden layers: 60 DGN-AM steps find a digit-like
    image that drives each unit above its maximum over 1,000 real digits."""
    r = maximize(mnist_model, O.one_per_item(HIDDEN), gen, batch=len(HIDDEN), steps=60)
    real = _real_max(mnist_model, mnist_digits[0])
    assert (r.values > real).all(), (r.values, real)


def test_render_with_generator_param(mnist_model, gen, mnist_digits):
    """The same units through fvis.render (Adam, render's loop) in code space, from the
    mean digit: each ends above 80 % of its real maximum; no hooks are left behind."""
    before = snapshot(mnist_model)
    p = GeneratorParam(gen, len(HIDDEN), init="mean")
    r = fvis.render(
        mnist_model,
        O.one_per_item(HIDDEN),
        p,
        transforms=None,
        steps=40,
        lr=0.1,
        redirected_relu_steps=20,
        progress=False,
    )
    assert r.images.shape == (len(HIDDEN), 1, 28, 28)
    real = _real_max(mnist_model, mnist_digits[0])
    assert (r.history[-1] > 0.8 * real).all(), (r.history[-1], real)
    assert_clean(mnist_model, before)


# ---- maximize: the DGN-AM / PPGN update ----


class _Linear(nn.Module):
    """A hand-set generator: code (N, 2) → image (N, 1, 1, 2) = A z + 0.5."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[0.1, 0.0], [0.05, -0.2]]))

    def forward(self, z):
        return (z @ self.A.T + 0.5).view(-1, 1, 1, 2)


def _tiny_model():
    m = nn.Sequential(nn.Flatten(), nn.Linear(2, 1))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([[1.0, 3.0]]))
        m[1].bias.zero_()
    m.fvis_info = fvis.models.ModelInfo(input_size=(1, 1, 2))
    return m


def test_maximize_one_step_matches_the_dgn_am_formula():
    g = declare(
        _Linear(), code_shape=2, size=(1, 1, 2), mean=[0.1, 0.0], low=[-1.0, -1.0], high=[0.4, 0.5]
    )
    z0 = torch.tensor([[0.2, 0.1]])
    r = maximize(_tiny_model(), O.class_logit(0), g, steps=1, lr=0.5, decay=0.1, init=z0)
    # objective w·(A z + 0.5): gradient Aᵀw = (0.1 + 0.15, -0.6) = (0.25, -0.6);
    # normalized by its mean |·| 0.425; step 0.5·ĝ = (0.2941, -0.7059)
    ghat = torch.tensor([0.25, -0.6]) / 0.425
    z1 = z0 + 0.5 * ghat
    mean = torch.tensor([0.1, 0.0])
    z1 = mean + 0.9 * (z1 - mean)
    assert z1[0, 0] > 0.4  # 0.4547: the clip to high[0] = 0.4 bites
    z1 = z1.clamp(torch.tensor([-1.0, -1.0]), torch.tensor([0.4, 0.5]))
    assert torch.allclose(r.codes, z1, atol=1e-6)
    w, A = torch.tensor([1.0, 3.0]), torch.tensor([[0.1, 0.0], [0.05, -0.2]])

    def value(z):
        return float(w @ (A @ z[0] + 0.5))

    assert r.history.shape == (1, 1) and r.history[0, 0].item() == pytest.approx(value(z0))
    assert r.values[0].item() == pytest.approx(value(z1), abs=1e-6)
    # without step normalization the raw gradient is used
    r2 = maximize(
        _tiny_model(),
        O.class_logit(0),
        g,
        steps=1,
        lr=0.5,
        decay=0.0,
        normalize_step=False,
        clip=False,
        init=z0,
    )
    assert torch.allclose(r2.codes, z0 + 0.5 * torch.tensor([0.25, -0.6]), atol=1e-6)


def test_ppgn_prior_term_moves_to_the_autoencoder_reconstruction(mnist_model, gen):
    """With only the prior term (ε1 = 1, ε2 = 0): one step lands on E(G(z0))."""
    z0 = gen.fvis_generator.sample(4, torch.Generator().manual_seed(5))
    r = maximize(
        mnist_model,
        O.class_logit(0),
        gen,
        batch=4,
        steps=1,
        lr=0.0,
        decay=0.0,
        clip=False,
        prior=1.0,
        init=z0,
    )
    with torch.no_grad():
        assert torch.allclose(r.codes, gen.encode(gen(z0)), atol=1e-5)
    # without an encoder the prior is the Gaussian score −(z − mean)/std²
    plain = load("mnist", encoder=False)
    gi = plain.fvis_generator
    r = maximize(
        mnist_model,
        O.class_logit(0),
        plain,
        batch=4,
        steps=1,
        lr=0.0,
        decay=0.0,
        clip=False,
        prior=0.1,
        init=z0,
    )
    assert torch.allclose(r.codes, z0 - 0.1 * (z0 - gi.mean) / gi.std**2, atol=1e-5)


def test_noise_term_has_the_declared_scale(mnist_model, gen):
    gi = gen.fvis_generator
    z0 = gi.mean.expand(256, 16)
    r = maximize(
        mnist_model,
        O.class_logit(0),
        gen,
        batch=256,
        steps=1,
        lr=0.0,
        decay=0.0,
        clip=False,
        noise=0.2,
        init=z0,
    )
    ratio = (r.codes - z0).std(0) / (0.2 * gi.std)
    assert ((ratio > 0.8) & (ratio < 1.2)).all()


def test_maximize_batch_restarts_reproducible_and_clean(mnist_model, gen):
    before = snapshot(mnist_model)
    obj = O.one_per_item([O.class_logit(k) for k in (1, 4, 7)])
    kw = dict(batch=3, steps=15, seed=2)
    one = maximize(mnist_model, obj, gen, **kw)
    again = maximize(mnist_model, obj, gen, **kw)
    assert torch.equal(one.codes, again.codes) and torch.equal(one.history, again.history)
    assert one.images.shape == (3, 1, 28, 28) and one.codes.shape == (3, 16)
    assert one.history.shape == (15, 3) and (one.values > one.history[0]).all()
    gi = gen.fvis_generator
    assert (one.codes >= gi.low - 1e-6).all() and (one.codes <= gi.high + 1e-6).all()
    # restart 0 of a 3-restart run is the 1-restart run; per item the best restart is kept
    three = maximize(mnist_model, obj, gen, restarts=3, **kw)
    assert (three.values >= one.values).all() and set(three.restart.tolist()) <= {0, 1, 2}
    for i in range(3):
        if three.restart[i] == 0:
            assert torch.equal(three.codes[i], one.codes[i])
    assert_clean(mnist_model, before)

    def broken(acts):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        maximize(mnist_model, O.Objective(broken, ["conv3"], "broken"), gen, steps=2)
    assert_clean(mnist_model, before)


# ---- a user-supplied generator ----


class _TinyRGB(nn.Module):
    """A user's generator: 8-d code → 3×12×12 image in [-1, 1] (tanh)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 3 * 12 * 12)

    def forward(self, z):
        return torch.tanh(self.fc(z)).view(-1, 3, 12, 12)


def test_user_supplied_generator(mnist_model):
    g = declare(
        _TinyRGB(), code_shape=(8,), size=(3, 12, 12), output_range=(-1, 1), low=-2.0, high=2.0
    )
    gi = g.fvis_generator
    assert gi.code_shape == (8,) and gi.std is None and torch.equal(gi.high, torch.full((8,), 2.0))
    p = GeneratorParam(g, 4, size=mnist_model.fvis_info.input_size).train()
    assert not g.training  # the generator stays in eval mode
    x = p()
    assert x.shape == (4, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    r = maximize(mnist_model, O.class_logit(3), g, batch=2, steps=30)
    assert r.images.shape == (2, 1, 28, 28)
    assert (r.values > r.history[0] + 1.0).all()
    assert r.codes.abs().max() <= 2.0
    # the CLI path accepts a generator checkpoint too (and complains clearly otherwise)
    with pytest.raises(FileNotFoundError):
        param_for("generator:/nonexistent/gen.pt", mnist_model)


# ---- what the issue promises: transfer and diversity ----


def test_class_am_in_code_space_transfers(mnist_model, mlp_model, gen):
    """Small-budget version of scripts/codespace_transfer.py: every digit reaches
    p > 0.99 under the model it was optimized for, and ≥ 9 of 10 reach p > 0.9 under
    an independently trained MLP."""
    obj = O.one_per_item([O.class_logit(k) for k in range(10)])
    r = maximize(mnist_model, obj, gen, batch=10, steps=60, restarts=2, seed=0)
    p_cnn = p_target(mnist_model, r.images, range(10))
    p_mlp = p_target(mlp_model, r.images, range(10))
    assert (p_cnn > 0.99).all(), p_cnn
    assert (p_mlp > 0.9).sum() >= 9, p_mlp


def test_diversity_term_gives_different_images(mnist_model, gen):
    base = O.class_logit(3)
    kw = dict(batch=4, steps=60, seed=0)
    plain = maximize(mnist_model, base, gen, **kw)
    varied = maximize(mnist_model, base + 10 * O.diversity("pool2"), gen, **kw)
    assert mean_pairwise_rms(varied.images) > 2 * mean_pairwise_rms(plain.images)
    assert (p_target(mnist_model, varied.images, [3] * 4) > 0.9).all()


def test_training_script_is_deterministic(mnist_digits):
    """Same seed → bit-identical weights (a few steps of the bundled recipe)."""
    from fvis.generators.train_mnist_gan import train

    images = mnist_digits[0][:64]
    kw = dict(steps=2, batch=32, width=32, enc_width=32, log=lambda *_: None)
    a, b = train(images, seed=1, **kw), train(images, seed=1, **kw)
    c = train(images, seed=2, **kw)
    for k, v in a["G"].state_dict().items():
        assert torch.equal(v, b["G"].state_dict()[k]), k
    assert not torch.equal(a["G"].fc[0].weight, c["G"].fc[0].weight)
    assert [h["image"] for h in a["history"]] == [h["image"] for h in b["history"]]


def test_train_your_own_generator_end_to_end(tmp_path, mnist_model):
    """The documented recipe for your own data: a .pt of RGB 32×32 images in [0, 1] →
    the script → fvis.generators.load(path) → a prior for any model (here 1×28×28)."""
    from fvis.generators.train_mnist_gan import main

    torch.save(
        torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)), tmp_path / "mine.pt"
    )
    out = tmp_path / "gen.pt"
    threads = torch.get_num_threads()
    main(
        [
            "--data",
            str(tmp_path / "mine.pt"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch",
            "8",
            "--width",
            "32",
            "--enc-width",
            "32",
            "--code-dim",
            "8",
        ]
    )
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    g = load(out)
    gi = g.fvis_generator
    assert gi.code_shape == (8,) and gi.size == (3, 32, 32) and gi.name == "gen"
    assert (gi.low <= gi.high).all() and "16 training images" in gi.bounds_from
    p = param_for(f"generator:{out}", mnist_model, batch=2)
    assert p().shape == (2, 1, 28, 28)
    with pytest.raises(SystemExit):  # own data without --out would overwrite the bundled file
        main(["--data", str(tmp_path / "mine.pt")])


def test_sampling_prior_gives_clean_varied_digits(gen, mlp_model):
    """The fitted sampling prior (a Gaussian mixture over encoded training digits, see
    generators/MNIST_GAN.md): 88.9 % of 1,000 samples are classified with p > 0.9 by the
    independent MLP (the N(mean, std) prior: 54.5 %); on 200 samples ≥ 80 %, every digit
    present and none above 25 %. Code-space search still starts from the Gaussian."""
    gi = gen.fvis_generator
    assert gi.mixture is not None and gi.mixture["means"].shape == (20, 16)
    with torch.no_grad():
        x = gen(gi.sample(200, torch.Generator().manual_seed(0)))
        p = mlp_model(mlp_model.fvis_info.normalize(x)).softmax(1)
    conf, label = p.max(1)
    assert (conf > 0.9).float().mean() >= 0.8
    share = torch.bincount(label, minlength=10) / 200
    assert (share > 0).all() and share.max() <= 0.25, share
    a = gi.sample(4, torch.Generator().manual_seed(1), mixture=False)
    b = gi.sample(4, torch.Generator().manual_seed(1), scale=1.0, mixture=False)
    mean, std = gi.stats(a)
    z = mean + std * torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a, gi.clip(z))  # the Gaussian prior is kept


def test_fit_gmm_recovers_separated_clusters():
    from fvis.generators.fit_prior import fit_gmm

    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 8.0]])
    z = torch.cat([c + 0.5 * torch.randn(300, 2, generator=g) for c in centers])
    m = fit_gmm(z, 3, seed=0)
    assert torch.allclose(m["weights"], torch.full((3,), 1 / 3), atol=0.02)
    found = m["means"][torch.cdist(centers, m["means"]).argmin(1)]
    assert torch.allclose(found, centers, atol=0.15)
    cov = m["scale_tril"] @ m["scale_tril"].transpose(1, 2)
    assert torch.allclose(cov, 0.25 * torch.eye(2).expand(3, 2, 2), atol=0.08)
    assert torch.equal(fit_gmm(z, 3, seed=0)["means"], m["means"])  # deterministic
