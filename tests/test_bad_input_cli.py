"""Bad input through the command line: a user error is one line on stderr and exit status
2, never a traceback (``--debug`` shows it); Ctrl-C exits with 130.

Every case in :data:`CASES` runs as its own process (forked from one that has imported
fvis; see :data:`FORK_SERVER`); a few run a fresh interpreter; the checks that need to
replace a function (the render must not start, Ctrl-C, a bug) call ``main`` in this process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fvis
from fvis.cli import main
from fvis.models import save

ROOT = Path(__file__).resolve().parents[1]
RENDER = ["render", "--model", "fvis:mnist", "--steps", "2", "-q"]


def run_main(args, capsys):
    """(exit status, stderr) of ``fvis ARGS`` run in this process."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture
def no_render(monkeypatch):
    """Fail the test if a model loads or a render starts: the refusal comes before any work."""
    import fvis.recipes

    def refuse(*args, **kwargs):
        raise AssertionError("the render started")

    monkeypatch.setattr(fvis, "render", refuse)
    monkeypatch.setattr(fvis.recipes, "load_model", refuse)


CHECKPOINTS = ("self", "truncated", "mismatched")


def _ckpt(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "self":
        torch.save({"fvis_format": 1, "spec": str(path), "state_dict": {}}, path)
    else:
        save(fvis.load_model("fvis:mnist-mlp"), path, "fvis:mnist-mlp")
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:500])
        else:  # mismatched: the MLP's weights under the CNN's spec
            data = torch.load(path, weights_only=True)
            torch.save({**data, "spec": "fvis:mnist"}, path)
    return path


# (arguments, words the one-line message must contain); every case exits with 2
CASES = {
    "--channel 5-2": (RENDER + ["--layer", "conv3", "--channel", "5-2"], ["5-2", "2-5"]),
    "--channel a": (RENDER + ["--layer", "conv3", "--channel", "a"], ["'a'", "0-7"]),
    "--channel -3": (RENDER + ["--layer", "conv3", "--channel=-3"], ["-3", "negative"]),
    "--channel 99": (RENDER + ["--layer", "conv3", "--channel", "99"], ["99", "0..63"]),
    "--channel 0-99999": (
        RENDER + ["--layer", "conv1", "--channel", "0-99999"],
        ["channel 16 is out of range", "0..15"],
    ),
    "--class 12": (RENDER + ["--class", "12"], ["12", "0..9"]),
    "--class 2.5": (RENDER + ["--class", "2.5"], ["'2.5'"]),
    "--layer nope": (RENDER + ["--layer", "conv33", "--channel", "1"], ["conv33", "conv3"]),
    "--layer without unit": (RENDER + ["--layer", "conv3"], ["--channel"]),
    "--steps 0": (RENDER + ["--class", "1", "--steps", "0"], ["steps", "≥ 1", "not 0"]),
    "--steps abc": (RENDER + ["--class", "1", "--steps", "abc"], ["--steps", "'abc'", "--help"]),
    "--param nope": (RENDER + ["--class", "1", "--param", "nope"], ["--param", "'nope'", "fft"]),
    "unknown option": (RENDER + ["--class", "1", "--stpes", "3"], ["--stpes"]),
    "--batch 0": (RENDER + ["--class", "1", "--batch", "0"], ["--batch", "≥ 1", "not 0"]),
    "--lr nan": (RENDER + ["--class", "1", "--lr", "nan"], ["lr", "nan"]),
    "--tv inf": (RENDER + ["--class", "1", "--tv", "inf"], ["inf"]),
    "--decay-power nan": (RENDER + ["--class", "1", "--decay-power", "nan"], ["decay_power"]),
    "--size 10000": (RENDER + ["--class", "1", "--size", "10000"], ["10000", "1..4096"]),
    "--size 0": (RENDER + ["--class", "1", "--size", "0"], ["size", "≥ 1"]),
    "--thresholds 9": (RENDER + ["--class", "1", "--thresholds", "9"], ["1..2"]),
    "-o out.xyz": (RENDER + ["--class", "1", "-o", "{tmp}/out.xyz"], ["'.xyz'", ".png"]),
    "-o a folder": (RENDER + ["--class", "1", "-o", "{tmp}"], ["folder"]),
    "--device cuda:99": (RENDER + ["--class", "1", "--device", "cuda:99"], ["not available"]),
    "--device gpu": (RENDER + ["--class", "1", "--device", "gpu"], ["unknown device 'gpu'"]),
    "--model missing.pt": (RENDER + ["--class", "1", "--model", "{tmp}/no.pt"], ["no.pt"]),
    "--model truncated": (
        RENDER + ["--class", "1", "--model", "{ckpt:truncated}"],
        ["truncated"],
    ),  # fmt: skip
    "--model mismatched": (
        RENDER + ["--class", "1", "--model", "{ckpt:mismatched}"],
        ["missing keys", "unexpected keys"],
    ),  # fmt: skip
    "--model naming itself": (
        RENDER + ["--class", "1", "--model", "{ckpt:self}"],
        ["not a checkpoint file"],
    ),  # fmt: skip
    "--model a text file": (
        RENDER + ["--class", "1", "--model", "{tmp}/t.png"],
        ["t.png is not a torch file", "b'no'", "torch.save"],
    ),  # fmt: skip
    "--recipe not JSON": (
        ["render", "--model", "fvis:mnist", "-q", "--recipe", "{tmp}/t.png"],
        ["t.png is not JSON", "line 1"],
    ),  # fmt: skip
    "--recipe with --steps": (
        RENDER + ["--class", "1", "--recipe", "{tmp}/t.png"],
        ["--recipe gives every setting; drop --steps, --class"],
    ),  # fmt: skip
    "--class cat": (RENDER + ["--class", "cat"], ["no class named 'cat'", "0, 1, 2"]),
    "evaluate --images 5000": (
        ["evaluate", "--images", "5000", "-o", "{tmp}/e"],
        ["--images 5000", "1000"],
    ),  # fmt: skip
    "layers --model timm:notamodel": (
        ["layers", "--model", "timm:qqqqqq", "--weights", "none"],
        ["no model 'qqqqqq'", "timm.list_models()"],
    ),  # fmt: skip
    "explain --top 0": (["explain", "--top", "0", "-o", "{tmp}/r.png"], ["top", "at least 1"]),
    "explain --digit 5000": (["explain", "--digit", "5000", "-o", "{tmp}/r.png"], ["0..999"]),
    "explain --target 12": (["explain", "--target", "12", "-o", "{tmp}/r.png"], ["0..9"]),
    "explain --method nope": (
        ["explain", "--method", "nope", "-o", "{tmp}/r.png"],
        ["'nope'", "integrated_gradients"],
    ),  # fmt: skip
    "explain --image not-an-image": (
        ["explain", "--image", "{tmp}/t.png", "-o", "{tmp}/r.png"],
        ["not an image"],
    ),  # fmt: skip
    "explain -o r.txt": (["explain", "-o", "{tmp}/r.txt"], ["'.txt'", ".html"]),
    "explain --groups to html": (["explain", "--groups", "2", "-o", "{tmp}/r.html"], [".png"]),
    "gallery --layers ../x": (
        ["gallery", "--layers", "conv1,../x", "-q", "-o", "{tmp}/g"],
        ["'../x'", "cannot name a gallery folder"],
    ),
    "gallery --dataset missing": (
        ["gallery", "--layers", "conv1", "--dataset", "{tmp}/none", "-q", "-o", "{tmp}/g"],
        ["none does not exist"],
    ),  # fmt: skip
    "gallery --shard 3/2": (
        ["gallery", "--layers", "conv1", "--shard", "3/2", "-q", "-o", "{tmp}/g"],
        ["--shard", "0 <= K < N", "'3/2'"],
    ),
    "layers --model torchvision:resnet_nope": (
        ["layers", "--model", "torchvision:resnet_nope"],
        ["'resnet_nope'", "resnet18"],
    ),
    "layers --weights missing": (
        ["layers", "--weights", "{tmp}/nothing.pt"],
        ["nothing.pt", "missing", "weights=None"],
    ),
    "evaluate --methods nope": (
        ["evaluate", "--methods", "nope", "-o", "{tmp}/e"],
        ["'nope'", "Nearest: none", "gradient"],
    ),
    "evaluate -o e.png": (
        ["evaluate", "-o", "{tmp}/e.png"],
        ["e.png looks like a file name", "give one such as"],
    ),  # fmt: skip
    "attribute -o a file": (
        ["attribute", "--images", "{tmp}", "-o", "{tmp}/t.png"],
        ["t.png is a file", "folder of files"],
    ),  # fmt: skip
    "evaluate --images 0": (["evaluate", "--images", "0", "-o", "{tmp}/e"], ["--images", "≥ 1"]),
    "attribute --images missing": (
        ["attribute", "--images", "{tmp}/none", "-o", "{tmp}/a"],
        ["none is not a folder of images"],
    ),
    "attribute --batch 0": (
        ["attribute", "--images", "{tmp}", "--batch", "0", "-o", "{tmp}/a"],
        ["batch", "≥ 1"],
    ),
}


# Each case runs as its own process, forked from one that has imported fvis and torch (a
# fork server: a fraction of a second a case instead of 2-3 s of start-up). The child
# runs what the installed `fvis` script runs, `sys.exit(main())`, with stdout and stderr
# on files, and ends as the interpreter would (SystemExit's status, or Python's own
# traceback and status 1 for any other exception) but by os._exit, skipping the
# interpreter's slow teardown of torch.
FORK_SERVER = """
import json, os, sys, tempfile
import torch, torchvision, fvis, fvis.cli, fvis.data, fvis.explain, fvis.recipes
fvis.data.mnist("test")  # imported and read once, before the forks (one thread: fork-safe)
from fvis.cli import main
results = {}
for key, args in json.load(sys.stdin).items():
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: the fvis command
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.argv = ["fvis", *args]
        try:
            sys.exit(main())
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if not isinstance(e.code, int | None):
                print(e.code, file=sys.stderr)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    err.seek(0)
    results[key] = [status, err.read().decode()]
json.dump(results, sys.stdout)
"""


def _fill(args, folder: Path) -> list[str]:
    """``{tmp}`` and ``{ckpt:KIND}`` in a case's arguments, made in ``folder``."""
    (folder / "t.png").write_text("not an image")
    ckpts = {}
    return [
        a.replace("{tmp}", str(folder))
        if "{ckpt:" not in a
        else str(ckpts.setdefault(a, _ckpt(folder, a[6:-1])))
        for a in args
    ]


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """``case -> (folder, arguments, exit status, stderr)`` for every case in ``CASES``."""
    folders = {case: tmp_path_factory.mktemp("case") for case in CASES}
    cases = {case: _fill(CASES[case][0], folders[case]) for case in CASES}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", FORK_SERVER], input=json.dumps(cases),
                       capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)
    return {case: (folders[case], cases[case], *results[case]) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_user_error_is_one_line_with_status_2(case, processes):
    folder, args, code, err = processes[case]
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.match(rf"fvis( {args[0]})?: error: ", lines[0]), err  # argparse: "fvis: error"
    for w in CASES[case][1]:
        assert w in lines[0], (w, lines[0])
    made = {p.name for p in folder.iterdir()} - {"t.png", *(f"{k}.pt" for k in CHECKPOINTS)}
    assert not made, f"a refused command wrote {made}"


@pytest.mark.parametrize("args", [RENDER + ["--class", "1", "-o", "{tmp}/out.xyz"],
                                  RENDER + ["--class", "1", "--size", "10000"],
                                  ["explain", "-o", "{tmp}/r.txt"]])  # fmt: skip
def test_refused_before_the_render_starts(args, tmp_path, capsys, no_render):
    code, err = run_main([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and "render started" not in err


def test_debug_shows_the_traceback(capsys):
    code, err = run_main(RENDER + ["--layer", "conv3", "--channel", "99", "--debug"], capsys)
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("fvis render: error:")


def test_ctrl_c_exits_130(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fvis, "render", interrupted)
    code, err = run_main(RENDER + ["--class", "1"], capsys)
    assert code == 130 and err.strip() == "fvis render: interrupted"


def test_a_bug_keeps_its_traceback(capsys, monkeypatch):
    """Only documented user errors become one line; anything else is a bug to report."""

    def bug(*args, **kwargs):
        raise RuntimeError("internal")

    monkeypatch.setattr(fvis, "render", bug)
    with pytest.raises(RuntimeError, match="internal"):
        main(RENDER + ["--class", "1"])


# ---------------------------------------------------------------- as a real process
def _fvis(*args, code="from fvis.cli import main; sys.exit(main())"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {code}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_process_user_error_and_debug(tmp_path):
    bad = ["render", "--layer", "conv3", "--channel", "99", "-q", "-o", str(tmp_path / "o.png")]
    p = _fvis(*bad)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == (
        "fvis render: error: unit 'conv3[99]': channel 99 is out of range (valid: 0..63)"
    )
    p = _fvis(*bad, "--debug")
    assert p.returncode == 2 and "Traceback (most recent call last)" in p.stderr


def test_process_sigint_exits_130(tmp_path):
    """A real SIGINT, delivered while the command runs (the render sends it to itself)."""
    code = (
        "import os, signal, fvis; "
        "fvis.render = lambda *a, **k: os.kill(os.getpid(), signal.SIGINT) or __import__("
        "'time').sleep(30); "
        "from fvis.cli import main; sys.exit(main())"
    )
    p = _fvis("render", "--class", "1", "-q", "-o", str(tmp_path / "o.png"), code=code)
    assert p.returncode == 130 and p.stderr.strip() == "fvis render: interrupted"
    assert signal.SIGINT == 2  # 130 = 128 + SIGINT, what a shell reports for Ctrl-C
