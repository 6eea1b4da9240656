"""The benchmark suite cannot rot: its smoke version (one pair, tiny sizes) runs here."""

from __future__ import annotations

import json


def test_benchmark_suite_smoke(tmp_path):
    from benchmarks.__main__ import main

    only = "engine,attribution,evaluation,gallery"
    assert main(["--smoke", "--only", only, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["environment"]["threads"] >= 1 and data["environment"]["versions"]["torch"]
    cases = {r["bench"]: r for r in data["rows"]}
    assert set(cases) == {"engine", "attribution", "evaluation", "gallery"}
    pf = [r for r in data["rows"] if r["case"].startswith("pixel flipping:")]
    assert pf and all(r["check"].startswith("same curves") for r in pf)
    bare = [r for r in data["rows"] if r["case"].startswith("pixel flipping vs one bare")]
    assert bare and all(r["check"].startswith("same scores") for r in bare)
    gallery = [r for r in data["rows"] if r["bench"] == "gallery"]
    assert [r["case"].split(", ")[1] for r in gallery] == ["batch 1", "batch 4"]
    assert all(r["ratio"] > 0 for r in data["rows"] if r["ratio"] is not None)
    assert "| evaluation |" in (tmp_path / "bench.md").read_text()


def test_incremental_bound_counts_the_outputs_a_cell_reaches():
    """scripts/incremental_bound.py on one 3×3 conv (padding 1), an 8×8 input, 4 px cells:
    each cell is a corner cell and reaches 5 × 5 of the 8 × 8 outputs; a 1×1 conv after
    it adds work in proportion to its multiply-adds (16 per position vs 4·2·9 = 72)."""
    import importlib.util
    from pathlib import Path

    import torch
    from torch import nn

    path = Path(__file__).parents[1] / "scripts" / "incremental_bound.py"
    spec = importlib.util.spec_from_file_location("incremental_bound", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    one = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1))
    f = script.reached_work(one, torch.randn(1, 2, 8, 8), 4)
    assert f.tolist() == [25 / 64] * 4
    two = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 1))
    f = script.reached_work(two, torch.randn(1, 2, 8, 8), 4)
    assert torch.allclose(f, torch.full((4,), 25 / 64, dtype=f.dtype))
    deep = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    f = script.reached_work(deep, torch.randn(1, 2, 8, 8), 4)
    assert torch.allclose(f, torch.full((4,), (72 * 25 + 144 * 36) / (216 * 64), dtype=f.dtype))
