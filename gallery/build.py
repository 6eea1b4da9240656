"""Build a static gallery of a model's units: one page, an image per channel.

    python gallery/build.py --model fvis:mnist --layers conv1,conv2,conv3,fc1 -o site/

* **Batched**: units are rendered ``--batch`` at a time, one image per batch item.
* **Resumable**: every image is written atomically and skipped when it exists, so an
  interrupted build continues where it stopped (``--force`` re-renders).
* **Scales out**: ``--shard K/N`` renders only batches ``K, K+N, K+2N, …``, so N
  workers of any job engine (a Slurm array, Ray/Dask tasks, Kubernetes jobs) split a
  model between them; each worker writes its own files, and a final
  ``--index-only`` run writes the page.
* With ``--examples`` (bundled MNIST models), each unit also shows the held-out
  digits that activate it most.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import torch

import fvis
from fvis import objectives as O
from fvis.image import grid, to_pil
from fvis.io import atomic_write_text, save_image


def units_of(model, layers: list[str], max_channels: int | None) -> list[tuple[str, int]]:
    """``(layer, channel)`` for every channel of ``layers`` (unknown names raise, listing
    the nearest)."""
    tr = fvis.hooks.trace(model, model.fvis_info.input_size)
    units = []
    for layer in layers:
        shape = tr.shape(layer)
        n = shape[0] if shape else 1
        units += [(layer, k) for k in range(min(n, max_channels or n))]
    return units


def image_path(out: Path, layer: str, k: int) -> Path:
    return out / "units" / layer.replace(":", "_") / f"{k:04d}.png"


def render_batches(
    model,
    units,
    out: Path,
    *,
    batch: int,
    steps: int,
    seed: int,
    prior: str,
    shard: tuple[int, int],
    force: bool,
    progress: bool,
    tv: float,
    param_kind: str = "fft",
) -> int:
    """Render every batch of this shard whose images are missing; returns units rendered."""
    k_shard, n_shard = shard
    batches = [units[i : i + batch] for i in range(0, len(units), batch)]
    done = 0
    for b, chunk in enumerate(batches):
        if b % n_shard != k_shard:
            continue
        todo = [u for u in chunk if force or not image_path(out, *u).exists()]
        if not todo:
            continue
        objective = O.one_per_item([O.channel(layer, k) for layer, k in todo])
        if tv:
            objective = objective - tv * O.total_variation()
        if prior != "image":
            from fvis.codespace import param_for

            param = param_for(prior, model, batch=len(todo), seed=seed)
        else:
            info = model.fvis_info
            param = fvis.param.for_input(info.input_size, len(todo), kind=param_kind, seed=seed)
        result = fvis.render(
            model, objective, param, batch=len(todo), steps=steps, seed=seed, progress=progress
        )
        for (layer, k), img in zip(todo, to_pil(result.images)):
            save_image(img, image_path(out, layer, k))
        done += len(todo)
        print(f"batch {b + 1}/{len(batches)}: rendered {len(todo)} unit(s)", file=sys.stderr)
    return done


def top_examples(model, units, out: Path, k: int = 4) -> None:
    """For each unit, the held-out MNIST digits with the largest mean activation."""
    from fvis.data import mnist

    images, _ = mnist("test")
    layers = sorted({layer for layer, _ in units})
    x = model.fvis_info.normalize(images)
    with torch.no_grad():
        acts = fvis.hooks.capture(model, x, layers)
    for layer, c in units:
        path = image_path(out, layer, c).with_name(f"{c:04d}_examples.png")
        if path.exists():
            continue
        a = acts[layer][:, c]
        score = a.flatten(1).mean(1) if a.dim() > 1 else a
        idx = score.topk(k).indices
        save_image(grid(images[idx], ncol=k, pad=1), path)


def write_index(model_spec: str, units, out: Path, prior: str) -> Path:
    rows, current = [], None
    for layer, k in units:
        if layer != current:
            rows.append(f"<h2>{html.escape(layer)}</h2>")
            current = layer
        img = image_path(out, layer, k).relative_to(out)
        ex = img.with_name(f"{k:04d}_examples.png")
        ex_tag = f'<img class="ex" src="{ex}">' if (out / ex).exists() else ""
        rows.append(
            f'<figure><img src="{img}" loading="lazy"><figcaption>{k}</figcaption>{ex_tag}</figure>'
            if (out / img).exists()
            else f"<figure><figcaption>{k} (not rendered)</figcaption></figure>"
        )
    title = f"fvis gallery: {html.escape(model_spec)}"
    page = f"""<!doctype html><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}figure{{display:inline-block;margin:4px;
text-align:center}}figure img{{width:112px;image-rendering:pixelated}}
figure img.ex{{display:block;width:112px}}</style>
<h1>{html.escape(model_spec)}</h1><p>channel objectives, prior: {html.escape(prior)}</p>
{"".join(rows)}
"""
    path = out / "index.html"
    atomic_write_text(page, path)
    return path


def parse_shard(spec: str) -> tuple[int, int]:
    k, _, n = spec.partition("/")
    k, n = int(k), int(n or 1)
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard must be K/N with 0 <= K < N, not {spec!r}")
    return k, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    ap.add_argument(
        "--model",
        default="fvis:mnist",
        help="model spec: fvis:NAME, torchvision:NAME, timm:NAME, hf:FOLDER or a checkpoint",
    )
    ap.add_argument("--weights", default="DEFAULT", help="DEFAULT, none or a weights file")
    ap.add_argument("--layers", required=True, help="comma-separated layer names")
    ap.add_argument(
        "--max-channels", type=int, default=None, help="render at most this many channels per layer"
    )
    ap.add_argument("-o", "--out", default="site", help="output folder (default site/)")
    ap.add_argument("--batch", type=int, default=16, help="units per batch (default 16)")
    ap.add_argument("--steps", type=int, default=256, help="steps per batch (default 256)")
    ap.add_argument("--tv", type=float, default=0.05, help="total-variation weight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior", default="image", help="image or generator:NAME")
    ap.add_argument(
        "--param", default="fft", choices=fvis.param.KINDS, help="image parameterization"
    )
    ap.add_argument("--shard", type=parse_shard, default=(0, 1), help="K/N: this worker's share")
    ap.add_argument(
        "--examples", action="store_true", help="show top-activating held-out MNIST digits per unit"
    )
    ap.add_argument("--index-only", action="store_true", help="only (re)write index.html")
    ap.add_argument("--force", action="store_true", help="re-render existing images")
    ap.add_argument("--device", default=None)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    device = args.device or fvis.models.default_device()
    model = fvis.load_model(args.model, weights=args.weights, device=device)
    out = Path(args.out)
    units = units_of(model, [s.strip() for s in args.layers.split(",")], args.max_channels)
    atomic_write_text(
        json.dumps(
            {"model": args.model, "prior": args.prior, "param": args.param, "units": units},
            indent=1,
        ),
        out / "manifest.json",
    )
    if not args.index_only:
        n = render_batches(
            model,
            units,
            out,
            batch=args.batch,
            steps=args.steps,
            seed=args.seed,
            prior=args.prior,
            shard=args.shard,
            force=args.force,
            progress=not args.quiet,
            tv=args.tv,
            param_kind=args.param,
        )
        print(f"rendered {n} unit(s); {len(units)} in the gallery", file=sys.stderr)
        if args.examples:
            top_examples(model, units, out)
    page = write_index(args.model, units, out, args.prior)
    print(f"gallery: {page.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
