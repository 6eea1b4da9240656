"""Optional libraries (timm, transformers): imported when a spec needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import ``module``, or raise ``ImportError`` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{needed_by} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'fvis[{extra}]'"
        ) from None
