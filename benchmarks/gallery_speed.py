"""Gallery throughput: units rendered per second with B units per optimization.

    python benchmarks/gallery_speed.py [--steps 16] [--threads 2] [--repeats 3]

For each model — the bundled MNIST CNN (conv3) and torchvision GoogLeNet (random init,
inception4a, 128 px) — renders B channel units in one batch (the gallery's recipe: each
item from its own seed, Lucid's transforms, ``steps`` steps) for B = 1, 4, 16, 64, and
prints units per second and the ratio against one unit at a time (B = 1), measured in
the same run. Each figure is the best of ``repeats`` timed runs after a warm-up; the
repeats go round all batch sizes in turn, so a slow spell of the machine does not fall
on one batch size only.

Below each model, ``network alone`` is the ceiling batching can reach on this machine:
the same model without fvis (plain torch, a forward hook that stops at the layer), one
forward and input-gradient backward of random images at the size the transforms give
(``size`` + 16 px), B items per call, as "steps" per second; its ratio is how well the
network itself batches here. It leaves out what a render adds to each step: the
parameterization, transforms, normalization, Adam and Python (a fixed cost that B = 1
pays alone), and the redirected ReLU (with the default 16 steps, every step uses it; its
cost grows with B).
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


def render_run(model, layer: str, batch: int, steps: int, size):
    """A warmed-up callable rendering channels 0..batch-1 of ``layer`` in one batch."""
    recipe = RenderRecipe(
        units=(f"{layer}[0-{batch - 1}]",), steps=steps, size=size, seeds=tuple(range(batch))
    )
    recipe.replace(steps=1).run(model)  # warm-up (kernels, caches)
    return lambda: recipe.run(model)


class _Stop(Exception):
    pass


def network_run(model, layer: str, batch: int, steps: int, size):
    """A warmed-up callable: ``steps`` plain-torch forward passes of ``batch`` random images
    (channels-last, as fvis feeds them) cut at ``layer``, each with the gradient of item
    b's channel b (mean) with respect to the image — a render step without fvis."""
    c, h, w = model.fvis_info.input_size
    if size is not None:
        h = w = size + 16  # Lucid's transforms: pad 12, jitter 8, scale ±10%, jitter 4
    x = torch.rand(batch, c, h, w).clone(memory_format=torch.channels_last)  # C = 1 too
    x.requires_grad_(True)
    module, out = model.get_submodule(layer), []

    def stop(_module, _inputs, output):
        out.append(output)
        raise _Stop

    def step():
        out.clear()
        handle = module.register_forward_hook(stop)
        try:
            model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        a = out[0]
        value = a[torch.arange(batch), torch.arange(batch) % a.shape[1]].mean()
        torch.autograd.grad(value, x)

    def run():
        for _ in range(steps):
            step()

    step()  # warm-up
    return run


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rates(model, layer, steps, size, repeats, make=None, batches=BATCHES) -> list[float]:
    """Units per second for each of ``batches``, best of ``repeats`` rounds that each
    time every batch size once, in turn; ``make``: :func:`render_run` (default) or
    :func:`network_run`."""
    runs = [(make or render_run)(model, layer, b, steps, size) for b in batches]
    best = [float("inf")] * len(batches)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            best[i] = min(best[i], timed(run))
    return [b / t for b, t in zip(batches, best)]


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
        for label, make in ((name, render_run), ("  network alone, same layer", network_run)):
            r = rates(model, layer, args.steps, size, args.repeats, make)
            row = " ".join(f"{v:9.2f}" for v in r)
            print(f"{label:34} {row}   {max(r) / r[0]:.2f}×", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
