"""Fixes from the hardening review, each pinned: seeded random inits, refused option keys
and targets, which ImportErrors are user errors, a model that fails at its own size, and
a server whose stderr nobody reads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import fvis
from fvis import objectives as O
from fvis.attribution.base import Target
from fvis.cli import main
from fvis.errors import MissingExtra, user_errors
from fvis.figures import compare
from fvis.models.hf_models import _fixed
from fvis.models.optional import require

ROOT = Path(__file__).resolve().parents[1]


def _checksum(model: nn.Module) -> float:
    return sum(float(p.double().sum()) for p in model.parameters())


def test_bundled_random_init_is_the_same_model_whatever_the_global_seed():
    torch.manual_seed(1)
    a = fvis.load_model("fvis:mnist", weights=None)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = fvis.load_model("fvis:mnist", weights=None)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator untouched
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    trained = fvis.load_model("fvis:mnist")
    assert not torch.equal(a.conv1.weight, trained.conv1.weight)


def test_bundled_random_init_is_the_same_in_another_process():
    code = (
        "import fvis; m = fvis.load_model('fvis:mnist', weights=None); "
        "print(repr(sum(float(p.double().sum()) for p in m.parameters())))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)  # fmt: skip
    assert float(out.stdout) == _checksum(fvis.load_model("fvis:mnist", weights=None))


def test_compare_refuses_options_for_a_method_it_does_not_run(mnist_model):
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ValueError, match=r"'integrated_gradient'.*valid keys: saliency, gradcam"):
        compare(mnist_model, x, ["saliency", "gradcam"], options={"integrated_gradient": {}})
    fig = compare(mnist_model, x, ["saliency", "gradcam"], options={"gradcam": {"layer": "relu2"}})
    assert list(fig.maps) == ["saliency", "gradcam"]


def test_an_output_key_with_an_objective_is_refused_not_dropped(mnist_model):
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(TypeError, match=r"\('aux', \.\.\.\) names an output entry"):
        Target(mnist_model, x, ("aux", O.class_logit(1)))
    assert Target(mnist_model, x, ("aux", 3)).key == "aux"  # classes of entry "aux": kept


# ---------------------------------------------------------------- which ImportError is a user error
def test_a_missing_optional_package_is_a_missing_extra():
    with pytest.raises(MissingExtra, match=r"pip install 'fvis\[timm\]'"):
        require("fvis_no_such_package.sub", "timm", "timm:x")
    assert issubclass(MissingExtra, ImportError) and MissingExtra in user_errors()
    assert ImportError not in user_errors() and ModuleNotFoundError not in user_errors()


def test_a_broken_package_is_not_reported_as_missing(tmp_path, monkeypatch):
    (tmp_path / "broken_pkg_xyz.py").write_text("import fvis_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("broken_pkg_xyz", "timm", "a feature")
    assert not isinstance(info.value, MissingExtra)


@pytest.mark.parametrize(
    "error, user",
    [(MissingExtra("timm:x needs the optional package 'timm'"), True),
     (ImportError("cannot import name 'render' from 'fvis.render'"), False),
     (ModuleNotFoundError("No module named 'fvis.attribution.nope'"), False)],
    ids=["missing extra", "import bug", "missing fvis module"],
)  # fmt: skip
def test_cli_one_line_only_for_a_missing_extra(error, user, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(fvis, "render", fail)
    args = ["render", "--class", "1", "--steps", "1", "-q", "-o", "/tmp/fvis-never.png"]
    if user:
        assert main(args) == 2
        assert capsys.readouterr().err.strip() == f"fvis render: error: {error}"
    else:
        with pytest.raises(type(error)):  # a bug in fvis keeps its traceback
            main(args)


# ---------------------------------------------------------------- hf models: fixed input size
class _Sized(nn.Module):
    """Takes only ``size`` (as ViT), any size (``None``), or nothing (``broken``)."""

    def __init__(self, size=None, broken=False):
        super().__init__()
        self.size, self.broken, self.w = size, broken, nn.Parameter(torch.ones(1))

    def forward(self, x):
        if self.broken:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"Input image size {tuple(x.shape[-2:])} doesn't match model")
        return x.mean((1, 2, 3)) * self.w


def test_fixed_size_probe_reraises_a_model_that_fails_at_its_own_size():
    assert _fixed(_Sized((8, 8)), (3, 8, 8)) is True
    assert _fixed(_Sized(None), (3, 8, 8)) is False
    model = _Sized(broken=True).train()
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        _fixed(model, (3, 8, 8))
    assert model.training  # the mode restored, also on error


# ---------------------------------------------------------------- the studio's server helper
def test_server_that_fails_after_much_stderr_reports_it_at_once():
    """200 KiB on stderr overflow a pipe nobody reads (the child blocks and the helper
    waits for its timeout); a file takes it, and the error shows its tail."""
    sys.path.insert(0, str(ROOT / "apps"))
    try:
        from fvis_studio.serve import free_port, server
    finally:
        sys.path.remove(str(ROOT / "apps"))
    code = "import sys; sys.stderr.write('x' * 200_000 + 'the real error'); sys.exit(1)"
    start = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="did not start: x+the real error$"),
        server([sys.executable, "-c", code], f"http://127.0.0.1:{free_port()}", "/", timeout=30),
    ):
        pass
    assert time.monotonic() - start < 15


def test_predicted_mask_runs_a_training_mode_model_in_eval_mode():
    from fvis.models.segmentation import predicted_mask

    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5),
                        nn.Conv2d(4, 3, 1))  # fmt: skip
    seg[1].running_var.fill_(4.0)
    x = torch.randn(2, 1, 8, 8)
    want = predicted_mask(seg.eval(), x, 1)
    stats = {k: v.clone() for k, v in seg.state_dict().items()}
    assert torch.equal(predicted_mask(seg.train(), x, 1), want)
    assert all(torch.equal(v, seg.state_dict()[k]) for k, v in stats.items()) and seg.training
