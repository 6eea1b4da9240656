"""Draw the README's comparison of attribution methods on a few held-out digits.

    python scripts/attribution_figure.py -o docs/attribution.png

Rows: digits; columns: the input, then each method's map for the predicted class
(signed maps: red positive, blue negative; unsigned: inferno), each scaled to its own
99.5th percentile of |R|.
"""

from __future__ import annotations

import argparse

import torch

import fvis
from fvis.attribution import get
from fvis.data import mnist
from fvis.figures import compare
from fvis.io import save_image

COLUMNS = [
    ("gradient", "gradient"),
    ("saliency", "saliency"),
    ("gradient_x_input", "grad x input"),
    ("integrated_gradients", "integrated grad."),
    ("smoothgrad", "SmoothGrad"),
    ("deconvnet", "Deconvnet"),
    ("guided_backprop", "Guided BP"),
    ("deeplift", "DeepLIFT Rescale"),
    ("deeplift_reveal_cancel", "DeepLIFT RevCancel"),
    ("lrp", "LRP eps/z+"),
    ("deep_taylor", "deep Taylor"),
    ("gradcam", "Grad-CAM"),
    ("gradcam_plus_plus", "Grad-CAM++"),
    ("guided_gradcam", "Guided Grad-CAM"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default="docs/attribution.png")
    ap.add_argument("--digits", default="3,2,1,18", help="indices of held-out digits")
    ap.add_argument("--size", type=int, default=84, help="pixels per tile")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = fvis.load_model("fvis:mnist")
    images = mnist("test")[0][[int(i) for i in args.digits.split(",")]]
    x = model.fvis_info.normalize(images)
    methods = [(title, get(name)(model)) for name, title in COLUMNS]
    fig = compare(model, x, methods)  # each digit's predicted class, every method
    save_image(fig.figure(args.size, over_image=False), args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
