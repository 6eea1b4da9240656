"""Engine speed: fvis.render's time per step against a bare forward + backward.

Prints, measured in the same run on torchvision googlenet (random init):

* ``fvis / bare``: render's time per step (Fourier param + colour decorrelation +
  hooks + objective + backward + Adam step) divided by the time of a bare forward
  (the network truncated by hand at the target layer) plus backward on the same
  input. Without transforms, the input is the 128 px image; with Lucid's standard
  transforms, the bare pass replays the same transformed sizes.
* ``full / early``: the time per step when the whole network runs each step (what
  Lucent does) divided by fvis's early-stopping time, for an early and a mid layer.

Measurements are interleaved (bare, fvis, full in each repeat) after a warm-up and the
median of the repeats is reported.

    python benchmarks/render_speed.py [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

import fvis
from fvis import objectives as O
from fvis import transforms as T
from fvis.models import ModelInfo, attach

CUT = {  # googlenet children up to and including the target layer
    "inception3a": ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a"],
    "inception4a": [
        "conv1",
        "maxpool1",
        "conv2",
        "conv3",
        "maxpool2",
        "inception3a",
        "inception3b",
        "maxpool3",
        "inception4a",
    ],
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step_time(trunk, sizes, batch, channel, device) -> float:
    """Mean seconds of forward (to the target) + backward, over inputs of ``sizes``."""
    times = []
    for s in sizes:
        x = torch.rand(batch, 3, s, s, device=device, requires_grad=True)
        sync(device)
        t = time.perf_counter()
        out = trunk(x)
        out[:, channel].mean(dim=(1, 2)).sum().backward()
        sync(device)
        times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def render_step_time(model, objective, batch, steps, transforms, device) -> float:
    """Seconds per step of fvis.render over ``steps`` steps (its set-up, a parameter and
    an optimizer, is well under 1% of that)."""
    p = fvis.param.image(128, batch=batch)
    sync(device)
    t = time.perf_counter()
    fvis.render(
        model, objective, p, transforms=transforms, steps=steps, progress=False, device=device
    )
    sync(device)
    return (time.perf_counter() - t) / steps


def transformed_sizes(steps: int) -> list[int]:
    g = torch.Generator().manual_seed(0)
    tf = T.standard()
    x = torch.zeros(1, 1, 128, 128)
    return [tf(x, g).shape[-1] for _ in range(steps)]


def run(smoke: bool = False, pairs: int = 5, device="cpu") -> list[dict]:
    """Rows for the suite: fvis.render's time per step against the bare truncated
    forward + backward (inception3a, batch 1 and 8, no transforms), in pairs."""
    from benchmarks.common import paired, row

    device = torch.device(device)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    model = attach(model.eval().to(device), ModelInfo((3, 128, 128), name="googlenet"))
    for p in model.parameters():
        p.requires_grad_(False)
    steps = 2 if smoke else 24
    layer = "inception3a"
    trunk = nn.Sequential(*[getattr(model, n) for n in CUT[layer]])
    rows = []
    for batch in (1,) if smoke else (1, 8):
        sizes = [128] * steps
        t = paired(
            lambda b=batch: render_step_time(model, O.channel(layer, 7), b, steps, None, device),
            lambda b=batch, s=sizes: bare_step_time(trunk, s, b, 7, device),
            1 if smoke else pairs,
        )
        rows.append(row("engine", f"render step vs bare forward+backward, googlenet {layer}, "
                        f"batch {batch}, 128 px", "bare torch", t,
                        "same network prefix and objective"))  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    model = attach(model.eval().to(device), ModelInfo((3, 128, 128), name="googlenet"))
    for p in model.parameters():
        p.requires_grad_(False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print("googlenet (random init), 128 px, target channel 7\n")
    print(
        f"{'layer':<12} {'batch':>5} {'transforms':>10} {'bare ms':>8} {'fvis ms':>8} "
        f"{'fvis/bare':>9} {'full ms':>8} {'full/fvis':>9}"
    )
    for layer in ("inception3a", "inception4a"):
        trunk = nn.Sequential(*[getattr(model, n) for n in CUT[layer]])
        early = O.channel(layer, 7)
        full = early + 0 * O.class_logit(0)  # forces the whole network, as Lucent runs it
        for batch in (1, 8):
            for tf in (None, "standard"):
                # the sizes render's transforms produce (seed 0), replayed by the bare pass
                sizes = [128] * args.steps if tf is None else transformed_sizes(args.steps)
                bare, fv, fl = [], [], []
                # warm-up: every input size traced (fvis) and planned (oneDNN) once
                bare_step_time(trunk, sizes, batch, 7, device)
                render_step_time(model, full, batch, args.steps, tf, device)
                for _ in range(args.repeats):
                    bare.append(bare_step_time(trunk, sizes, batch, 7, device))
                    fv.append(render_step_time(model, early, batch, args.steps, tf, device))
                    fl.append(render_step_time(model, full, batch, args.steps, tf, device))
                b, f, u = (statistics.median(v) * 1e3 for v in (bare, fv, fl))
                print(
                    f"{layer:<12} {batch:>5} {str(tf):>10} {b:8.2f} {f:8.2f} {f / b:9.3f} "
                    f"{u:8.2f} {u / f:9.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
