"""Build a gallery from a checkout: ``python gallery/build.py --layers conv3 -o site/``.

The builder is part of the package (``fvis gallery``, :mod:`fvis.gallery`), so an
installed fvis runs it without a checkout; this file is the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's fvis first

from fvis.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["gallery", *sys.argv[1:]]))
