"""Gallery throughput: units rendered per second with B units per optimization.

    python benchmarks/gallery_speed.py [--steps 16] [--threads 2] [--repeats 3]

For each model — the bundled MNIST CNN (conv3) and torchvision GoogLeNet (random init,
inception4a, 128 px) — renders B channel units in one batch (the gallery's recipe: each
item from its own seed, Lucid's transforms, ``steps`` steps) for B = 1, 4, 16, 64, and
prints units per second and the ratio against one unit at a time (B = 1), measured in
the same run. Each figure is the best of ``repeats`` timed runs after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import fvis  # noqa: E402
from fvis.recipes import RenderRecipe  # noqa: E402

BATCHES = (1, 4, 16, 64)


def units_per_second(model, layer: str, batch: int, steps: int, size, repeats: int) -> float:
    """Best of ``repeats``: ``batch`` units / seconds for one render of them all."""
    recipe = RenderRecipe(
        units=(f"{layer}[0-{batch - 1}]",), steps=steps, size=size, seeds=tuple(range(batch))
    )
    recipe.replace(steps=1).run(model)  # warm-up (kernels, caches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        recipe.run(model)
        best = min(best, time.perf_counter() - start)
    return batch / best


def cases(device="cpu", smoke: bool = False) -> list[tuple]:
    """``(name, model, layer, size)``: the bundled CNN's conv3, and (unless ``smoke``)
    GoogLeNet's inception4a at 128 px."""
    out = [("fvis:mnist", fvis.load_model("fvis:mnist", device=device), "conv3", None)]
    if not smoke:
        g = fvis.load_model("torchvision:googlenet", weights=None, device=device)
        out.append(("googlenet (random init), 128 px", g, "inception4a", 128))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=16, help="render steps per batch (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs, best kept (default 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = cases()
    print(f"units per second, {args.steps} steps, {args.threads} thread(s), CPU")
    print(f"{'model':34} " + " ".join(f"{'B=' + str(b):>9}" for b in BATCHES) + "   best/B=1")
    for name, model, layer, size in models:
        rates = [units_per_second(model, layer, b, args.steps, size, args.repeats) for b in BATCHES]
        row = " ".join(f"{r:9.2f}" for r in rates)
        print(f"{name:34} {row}   {max(rates) / rates[0]:.2f}×", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
