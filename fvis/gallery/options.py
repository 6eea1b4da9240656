"""The gallery's command-line options, shared by ``fvis gallery`` and ``gallery/build.py``."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  fvis gallery --model fvis:mnist --layers conv1,conv2,conv3,fc1,output -o site/
  fvis gallery --model torchvision:googlenet --weights none --layers inception4a --size 128
  fvis gallery ... --shard 0/4            # this worker's quarter (a job array); then
  fvis gallery ... --index-only           # the manifest and pages from every shard
  fvis gallery ... --ray                  # batches as Ray tasks on this machine
  fvis gallery ... --ray 10.0.0.1:6379    # ... on a cluster (ray start --head)
"""


def shard(spec: str) -> tuple[int, int]:
    k, _, n = spec.partition("/")
    try:
        k, n = int(k), int(n or 1)
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard must be K/N with 0 <= K < N, not {spec!r}")
    return k, n


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fvis.gallery.build import GalleryRecipe
    from fvis.recipes import RenderRecipe
    from fvis.recipes.options import RENDER, add_options

    R, G = RenderRecipe(), GalleryRecipe()
    p.description = "Render every unit of chosen layers as a static site (resumable)."
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", default="fvis:mnist", help="model spec (default %(default)s)")
    p.add_argument(
        "--weights", default="DEFAULT", help="DEFAULT, none (random init), an enum name or a file"
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--layers",
        required=True,
        help="comma-separated layer names (see fvis layers), 'output' for the classes, or 'all'",
    )
    p.add_argument("--max-channels", type=int, default=None, help="at most this many per layer")
    p.add_argument("-o", "--out", default="site", help="output folder (default %(default)s)")
    r = p.add_argument_group("rendering (the recipe; a change writes under a new key)")
    add_options(r, R, RENDER, ("steps", "lr", "seed", "param", "size", "tv"))
    r.add_argument(
        "--batch", type=int, default=G.batch, help="units per optimization (default %(default)s)"
    )
    r.add_argument(
        "--diversity", type=int, default=G.diversity, help="images in a diversity set (0: none)"
    )
    r.add_argument(
        "--diversity-weight",
        type=float,
        default=G.diversity_weight,
        help="added to the unit's value, so in its scale: default %(default)s (Lucid's, for "
        "InceptionV1); lower it where units reach tens, not hundreds",
    )
    r.add_argument("--no-negative", action="store_true", help="skip the minimized images")
    r.add_argument(
        "--prior", default=None, help="generator:NAME: also a code-space image for classes"
    )
    e = p.add_argument_group("dataset examples")
    e.add_argument("--examples", type=int, default=G.examples, help="top and bottom k (0: none)")
    e.add_argument(
        "--dataset",
        default=None,
        help="a folder of images, flat or ImageFolder (default: held-out digits)",
    )
    e.add_argument(
        "--rank", choices=("max", "mean"), default=G.rank, help="default %(default)s (Microscope)"
    )
    e.add_argument("--heatmap", default=G.heatmap, help="attribution method (default %(default)s)")
    w = p.add_argument_group("running")
    w.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per batch, pinned and recorded (default 1)",
    )
    w.add_argument("--shard", type=shard, default=(0, 1), help="K/N: this worker's batches")
    w.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=None,
        metavar="ADDRESS",
        help="submit batches as Ray tasks (a local cluster, or the one at ADDRESS)",
    )
    w.add_argument("--workers", type=int, default=None, help="CPUs of a local Ray cluster")
    w.add_argument("--gpus", type=float, default=None, help="GPUs per Ray task (default 1 if any)")
    w.add_argument("--index-only", action="store_true", help="only write the manifest and pages")
    w.add_argument("--force", action="store_true", help="render finished batches again")
    w.add_argument("-q", "--quiet", action="store_true", help="no log lines")


def recipe_from(args):
    from fvis.gallery.build import GalleryRecipe
    from fvis.recipes import RenderRecipe

    render = RenderRecipe(
        steps=args.steps, lr=args.lr, seed=args.seed, param=args.param, size=args.size, tv=args.tv
    )
    return GalleryRecipe(
        render=render,
        negative=not args.no_negative,
        diversity=args.diversity,
        diversity_weight=args.diversity_weight,
        examples=args.examples,
        rank=args.rank,
        heatmap=args.heatmap,
        codespace=args.prior,
        batch=args.batch,
    )
