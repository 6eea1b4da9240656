"""Gallery throughput for the suite: units per second at batch 1/4/16/64 and the ratio
against one unit at a time, on the bundled CNN and GoogLeNet (random init, 128 px), as
``benchmarks/gallery_speed.py`` measures it (``ratio`` = time per unit at batch B over
time per unit at batch 1: below 1 is faster)."""

from __future__ import annotations

from benchmarks.common import row
from benchmarks.gallery_speed import BATCHES, cases, rates


def run(smoke: bool = False, device="cpu") -> list[dict]:
    steps, batches = (2, (1, 4)) if smoke else (16, BATCHES)
    rows = []
    for name, model, layer, size in cases(device, smoke):
        speeds = rates(model, layer, steps, size, 1 if smoke else 3, batches=batches)
        one = speeds[0]
        for b, ups in zip(batches, speeds):
            timing = dict(ratio=one / ups, units_per_s=ups, pairs=1)
            rows.append(row("gallery", f"{name} {layer}, batch {b}, {steps} steps", "batch 1",
                            timing, f"{ups:.3g} units/s (same recipe)"))  # fmt: skip
    return rows
