"""Gallery throughput for the suite: units per second at batch 1/4/16/64 and the ratio
against one unit at a time, on the bundled CNN and GoogLeNet (random init, 128 px), as
``benchmarks/gallery_speed.py`` measures it (``ratio`` = time per unit at batch B over
time per unit at batch 1: below 1 is faster)."""

from __future__ import annotations

from benchmarks.common import row
from benchmarks.gallery_speed import BATCHES, cases, units_per_second


def run(smoke: bool = False, device="cpu") -> list[dict]:
    steps, batches = (2, (1, 4)) if smoke else (16, BATCHES)
    rows = []
    for name, model, layer, size in cases(device, smoke):
        one = None
        for b in batches:
            ups = units_per_second(model, layer, b, steps, size, 1 if smoke else 3)
            one = one or ups
            timing = dict(ratio=one / ups, units_per_s=ups, pairs=1)
            rows.append(row("gallery", f"{name} {layer}, batch {b}, {steps} steps", "batch 1",
                            timing, f"{ups:.3g} units/s (same recipe)"))  # fmt: skip
    return rows
