"""Coverage of issue 12's architectures: layers, a short render, every attribution method.

    python scripts/coverage_matrix.py                      # all 18 (minutes on a CPU)
    python scripts/coverage_matrix.py --only timm:resnet18,hf-vit --methods gradient,lrp

Every model is built with random weights (nothing is downloaded; the Hugging Face ones
from small configs). Per architecture it runs ``fvis.layers``, a render of one channel
of a middle layer with the standard recipe (``--steps`` steps), and each method of
:data:`fvis.attribution.METHODS` on one image for the predicted class (segmentation:
class 1 of ``"out"``), then prints one row per architecture. Cells:

* ``ok``: a finite, non-constant map of the input's shape;
* ``refused``: a ``ValueError`` / ``NotImplementedError`` / ``LayerError`` with a message
  (the first words are listed under the table) — acceptable;
* ``=grad``: Guided Backprop or Deconvnet returned exactly the plain gradient (the
  silent failure issue 12 forbids);
* ``FAIL``: a crash of another kind, a wrong shape, NaN/Inf or a constant map;
* ``ok (< 0: ReLU → 0)``: Grad-CAM(++) is 0 everywhere because its map before the ReLU
  is negative everywhere (finite and non-constant with ``relu=False``) — what the method
  defines for a random network with no positive evidence, not a failure of fvis.

The issue asks for ``ok`` or ``refused`` everywhere. Layers are listed with their layout
(NCHW, NHWC, ViT tokens) and the rendered unit is a feature of a middle layer; the CAM
methods read tokens and channels-last maps on their grid (:mod:`fvis.hooks.layouts`).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

import fvis
from fvis import objectives as O
from fvis.attribution import METHODS, get
from fvis.attribution.layer import default_layer
from fvis.figures import at_input_size
from fvis.hooks import LayerError
from fvis.hooks.intercept import UnsupportedOperation

TORCHVISION = [
    "resnet50", "vgg16", "googlenet", "inception_v3", "mobilenet_v3_large", "efficientnet_b0",
    "convnext_tiny", "densenet121", "regnet_y_400mf", "vit_b_16", "swin_t", "maxvit_t",
]  # fmt: skip
TIMM = ["resnet18", "vit_tiny_patch16_224", "convnext_atto"]
ARCHITECTURES = [
    *(f"torchvision:{n}" for n in TORCHVISION),
    *(f"timm:{n}" for n in TIMM),
    "hf-vit",
    "hf-resnet",
    "torchvision:fcn_resnet50",
]
# Short settings, so that a whole row takes seconds to a minute on a CPU.
OPTIONS = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"n": 4},
    "smoothgrad_squared": {"n": 4},
    "vargrad": {"n": 4},
}
REFUSALS = (ValueError, NotImplementedError, LayerError, IndexError, UnsupportedOperation)


def build(name: str):
    """The model for one row (random weights, eval mode; a linear layer initialised to
    zero, as torchvision's ViT head is, gets small random weights so maps are not 0)."""
    torch.manual_seed(0)  # the same random weights on every run (Hugging Face's too)
    model = _build(name)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                torch.nn.init.normal_(m.weight, std=0.02)
    return model


def _build(name: str):
    if name.startswith("hf-"):
        import transformers

        if name == "hf-vit":
            config = transformers.ViTConfig(num_labels=10)  # ViT-B/16 at 224 px
            model = transformers.ViTForImageClassification(config)
        else:
            config = transformers.ResNetConfig(num_labels=10)  # ResNet-50
            model = transformers.ResNetForImageClassification(config)
        return fvis.load_model(model)
    kwargs = {"num_classes": 21} if name.endswith("fcn_resnet50") else {}
    return fvis.load_model(name, weights=None, **kwargs)


def middle_channel(model) -> tuple[str, int]:
    """A layer halfway through the network (by execution order) and a channel of it."""
    rows = [r for r in fvis.layers(model) if r.name not in ("input", "output") and r.shape]
    row = rows[len(rows) // 2]
    return row.name, row.channels // 2


def check_map(attr, x) -> str:
    if not isinstance(attr, torch.Tensor) or attr.shape != x.shape:
        shape = tuple(attr.shape) if isinstance(attr, torch.Tensor) else type(attr).__name__
        return f"FAIL (shape {shape})"
    if not torch.isfinite(attr).all():
        return "FAIL (not finite)"
    if attr.max() == attr.min():
        return "FAIL (constant)"
    return "ok"


def row(name: str, methods: list[str], steps: int, notes: dict) -> dict[str, str]:
    cells: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        model = build(name)
    except Exception as e:  # noqa: BLE001 - a script that reports every failure
        notes[f"{name} load"] = f"{type(e).__name__}: {e}"
        return {"load": "FAIL"}
    meta = model.fvis_info
    try:
        fvis.layers(model)
        cells["layers"] = "ok"
        layer, channel = middle_channel(model)
        result = fvis.render(model, O.channel(layer, channel), steps=steps, progress=False)
        cells["render"] = "ok" if torch.isfinite(result.history).all() else "FAIL (nan)"
    except Exception as e:  # noqa: BLE001
        cells.setdefault("layers", "FAIL")
        cells["render"] = "refused" if isinstance(e, REFUSALS) else "FAIL"
        notes[f"{name} render"] = f"{type(e).__name__}: {str(e)[:160]}"
    torch.manual_seed(0)
    x = meta.normalize(torch.rand(1, *meta.input_size))
    try:  # the CAM family's default layer and how its activation is laid out
        cam_layer = default_layer(model, x)
        cells["cam layer"] = f"{cam_layer} ({fvis.hooks.layout(model, x, cam_layer)})"
    except REFUSALS as e:
        cells["cam layer"] = "refused"
        notes[f"{name} cam layer"] = f"{type(e).__name__}: {str(e)[:160]}"
    target = ("out", 1) if "fcn" in name else None
    plain: list[torch.Tensor] = []  # the plain gradient, computed once when first needed

    def gradient() -> torch.Tensor:
        if not plain:
            plain.append(get("gradient")(model).attribute(x, target))
        return plain[0]

    for method in methods:
        try:
            attribution = get(method)(model)
            kwargs = {**at_input_size(attribution), **OPTIONS.get(method, {})}
            attr = attribution.attribute(x, target, **kwargs)
            if attr.shape[1] == 1 and x.shape[1] != 1:  # CAMs: one map for all channels
                attr = attr.expand_as(x)
            cell = check_map(attr, x)
            if cell == "FAIL (constant)" and method in ("gradcam", "gradcam_plus_plus"):
                signed = attribution.attribute(x, target, relu=False, **kwargs)
                if check_map(signed.expand_as(x), x) == "ok" and signed.max() <= 0:
                    cell = "ok (< 0: ReLU → 0)"  # a true Grad-CAM result: no positive evidence
            if method in ("guided_backprop", "deconvnet") and torch.equal(attr, gradient()):
                cell = "=grad"  # whatever --methods lists: the gradient is computed here
        except REFUSALS as e:
            cell = "refused"
            notes[f"{name} {method}"] = f"{type(e).__name__}: {str(e)[:160]}"
        except Exception as e:  # noqa: BLE001
            cell = "FAIL"
            notes[f"{name} {method}"] = f"{type(e).__name__}: {str(e)[:160]}"
            if "--traceback" in sys.argv:
                traceback.print_exc()
        cells[method] = cell
    cells["seconds"] = f"{time.perf_counter() - t0:.0f}"
    return cells


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated architectures (row names)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    ap.add_argument("--steps", type=int, default=4, help="render steps (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--traceback", action="store_true", help="print crashes in full")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    archs = args.only.split(",") if args.only else ARCHITECTURES
    methods = args.methods.split(",") if args.methods else list(METHODS)
    notes: dict[str, str] = {}
    columns = ["layers", "render", "cam layer", *methods, "seconds"]
    print("| architecture | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    failures = 0
    for arch in archs:
        cells = row(arch, methods, args.steps, notes)
        failures += sum(v.startswith(("FAIL", "=grad")) for v in cells.values())
        print(f"| {arch} | " + " | ".join(cells.get(c, "-") for c in columns) + " |", flush=True)
    if notes:
        print("\nmessages:")
        for key, message in notes.items():
            print(f"- {key}: {message}")
    print(f"\n{failures} cell(s) FAIL or =grad")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
