"""Gallery generation: files, index page, resuming, and shards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gallery_build", ROOT / "gallery" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

ARGS = [
    "--model",
    "fvis:mnist",
    "--layers",
    "conv1,fc1",
    "--max-channels",
    "3",
    "--batch",
    "4",
    "--steps",
    "3",
    "--device",
    "cpu",
    "-q",
]


def pngs(out: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*.png"))}


def test_build_resume_and_index(tmp_path, capsys):
    out = tmp_path / "site"
    assert build.main([*ARGS, "--examples", "-o", str(out)]) == 0
    files = pngs(out)
    units = [p for p in files if not p.name.endswith("_examples.png")]
    assert len(units) == 6 and len(files) == 12
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == 6 and "units/conv1/0000.png" in page
    assert "rendered 6 unit(s)" in capsys.readouterr().err
    # a second run finds everything done and renders nothing
    assert build.main([*ARGS, "-o", str(out)]) == 0
    assert "rendered 0 unit(s)" in capsys.readouterr().err
    assert pngs(out) == files
    # an interrupted build (a missing image) resumes with just that batch
    units[0].unlink()
    assert build.main([*ARGS, "-o", str(out)]) == 0
    assert "rendered 1 unit(s)" in capsys.readouterr().err


def test_shards_split_the_work(tmp_path, capsys):
    out = tmp_path / "site"
    for k in range(2):
        assert build.main([*ARGS, "--shard", f"{k}/2", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "rendered 4 unit(s)" in err and "rendered 2 unit(s)" in err
    assert len(pngs(out)) == 6


def test_unknown_layer_is_a_clear_error(tmp_path):
    with pytest.raises(KeyError, match="Nearest names: conv3"):
        build.main(["--model", "fvis:mnist", "--layers", "conv4", "-o", str(tmp_path), "-q"])


def test_parameterization_choice_is_used_and_recorded(tmp_path):
    import json

    out = tmp_path / "site"
    assert build.main([*ARGS, "--param", "cppn", "-o", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["param"] == "cppn"
    assert len(pngs(out)) == 6
    with pytest.raises(SystemExit):  # argparse lists the choices
        build.main([*ARGS, "--param", "fourier", "-o", str(out)])
