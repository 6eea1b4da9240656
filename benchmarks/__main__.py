"""``python -m benchmarks [--smoke] [--only NAMES] [--out DIR] [--device DEV]``: every
benchmark, writing ``DIR/bench.json`` and ``DIR/bench.md`` (machine, threads, library
versions, one row per comparison: the median ratio fvis / other over pairs, its range,
each side's median seconds, the load average when the row was measured, and how the two
were checked to compute the same thing).

Benchmarks: ``engine`` (render step vs bare truncated forward + backward), ``render``
(vs Lucent: a mid-layer channel and a 64-channel layer), ``gallery`` (units/s at batch
1/4/16/64, when the gallery benchmark is present), ``attribution`` (every method vs
captum/zennit, IG peak memory), ``evaluation`` (pixel flipping vs Quantus).
``--smoke``: one pair at tiny sizes (CI runs it as a test).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import environment

BENCHMARKS = {
    "engine": "benchmarks.render_speed",
    "render": "benchmarks.lucent_compare",
    "gallery": "benchmarks.gallery",
    "attribution": "benchmarks.attribution",
    "evaluation": "benchmarks.evaluation",
}


def _fmt(v, unit=""):
    return "–" if v is None else f"{v:.3g}{unit}"


def markdown(env: dict, rows: list[dict]) -> str:
    v = ", ".join(f"{k} {x}" for k, x in env["versions"].items() if x)
    load = _fmt(env["load_average"])
    head = (f"{env['device_name']} ({env['device']}), {env['cpus']} CPUs, {env['threads']} "
            f"torch thread(s), load average {load} at the start; {v}\n\n")  # fmt: skip
    lines = [
        "| benchmark | case | vs | fvis / other (median) | pairs: range | fvis s | other s "
        "| load | same computation? |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["bench"] == "memory":
            peak, added = _fmt(r.get("peak_mib")), _fmt(r.get("added_mib"))
            lines.append(f"| memory | {r['case']} | – | peak {peak} MiB | – | added {added} MiB "
                         "| – | – | – |")  # fmt: skip
            continue
        rng = f"{r['low']:.2f}–{r['high']:.2f} ({r['pairs']})" if r.get("low") else "–"
        a, b = _fmt(r.get("fvis_s")), _fmt(r.get("other_s"))
        lines.append(f"| {r['bench']} | {r['case']} | {r['other']} | {_fmt(r['ratio'])} | {rng} | "
                     f"{a} | {b} | {_fmt(r.get('load'))} | {r['check']} |")  # fmt: skip
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one pair, tiny sizes")
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="comma list of benchmarks")
    ap.add_argument("--out", default="out/bench", help="folder for bench.json and bench.md")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pairs", type=int, default=5, help="timed pairs per comparison (≥ 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    env = environment(args.device)
    rows, skipped = [], {}
    for name in names:
        try:
            mod = importlib.import_module(BENCHMARKS[name])
        except ImportError as e:  # a peer library or a benchmark that is not installed
            skipped[name] = f"{type(e).__name__}: {e}"
            print(f"[{name}] skipped: {e}", file=sys.stderr)
            continue
        start = time.perf_counter()
        kw = dict(smoke=args.smoke)
        if name != "attribution":
            kw["device"] = args.device
        if name in ("attribution", "evaluation", "render", "engine"):
            kw["pairs"] = args.pairs
        new = mod.run(**kw)
        rows += new
        print(f"[{name}] {len(new)} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(environment=env, smoke=args.smoke, skipped=skipped, rows=rows)
    (out / "bench.json").write_text(json.dumps(record, indent=1))
    md = markdown(env, rows)
    (out / "bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
