"""Gallery throughput for the suite: units per second at batch 1/4/16/64 and the ratio
against one unit at a time, measured by ``benchmarks/gallery_speed.py`` (the gallery's
own benchmark; this adapter is skipped until it is present)."""

from __future__ import annotations

import fvis
from benchmarks.common import row
from benchmarks.gallery_speed import BATCHES, units_per_second  # ImportError: skipped


def run(smoke: bool = False, device="cpu") -> list[dict]:
    model = fvis.load_model("fvis:mnist", device=device)
    steps, batches = (2, (1, 4)) if smoke else (16, BATCHES)
    one = None
    rows = []
    for b in batches:
        ups = units_per_second(model, "conv3", b, steps, None, 1 if smoke else 3)
        one = one or ups
        timing = dict(ratio=one / ups, units_per_s=ups, pairs=1)
        rows.append(row("gallery", f"fvis:mnist conv3, batch {b}, {steps} steps", "batch 1",
                        timing, "same recipe", f"{ups:.3g} units/s"))  # fmt: skip
    return rows
