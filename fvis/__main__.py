"""``python -m fvis ...``: the same as the installed ``fvis`` command."""

import sys

from fvis.cli import main

sys.exit(main())
