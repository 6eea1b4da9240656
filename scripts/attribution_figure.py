"""Draw the README's comparison of attribution methods on a few held-out digits.

    python scripts/attribution_figure.py -o docs/attribution.png

Rows: digits; columns: the input, then each method's map for the predicted class
(signed maps: red positive, blue negative; unsigned: inferno), each scaled to its own
99.5th percentile of |R|.
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw, ImageFont

import fvis
from fvis import heatmap
from fvis.attribution import get
from fvis.attribution.base import upsample
from fvis.data import mnist
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
    target = model(x).argmax(1)
    tiles = [heatmap.to_pil(images.expand(-1, 3, -1, -1))]
    for name, _ in COLUMNS:
        r = get(name)(model).attribute(x, target)
        r = r.sum(1, keepdim=True)  # (B, 1, H, W): one map per digit
        if r.shape[-2:] != x.shape[-2:]:
            r = upsample(r, x.shape[-2:])
        tiles.append(heatmap.to_pil(heatmap.colorize(r.detach())))
    s, pad, head = args.size, 4, 28
    font = ImageFont.load_default()
    canvas = Image.new(
        "RGB", (len(tiles) * (s + pad) + pad, head + len(images) * (s + pad)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for c, column in enumerate(tiles):
        title = "input" if c == 0 else COLUMNS[c - 1][1]
        x0 = pad + c * (s + pad)
        words = title.split(" ", 1)
        for k, w in enumerate(words):
            draw.text((x0, 2 + 12 * k), w, fill="black", font=font)
        for r, tile in enumerate(column):
            canvas.paste(tile.resize((s, s), Image.NEAREST), (x0, head + r * (s + pad)))
    save_image(canvas, args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
