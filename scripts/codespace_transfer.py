"""Does a visualization transfer? Class AM on ``fvis:mnist`` in code space vs pixel space,
judged by the same model and by an independently trained one (``fvis:mnist-mlp``).

    python scripts/codespace_transfer.py                     # the table (~1 min on a CPU)
    python scripts/codespace_transfer.py --figures docs      # + the README figures
    python scripts/codespace_transfer.py --diversity         # + batch diversity figures

For each digit k, one image maximizes the logit of k on ``fvis:mnist``:

* code space: :func:`fvis.codespace.maximize` with the bundled ``mnist`` generator
  (DGN-AM defaults: 200 normalized steps, decay, clipping to the measured bounds),
  best of 3 restarts per digit (one restart fails one digit for 1 seed in 6);
* pixel space: :func:`fvis.render`'s standard recipe (Fourier parameterization,
  Lucid's standard transforms, Adam 0.05, 512 steps).

Printed: p(k) under both classifiers, and how many classes pass p > 0.99 (``fvis:mnist``)
and p > 0.9 (``fvis:mnist-mlp``). ``--diversity`` renders a batch of 8 codes per digit
with and without ``diversity("pool2")`` and prints the mean pairwise RMS distance of the
images. ``--figures DIR`` (implies ``--diversity``) writes ``generator_samples.png``
(80 samples of the generator's sampling prior) and ``codespace_classes.png`` (rows:
code space; the three items of the diverse batch with the highest p(k) under
``fvis:mnist``; pixel space).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fvis
from fvis import objectives as O
from fvis.codespace import maximize
from fvis.generators import load
from fvis.image import grid
from fvis.io import save_image


def probs(model, images: torch.Tensor) -> torch.Tensor:
    """Diagonal p(class i | image i) for a batch of 10 images, one per digit."""
    with torch.no_grad():
        p = model(model.fvis_info.normalize(images)).softmax(1)
    return p.diagonal()


def pairwise_rms(images: torch.Tensor) -> float:
    """Mean over pairs i < j of the RMS pixel difference ``‖x_i − x_j‖₂ / √(CHW)``."""
    f = images.flatten(1)
    d = torch.cdist(f, f) / f.shape[1] ** 0.5
    n = len(f)
    return float(d.sum() / (n * (n - 1)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="mnist")
    p.add_argument("--steps", type=int, default=200, help="code-space steps")
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--pixel-steps", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figures", default=None, help="write the README figures into this folder")
    p.add_argument("--diversity", action="store_true")
    p.add_argument("--diversity-weight", type=float, default=10.0)
    p.add_argument("--diversity-layer", default="pool2")
    p.add_argument("--batch", type=int, default=8, help="codes per digit for --diversity")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cnn, mlp = fvis.load_model("fvis:mnist"), fvis.load_model("fvis:mnist-mlp")
    obj = O.one_per_item([O.class_logit(k) for k in range(10)])

    t = time.time()
    code = maximize(
        cnn, obj, args.generator, batch=10, steps=args.steps, restarts=args.restarts, seed=args.seed
    )
    t_code = time.time() - t
    t = time.time()
    pixel = fvis.render(cnn, obj, batch=10, steps=args.pixel_steps, seed=args.seed, progress=False)
    t_pixel = time.time() - t

    rows = {
        "code  fvis:mnist": probs(cnn, code.images),
        "code  fvis:mnist-mlp": probs(mlp, code.images),
        "pixel fvis:mnist": probs(cnn, pixel.images),
        "pixel fvis:mnist-mlp": probs(mlp, pixel.images),
    }
    print(
        f"p(target class), class AM on fvis:mnist (code space {t_code:.0f} s, "
        f"pixel space {t_pixel:.0f} s)"
    )
    print(f"{'space judge':22s}" + "".join(f"{k:>7d}" for k in range(10)) + "   pass")
    for name, v in rows.items():
        thr = 0.99 if name.endswith("fvis:mnist") else 0.9
        print(
            f"{name:22s}"
            + "".join(f"{x:7.3f}" for x in v.tolist())
            + f"   {int((v > thr).sum())}/10 (p > {thr}), min {float(v.min()):.4f}"
        )

    # The prior itself: 1,000 samples judged by the independent classifier.
    gi = load(args.generator).fvis_generator
    with torch.no_grad():
        samples = load(args.generator)(gi.sample(1000, torch.Generator().manual_seed(args.seed)))
        p = mlp(mlp.fvis_info.normalize(samples)).softmax(1)
    conf, label = p.max(1)
    counts = torch.bincount(label, minlength=10).tolist()
    print(
        f"\nprior samples (1,000) under fvis:mnist-mlp: max p > 0.9 for "
        f"{float((conf > 0.9).float().mean()):.1%}, mean max p {float(conf.mean()):.3f}; "
        f"digits {counts}"
    )

    diverse_images = []
    if args.diversity or args.figures:
        print(
            f"\ndiversity: {args.batch} codes per digit, mean pairwise RMS distance of the "
            f"images (without → with {args.diversity_weight:g}·diversity({args.diversity_layer!r}))"
        )
        plain, diverse = [], []
        for k in range(10):
            base = O.class_logit(k)
            kw = dict(batch=args.batch, steps=args.steps, seed=args.seed)
            r0 = maximize(cnn, base, args.generator, **kw)
            r1 = maximize(
                cnn,
                base + args.diversity_weight * O.diversity(args.diversity_layer),
                args.generator,
                **kw,
            )
            plain.append(pairwise_rms(r0.images))
            diverse.append(pairwise_rms(r1.images))
            with torch.no_grad():
                p_cnn = cnn(cnn.fvis_info.normalize(r1.images)).softmax(1)[:, k]
                p_mlp = mlp(mlp.fvis_info.normalize(r1.images)).softmax(1)[:, k]
            # for the figure: the batch ordered by p(k) under the visualized model
            diverse_images.append(r1.images[p_cnn.argsort(descending=True, stable=True)])
            print(
                f"  digit {k}: {plain[-1]:.3f} → {diverse[-1]:.3f}   (with diversity: min "
                f"p({k}) {float(p_cnn.min()):.3f} fvis:mnist, {float(p_mlp.min()):.3f} mlp)"
            )
        print(f"  mean   : {sum(plain) / 10:.3f} → {sum(diverse) / 10:.3f}")

    if args.figures:
        out = Path(args.figures)
        gen = load(args.generator)
        z = gen.fvis_generator.sample(80, torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            samples = gen(z)
        save_image(grid(samples, ncol=16, scale=3), out / "generator_samples.png")
        # rows: code space; code space with diversity (3 of the batch); pixel space
        rows_img = [code.images]
        rows_img += [torch.stack([d[i] for d in diverse_images]) for i in range(3)]
        rows_img.append(pixel.images)
        save_image(grid(torch.cat(rows_img), ncol=10, scale=3), out / "codespace_classes.png")
        print(f"\nwrote {out / 'generator_samples.png'} and {out / 'codespace_classes.png'}")


if __name__ == "__main__":
    main()
