"""fvis studio: a unit explorer for any PyTorch model, in the browser.

    streamlit run apps/studio.py        (make demo)

Opens on the bundled MNIST model with its prebuilt gallery: the layer list, a grid of
every unit of a layer, and a page per unit; render any unit live, explain a digit or an
uploaded image, and compare everything rendered in the session.
"""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # `streamlit run` puts it there; streamlit's AppTest does not
    sys.path.insert(0, HERE)

from fvis_studio.app import main  # noqa: E402

main()
