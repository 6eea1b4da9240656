"""fvis: feature visualization and attribution for PyTorch.

    parameterization → image → transforms → model (hooked) → objective → optimizer step

>>> import fvis
>>> from fvis import objectives as obj
>>> model = fvis.load_model("fvis:mnist")
>>> fvis.layers(model)[1]  # doctest: +NORMALIZE_WHITESPACE
LayerInfo(name='conv1', type='Conv2d', shape=(16, 28, 28), layout='NCHW', features=16,
          grid=(28, 28))
>>> result = fvis.render(model, obj.channel("conv3", 5) - 0.05 * obj.total_variation(),
...                      steps=8, progress=False)
"""

from fvis import codespace, objectives, param, transforms
from fvis.hooks import LayerError, capture, layers
from fvis.models import load_model
from fvis.render import RenderResult, render

__all__ = [
    "LayerError",
    "RenderResult",
    "capture",
    "codespace",
    "layers",
    "load_model",
    "objectives",
    "param",
    "render",
    "transforms",
]
__version__ = "0.1.0"
