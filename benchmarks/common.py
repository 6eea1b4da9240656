"""What every benchmark shares: paired timing, the A/A noise row, the machine record."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def paired(fvis_fn, other_fn, pairs: int, device="cpu") -> dict:
    """Run ``fvis_fn`` and ``other_fn`` back to back ``pairs`` times, taking turns going
    first (a slow spell of a shared machine hits both alike; the first of two calls runs a
    few % slower), after one warm-up each. Returns the median of the per-pair ratios
    fvis / other, their range and each side's median seconds."""
    fvis_fn(), other_fn()
    ratios, a, b = [], [], []
    for i in range(pairs):
        t = {}
        for which, f in (
            ((0, fvis_fn), (1, other_fn)) if i % 2 == 0 else ((1, other_fn), (0, fvis_fn))
        ):
            sync(device)
            start = time.perf_counter()
            f()
            sync(device)
            t[which] = time.perf_counter() - start
        a.append(t[0])
        b.append(t[1])
        ratios.append(t[0] / t[1])
    return dict(ratio=statistics.median(ratios), low=min(ratios), high=max(ratios),
                fvis_s=statistics.median(a), other_s=statistics.median(b), pairs=pairs)  # fmt: skip


def row(bench: str, case: str, other: str, timing: dict, check: str, settings: str = "") -> dict:
    """One table row: ``ratio`` < 1 means fvis is faster (``speedup`` = 1 / ratio);
    ``load`` is the 1-minute load average when the row was measured (a shared machine)."""
    return dict(bench=bench, case=case, other=other, settings=settings, check=check, **timing,
                speedup=1 / timing["ratio"] if timing.get("ratio") else None,
                load=_load())  # fmt: skip


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def environment(device) -> dict:
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "CPU"
    versions = {}
    for pkg in ("torch", "torchvision", "kornia", "captum", "zennit", "grad-cam", "quantus",
                "torch-lucent"):  # fmt: skip
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    load = _load()
    return dict(device=str(dev), device_name=name, machine=platform.machine(),
                cpus=os.cpu_count(), threads=torch.get_num_threads(), load_average=load,
                python=platform.python_version(), versions=versions)  # fmt: skip
