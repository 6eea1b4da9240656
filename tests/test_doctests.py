"""Every docstring example in the library runs (doctest), on the bundled model.

Examples may use ``model`` (``fvis:mnist``), ``x`` (two test digits as the model takes
them, (2, 1, 28, 28)), ``image`` (one digit in [0, 1], (1, 1, 28, 28)), ``torch``,
``fvis`` and ``O`` (:mod:`fvis.objectives`); files they save go to a temporary folder.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import fvis

MODULES = ["fvis"] + sorted(
    m.name
    for m in pkgutil.walk_packages(fvis.__path__, "fvis.")
    # fvis.apps is the studio (a Streamlit script and its package), tested by test_studio
    if not m.name.endswith("__main__") and not m.name.startswith("fvis.apps")
)


def _with_examples() -> list[str]:
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        if any(t.examples for t in doctest.DocTestFinder().find(module)):
            found.append(name)
    return found


@pytest.fixture(scope="module")
def shared(mnist_model, mnist_digits):
    from fvis import objectives

    images = mnist_digits[0][:2]  # (2, 1, 28, 28) in [0, 1]
    return {
        "torch": torch,
        "fvis": fvis,
        "O": objectives,
        "model": mnist_model,
        "x": mnist_model.fvis_info.normalize(images),
        "image": images[:1],
    }


@pytest.mark.parametrize("name", _with_examples())
def test_docstring_examples_run(name, shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module, globs={**vars(module), **shared}):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name} (see above)"
