"""The package layout: visualization does not depend on attribution, and the generator
priors' import path is their folder (top-level ``generators/``, linked as ``fvis/generators``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(out.stdout.split())


def test_import_fvis_does_not_import_attribution():
    loaded = _modules_after("import fvis; fvis.render; fvis.codespace.maximize")
    assert "fvis.render" in loaded and "fvis.hooks" in loaded
    assert not [m for m in loaded if m.startswith("fvis.attribution")]


def test_generators_import_path_is_their_folder_and_scripts_stay_unimported():
    loaded = _modules_after("import fvis.generators as g; g.load('mnist'); import fvis.codespace")
    import fvis.generators

    assert Path(fvis.generators.__file__).parent == ROOT / "fvis" / "generators"
    # the design card's top-level folder, linked into the package as apps/ is
    assert (ROOT / "fvis" / "generators").resolve() == ROOT / "generators"
    assert (ROOT / "fvis" / "apps").resolve() == ROOT / "apps"
    assert "fvis.generators.mnist_gan" in loaded
    assert "fvis.generators.train_mnist_gan" not in loaded
    assert "fvis.generators.fit_prior" not in loaded


_HOOKING = re.compile(
    r"register_(module_)?(forward|forward_pre|full_backward|full_backward_pre|backward)_hook"
    r"|\.register_hook\(|TorchFunctionMode|__torch_function__"
)


def test_only_the_hook_layer_touches_module_internals():
    """Hook registration and TorchFunctionMode appear only in fvis/hooks/ (in the library
    and the front ends built on it)."""
    offenders = []
    for folder in ("fvis", "apps", "gallery", "generators"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if (ROOT / "fvis" / "hooks") in path.parents:
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if _HOOKING.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []
