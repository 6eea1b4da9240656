"""The errors fvis raises for a caller's mistake, and the one-line form the front ends print.

A user error is one of :func:`user_errors`; its message says what was wrong and what to
do. Everything else is a bug in fvis (or in the model) and keeps its traceback.

* ``ValueError`` — a value out of its valid range (the message names the range), and
  :class:`NonFiniteError`, its subclass for NaN or infinity in a setting, an input, or
  an objective during optimization;
* ``TypeError`` — a value of the wrong type or dtype;
* ``IndexError`` — a unit, class or item index out of range;
* :class:`fvis.hooks.LayerError` (a ``KeyError``) — a layer name that does not address
  one activation;
* :class:`fvis.hooks.UnsupportedOperation` (a ``RuntimeError``) — an operation
  a method has no rule for;
* ``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError`` and
  ``NotADirectoryError`` — a missing input or an unusable output path;
* :class:`MissingExtra` (an ``ImportError``) — an optional package a feature needs is
  not installed (the message names the extra). Any other ``ImportError`` is a bug and
  keeps its traceback.

:func:`run_cli` turns them into ``PROG: error: MESSAGE`` and exit status 2 (the
traceback with ``debug``), and Ctrl-C into status 130.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import traceback
from collections.abc import Callable

__all__ = [
    "MissingExtra", "NonFiniteError", "check_finite", "check_finite_tensor", "check_int",
    "one_line", "run_cli", "user_errors",
]  # fmt: skip


class NonFiniteError(ValueError):
    """A NaN or infinity where fvis needs a finite number."""


class MissingExtra(ImportError):
    """An optional package that a feature needs is not installed; the message says which
    extra installs it (``pip install 'fvis[EXTRA]'``)."""


@functools.cache
def user_errors() -> tuple[type[BaseException], ...]:
    """The documented user-error types (module docstring), for ``except``."""
    from fvis.hooks import LayerError, UnsupportedOperation

    return (
        ValueError,
        TypeError,
        IndexError,
        LayerError,
        UnsupportedOperation,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
        MissingExtra,
    )


def check_finite(name: str, value, *, positive: bool = False, minimum=None) -> float:
    """``value`` as a float: :class:`NonFiniteError` for NaN or ±inf, ``ValueError`` when
    ``positive`` and ``value ≤ 0`` or when below ``minimum``, ``TypeError`` for a non-number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise NonFiniteError(f"{name} must be a finite number, not {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, not {v:g}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be ≥ {minimum:g}, not {v:g}")
    return v


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``: ``TypeError`` for a non-integer (``2.5``, ``True``),
    ``ValueError`` below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, not {value}")
    return int(value)


def check_finite_tensor(name: str, t):
    """``t`` if every element is finite, else :class:`NonFiniteError`."""
    import torch

    if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        raise NonFiniteError(f"{name} contains NaN or infinite values")
    return t


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (its first line, or its type if empty)."""
    text = str(error).strip()
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(error).__name__


def run_cli(prog: str, body: Callable[[], int], *, debug: bool = False) -> int:
    """``body()``'s exit status; a user error prints ``PROG: error: MESSAGE`` (one line,
    after the traceback when ``debug``) and gives 2; Ctrl-C prints ``PROG: interrupted``
    and gives 130 (128 + SIGINT, as a shell reports it)."""
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # argparse-style refusals raise SystemExit("message")
        if not isinstance(e.code, str):
            raise
        print(e.code if e.code.startswith(prog) else f"{prog}: error: {e.code}", file=sys.stderr)
        return 2
    except user_errors() as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
