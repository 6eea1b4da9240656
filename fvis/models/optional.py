"""Optional libraries (timm, transformers, mlxtend, ray): imported when a feature needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from fvis.errors import MissingExtra

__all__ = ["require"]


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import ``module``, or raise :class:`fvis.errors.MissingExtra` saying which extra
    installs it when ``module`` (or a package above it) is not installed. Any other
    ``ImportError`` (a broken install, a bug) propagates unchanged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        parts = module.split(".")
        if e.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise
        raise MissingExtra(
            f"{needed_by} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'fvis[{extra}]'"
        ) from None
