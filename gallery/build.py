"""Build a gallery from a checkout: ``python gallery/build.py --layers conv3 -o site/``.

The builder is part of the package (``fvis gallery``, :mod:`fvis.gallery`), so an
installed fvis runs it without a checkout; this file is the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's fvis first

from fvis.cli import main as cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """``fvis gallery`` with these arguments (``sys.argv[1:]`` by default)."""
    return cli(["gallery", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())  # fvis.cli.main turns user errors into one line and exit status 2
