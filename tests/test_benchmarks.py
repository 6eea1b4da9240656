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
