"""Attribution benchmark: seconds per image for every method, and the peak memory of
Integrated Gradients with and without ``internal_batch_size``.

    OMP_NUM_THREADS=2 python benchmarks/attribution.py                # full run
    python benchmarks/attribution.py --models fvis:mnist --repeats 1  # quick

Models: the bundled MNIST CNN (batch 8, 28 px) and ResNet-18 (random weights, batch 8,
224 px). Every method runs with the settings printed in the table (IG ``--steps``
Gauss–Legendre points, SmoothGrad ``--samples`` noisy copies); the time is the best of
``--repeats`` runs after one warm-up, divided by the batch. Where captum or zennit is
importable, the same method at equal settings runs in pairs with fvis's (each going
first in turn), and the ratio printed is the median over the pairs of fvis / other
(below 1: fvis is faster).
The last row per model, captum's Saliency timed against itself the same way, shows how
far from 1 a ratio strays by noise alone on the machine at hand.

Peak memory: a fresh subprocess loads the model, resets its peak RSS
(``/proc/self/clear_refs``) and runs one call: a plain gradient, IG with every
interpolated input in one pass, and IG with ``internal_batch_size`` rows per pass; the
table gives the peak RSS and what the call added to the RSS before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import fvis
from fvis.attribution import (
    CAM,
    GradCAM,
    GradCAMPlusPlus,
    Gradient,
    GradientXInput,
    GuidedGradCAM,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    Saliency,
    Sensitivity,
    SmoothGrad,
    SmoothGradSquared,
    VarGrad,
)
from fvis.attribution.baselines import make_baselines


def load(spec: str):
    if spec.startswith("fvis:"):
        model = fvis.load_model(spec)
        size = (1, 28, 28)
    else:
        model = fvis.load_model(spec, weights=None)
        size = (3, 224, 224)
    return model, size


def methods(model, steps: int, samples: int) -> dict[str, tuple[str, callable]]:
    """name -> (settings, fn(x, target))."""
    m = model
    out = {
        "Gradient": ("", lambda x, t: Gradient(m).attribute(x, t)),
        "Saliency": ("", lambda x, t: Saliency(m).attribute(x, t)),
        "Sensitivity": ("", lambda x, t: Sensitivity(m).attribute(x, t)),
        "GradientXInput": ("", lambda x, t: GradientXInput(m).attribute(x, t)),
        "IntegratedGradients": (
            f"steps={steps}",
            lambda x, t: IntegratedGradients(m).attribute(x, t, steps=steps),
        ),
        "SmoothGrad(Saliency)": (
            f"n={samples}",
            lambda x, t: SmoothGrad(Saliency(m)).attribute(x, t, n=samples, generator=0),
        ),
        "SmoothGrad²": (
            f"n={samples}",
            lambda x, t: SmoothGradSquared(m).attribute(x, t, n=samples, generator=0),
        ),
        "VarGrad": (
            f"n={samples}",
            lambda x, t: VarGrad(m).attribute(x, t, n=samples, generator=0),
        ),
        "CAM": ("", lambda x, t: CAM(m).attribute(x, t, upsample=True)),
        "GradCAM": ("", lambda x, t: GradCAM(m).attribute(x, t, upsample=True)),
        "GradCAM++": ("", lambda x, t: GradCAMPlusPlus(m).attribute(x, t, upsample=True)),
        "GuidedGradCAM": ("", lambda x, t: GuidedGradCAM(m).attribute(x, t)),
        "LayerGradientXActivation": (
            "",
            lambda x, t: LayerGradientXActivation(m).attribute(x, t, reduce="channel"),
        ),
        "LayerIntegratedGradients": (
            f"steps={steps}",
            lambda x, t: LayerIntegratedGradients(m).attribute(x, t, steps=steps),
        ),
    }
    # the propagation-rule methods of the other module, where importable
    try:
        from fvis.attribution import LRP, Deconvnet, DeepLift, DeepTaylor, GuidedBackprop

        out.update(
            {
                "Deconvnet": ("", lambda x, t: Deconvnet(m).attribute(x, t)),
                "GuidedBackprop": ("", lambda x, t: GuidedBackprop(m).attribute(x, t)),
                "DeepLift(rescale)": ("", lambda x, t: DeepLift(m).attribute(x, t)),
                "DeepLift(reveal_cancel)": (
                    "",
                    lambda x, t: DeepLift(m, "reveal_cancel").attribute(x, t),
                ),
                "LRP": ("default composite", lambda x, t: LRP(m).attribute(x, t)),
                "DeepTaylor": ("", lambda x, t: DeepTaylor(m).attribute(x, t)),
            }
        )
    except ImportError:
        pass
    return out


def _one_hot(model, x, t):
    with torch.no_grad():
        n = model(x[:1]).shape[1]
    return torch.eye(n)[t]


def reference(model, steps: int, samples: int) -> dict[str, callable]:
    """The same methods in captum / zennit at equal settings, when installed
    (fn(x, target)); the fvis method name is the key."""
    out = {}
    info = model.fvis_info
    lo, hi = info.valid_range(torch.zeros(1, info.channels, 1, 1))
    noise_std = 0.15 * float((hi - lo).mean())  # fvis: 0.15 of the valid range
    cam_layer = "relu3" if info.input_size == (1, 28, 28) else "layer4"
    try:
        import captum.attr as ca

        out["IntegratedGradients"] = lambda x, t: ca.IntegratedGradients(model).attribute(
            x, target=t, baselines=make_baselines("black", x, info)[0], n_steps=steps,
            method="gausslegendre", internal_batch_size=64,
        )  # fmt: skip
        out["Deconvnet"] = lambda x, t: ca.Deconvolution(model).attribute(x, target=t)
        out["Saliency"] = lambda x, t: ca.Saliency(model).attribute(x, target=t)
        out["GradientXInput"] = lambda x, t: ca.InputXGradient(model).attribute(x, target=t)
        out["GuidedBackprop"] = lambda x, t: ca.GuidedBackprop(model).attribute(x, target=t)
        out["DeepLift(rescale)"] = lambda x, t: ca.DeepLift(model).attribute(x, target=t)
        out["SmoothGrad(Saliency)"] = lambda x, t: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x, target=t, nt_type="smoothgrad", nt_samples=samples, stdevs=noise_std,
            nt_samples_batch_size=max(1, 64 // x.shape[0]),
        )  # fmt: skip

        def gradcam(x, t):
            layer = model.get_submodule(cam_layer)
            cam = ca.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
            return ca.LayerAttribution.interpolate(cam, x.shape[-2:], "bilinear")

        out["GradCAM"] = gradcam
    except ImportError:
        pass
    try:
        from zennit.attribution import Gradient as ZGradient
        from zennit.composites import EpsilonPlus
        from zennit.torchvision import ResNetCanonizer

        def zgrad(x, t):  # plain gradient: zennit's attributor without a composite
            with ZGradient(model=model) as attributor:
                _, grad = attributor(x, _one_hot(model, x, t))
            return grad

        def zlrp(x, t):  # LRP ε (dense) / z⁺ (conv), BatchNorm merged, as fvis's default;
            # relevance starts at the target's logit, as fvis's does (zennit: output · one-hot)
            canon = [] if info.input_size == (1, 28, 28) else [ResNetCanonizer()]
            hot = _one_hot(model, x, t)
            with ZGradient(model=model, composite=EpsilonPlus(canonizers=canon)) as attributor:
                _, rel = attributor(x, lambda out: out * hot)
            return rel

        out.setdefault("Gradient", zgrad)
        out["LRP"] = zlrp
    except ImportError:
        pass
    return out


def agreement(ours, theirs) -> str:
    """How far fvis's maps are from the other library's, relative to their largest value
    (the random methods draw different noise: there the figure is not expected to be 0)."""
    if isinstance(theirs, tuple):
        theirs = theirs[0]
    a, b = ours.detach().float(), theirs.detach().float()
    if a.shape != b.shape:
        try:
            b = b.expand_as(a)
        except RuntimeError:
            return f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"max rel. diff {float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)):.1e}"


def run(smoke: bool = False, pairs: int = 6) -> list[dict]:
    """Rows for the suite (``python -m benchmarks``): every method on both models with
    its captum/zennit ratio, and IG's peak memory with and without internal batching."""
    from benchmarks.common import row

    if smoke:
        specs, batch, steps, samples, only = ["fvis:mnist"], 2, 4, 2, ("Saliency", "GradCAM")
    else:
        specs, batch, steps, samples, only = ["fvis:mnist", "torchvision:resnet18"], 8, 32, 16, None
    out = []
    for spec in specs:
        for r in run_times(spec, batch, steps, samples, 1 if smoke else pairs, only):
            ratio = r["ratio"] if isinstance(r["ratio"], float) else None
            timing = dict(ratio=ratio, fvis_s=r["sec"] * batch, pairs=1 if smoke else pairs)
            other = "captum/zennit" if ratio is not None else (r["ratio"] or r["error"] or "–")
            settings = f"batch {batch} {r['settings']}".strip()
            case = f"{spec}: {r['method']}"
            out.append(row("attribution", case, other, timing, r.get("check", "–"), settings))
    if not smoke:
        for spec in specs:
            mem = memory(spec, batch, 16, 16)
            for key, label in (
                ("all", "IG 8 × 16 steps, one pass"),
                ("16", "IG 8 × 16 steps, 16 rows per pass"),
            ):
                m = mem[key]
                added = m["peak_mib"] - m["before_mib"] if m["before_mib"] is not None else None
                timing = dict(ratio=None, peak_mib=m["peak_mib"], added_mib=added, pairs=1)
                out.append(row("memory", f"{spec}: {label}", "–", timing, "–"))
    return out


def timed(fn, x, t, repeats: int) -> float:
    """Best of ``repeats`` runs, in seconds (warm-up done by the caller)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x, t)
        best = min(best, time.perf_counter() - start)
    return best


def paired(fn, ref, x, t, repeats: int) -> tuple[float, list[float]]:
    """(best time of ``fn``, the per-pair ratios fn / ref). The two run back to back, so
    a slow spell of a shared machine hits both alike, and take turns going first (the
    first of two identical calls measures a few % slower here)."""
    ratios, best = [], float("inf")
    for i in range(repeats):
        times = {}
        for which, f in ((0, fn), (1, ref)) if i % 2 == 0 else ((1, ref), (0, fn)):
            start = time.perf_counter()
            f(x, t)
            times[which] = time.perf_counter() - start
        best = min(best, times[0])
        ratios.append(times[0] / times[1])
    return best, ratios


def run_times(
    spec: str, batch: int, steps: int, samples: int, repeats: int, only=None
) -> list[dict]:
    torch.manual_seed(0)
    model, size = load(spec)
    x = torch.randn(batch, *size)
    if spec == "fvis:mnist":
        from fvis.data import mnist

        x = model.fvis_info.normalize(mnist("test")[0][:batch])
    target = torch.arange(batch) % 10
    refs = reference(model, steps, samples)
    rows = []
    for name, (settings, fn) in methods(model, steps, samples).items():
        if only is not None and name not in only:
            continue
        ratio, err, sec, check = None, "", float("nan"), "–"
        try:
            fn(x, target)  # warm-up (traces, caches); fails fast on a documented refusal
        except Exception as e:  # a documented refusal (CAM on non-GAP nets) or a failure
            err = f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"
        if not err and name in refs:
            try:
                check = agreement(fn(x, target), refs[name](x, target))  # also its warm-up
                sec, ratios = paired(fn, refs[name], x, target, repeats)
                ratio = statistics.median(ratios)
            except Exception as e:  # the other library fails on this model
                ratio = f"other fails: {type(e).__name__}: {str(e).splitlines()[0][:50]}"
        if not err and not isinstance(ratio, float):
            sec = timed(fn, x, target, repeats)
        sec /= batch
        rows.append(
            dict(
                model=spec,
                method=name,
                settings=settings,
                sec=sec,
                ratio=ratio,
                error=err,
                check=check,
            )  # fmt: skip
        )
        print(
            f"  {spec:22s} {name:26s} {settings:18s} " + (err or f"{sec * 1000:10.2f} ms"),
            flush=True,
        )
    if "Saliency" in refs:  # the noise floor: the same reference call against itself
        ref = refs["Saliency"]
        sec, ratios = paired(ref, ref, x, target, repeats)
        rows.append(dict(model=spec, method="A/A: captum Saliency vs itself",
                         settings=f"pairs {min(ratios):.2f}–{max(ratios):.2f}", sec=sec / batch,
                         ratio=statistics.median(ratios), error="", check="identical"))  # fmt: skip
    return rows


def _status(field: str) -> float | None:
    """A field of /proc/self/status in MiB (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child_memory(spec: str, batch: int, steps: int, ibs: str) -> None:
    """Run in a subprocess: print the RSS before one call and the peak RSS during it (MiB).
    The peak is reset just before the call (``/proc/self/clear_refs``), so imports and
    model loading do not count."""
    import resource

    torch.manual_seed(0)
    model, size = load(spec)
    x = torch.randn(batch, *size)
    target = torch.arange(batch) % 10
    Gradient(model).attribute(x[:1], target[:1])  # warm-up: lazy inits, traces
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status("VmRSS")
    except OSError:
        before = None
    if ibs == "baseline":
        Gradient(model).attribute(x, target)
    else:
        rows = batch * steps if ibs == "all" else int(ibs)
        IntegratedGradients(model).attribute(x, target, steps=steps, internal_batch_size=rows)
    peak = _status("VmHWM") if before is not None else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mib": before, "peak_mib": peak}))


def memory(spec: str, batch: int, steps: int, chunk: int) -> dict[str, dict]:
    out = {}
    for ibs in ("baseline", "all", str(chunk)):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", spec, str(batch), str(steps), ibs],
            capture_output=True, text=True, check=True, env=os.environ.copy(),
        )  # fmt: skip
        out[ibs] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fvis:mnist", "torchvision:resnet18"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=32, help="IG quadrature points")
    p.add_argument("--samples", type=int, default=16, help="SmoothGrad noisy copies")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--memory-steps", type=int, default=16)
    p.add_argument("--memory-chunk", type=int, default=16)
    p.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        spec, batch, steps, ibs = args.memory_child
        child_memory(spec, int(batch), int(steps), ibs)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    rows = []
    for spec in args.models:
        rows += run_times(spec, args.batch, args.steps, args.samples, args.repeats)
    print("\n| model | method | settings | ms / image | vs captum/zennit |")
    print("|---|---|---|---:|---:|")
    for r in rows:
        t = r["error"] or f"{r['sec'] * 1000:.2f}"
        ratio = r["ratio"]
        ratio = "–" if ratio is None else ratio if isinstance(ratio, str) else f"{ratio:.2f}×"
        print(f"| {r['model']} | {r['method']} | {r['settings']} | {t} | {ratio} |")
    print("\nPeak memory of one call (RSS of a fresh process, MiB; added = peak − RSS before)")
    print("| model | call | rows per pass | peak MiB | added MiB |")
    print("|---|---|---:|---:|---:|")
    for spec in args.models:
        mem = memory(spec, args.batch, args.memory_steps, args.memory_chunk)
        rows_all = args.batch * args.memory_steps
        for key, call, rows in (
            ("baseline", f"Gradient, batch {args.batch}", args.batch),
            ("all", f"IG {args.batch} × {args.memory_steps} steps", rows_all),
            (str(args.memory_chunk), f"IG {args.batch} × {args.memory_steps} steps",
             args.memory_chunk),
        ):  # fmt: skip
            m = mem[key]
            added = m["peak_mib"] - m["before_mib"] if m["before_mib"] is not None else None
            added = f"{added:.0f}" if added is not None else "–"
            print(f"| {spec} | {call} | {rows} | {m['peak_mib']:.0f} | {added} |")


if __name__ == "__main__":
    main()
