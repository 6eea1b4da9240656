"""Fit a generator's sampling prior to its encoded training data.

    python -m fvis.generators.fit_prior                  # the bundled "mnist" generator
    python -m fvis.generators.fit_prior my_gen.pt --data my_images.pt

A VAE's aggregate posterior (the codes of real images) is not ``N(0, I)``: sampling the
Gaussian lands many codes in holes between the digits. The sampling prior is instead a
Gaussian mixture with full covariances fitted by EM (k-means++ start, fixed seed) to the
encoder means of the training images, stored in the checkpoint under ``"sampler"`` and
used by :meth:`fvis.generators.GeneratorInfo.sample`. ``train_mnist_gan.py`` fits it at
the end of training; this command (re)fits it for an existing checkpoint, rewriting it
atomically with everything else unchanged.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

__all__ = ["fit_gmm", "fit_prior", "main"]

COMPONENTS = 20  # default number of mixture components (held-out likelihood levels off)
REG = 1e-3  # added to each covariance's diagonal, relative to the mean code variance


@torch.no_grad()
def _log_prob(z: torch.Tensor, means: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """log N(z | means[k], tril[k] tril[k]ᵀ) for every code and component, (N, K)."""
    d = z.shape[1]
    diff = z[None] - means[:, None]  # (K, N, D)
    sol = torch.linalg.solve_triangular(tril, diff.transpose(1, 2), upper=False)  # (K, D, N)
    maha = sol.pow(2).sum(1)  # (K, N)
    logdet = tril.diagonal(dim1=1, dim2=2).log().sum(1)  # (K,)
    return (-0.5 * maha - logdet[:, None] - 0.5 * d * math.log(2 * math.pi)).T


@torch.no_grad()
def fit_gmm(
    codes: torch.Tensor, k: int = COMPONENTS, *, iters: int = 200, seed: int = 0, reg: float = REG
) -> dict:
    """A Gaussian mixture with full covariances fitted to ``codes`` (N, D) by EM from a
    k-means++ start (``seed``). Returns ``{"weights" (K,), "means" (K, D), "scale_tril"
    (K, D, D), "log_likelihood"}`` (mean per code); ``reg`` × the mean code variance is
    added to every covariance's diagonal. Deterministic for a seed."""
    z = codes.detach().double().flatten(1)
    n, d = z.shape
    if not 1 <= k <= n:
        raise ValueError(f"need 1 ≤ k ≤ {n} components, not {k}")
    rng = torch.Generator().manual_seed(seed)
    # k-means++ seeding, then a few Lloyd steps
    centers = z[torch.randint(n, (1,), generator=rng)]
    for _ in range(1, k):
        dist = torch.cdist(z, centers).min(1).values.pow(2).clamp_min(1e-12)
        centers = torch.cat([centers, z[torch.multinomial(dist / dist.sum(), 1, generator=rng)]])
    for _ in range(20):
        assign = torch.cdist(z, centers).argmin(1)
        centers = torch.stack(
            [z[assign == j].mean(0) if (assign == j).any() else centers[j] for j in range(k)]
        )
    eye = torch.eye(d, dtype=z.dtype) * reg * float(z.var(0).mean())
    resp = torch.nn.functional.one_hot(torch.cdist(z, centers).argmin(1), k).to(z.dtype)
    prev = -math.inf
    for _ in range(iters):
        # M step
        nk = resp.sum(0) + 1e-10
        weights = nk / n
        means = (resp.T @ z) / nk[:, None]
        diff = z[None] - means[:, None]  # (K, N, D)
        cov = torch.einsum("kn,knd,kne->kde", resp.T, diff, diff) / nk[:, None, None] + eye
        tril = torch.linalg.cholesky(cov)
        # E step
        logp = _log_prob(z, means, tril) + weights.log()
        ll = torch.logsumexp(logp, 1)
        resp = (logp - ll[:, None]).exp()
        mean_ll = float(ll.mean())
        if mean_ll - prev < 1e-6:
            break
        prev = mean_ll
    return {
        "weights": weights.float(),
        "means": means.float(),
        "scale_tril": tril.float(),
        "log_likelihood": mean_ll,
    }


@torch.no_grad()
def fit_prior(
    encode: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    k: int = COMPONENTS,
    seed: int = 0,
    batch: int = 500,
) -> dict:
    """The sampling prior of a generator with encoder means ``encode`` (images → codes):
    a ``k``-component full-covariance Gaussian mixture fitted to the codes of ``images``
    (:func:`fit_gmm`), with at most one component per 100 codes (few images: fewer
    components, down to one full-covariance Gaussian). The dict stored as the
    checkpoint's ``"sampler"``."""
    z = torch.cat([encode(images[i : i + batch]) for i in range(0, len(images), batch)])
    k = max(1, min(k, len(z) // 100))
    gmm = fit_gmm(z.flatten(1), k, seed=seed)
    return {"kind": "gmm", **gmm, "k": k, "seed": seed, "n": len(z)}


def main(argv=None) -> None:
    from fvis.generators import _checkpoint_path, load
    from fvis.generators.train_mnist_gan import load_images
    from fvis.io import atomic_save

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default="mnist", help="bundled name or .pt path")
    p.add_argument("--data", default="mnist", help="the training images: 'mnist' or a .pt file")
    p.add_argument("-k", "--components", type=int, default=COMPONENTS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = _checkpoint_path(args.checkpoint)
    gen = load(path)
    if getattr(gen, "encoder", None) is None:
        p.error(f"{path} has no encoder to encode the training images with")
    images, desc = load_images(args.data)
    sampler = fit_prior(gen.encode, images, k=args.components, seed=args.seed)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["sampler"] = sampler
    atomic_save(ckpt, path)
    print(
        f"fitted a {args.components}-component Gaussian mixture to {sampler['n']} encoded "
        f"images ({desc}), mean log-likelihood {sampler['log_likelihood']:.3f}; wrote {path}"
    )


if __name__ == "__main__":
    main()
