"""Draw the README's comparison of image parameterizations on the bundled model.

    python scripts/param_figure.py -o docs/parameterizations.png

Rows: ``fft`` (Lucid's 1/f Fourier), ``pixel``, ``maco`` (natural-image magnitude,
learned phase), ``cppn`` and the same CPPNs sampled at 4× the resolution they were
optimized at. Columns: the ten class logits, rendered in one batch per row with the
demo's recipe (standard transforms, total variation 0.05, 512 steps, each
parameterization's own learning rate). Prints p(class) per row.
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

import fvis
from fvis import objectives as O
from fvis.image import grid
from fvis.io import save_image
from fvis.param import image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default="docs/parameterizations.png")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--scale", type=int, default=4, help="pixels per model pixel in the figure")
    args = ap.parse_args()
    model = fvis.load_model("fvis:mnist")
    objective = O.one_per_item([O.class_logit(k) for k in range(10)]) - 0.05 * O.total_variation()
    rows = []
    for kind in ("fft", "pixel", "maco", "cppn"):
        param = image(28, channels=1, batch=10, kind=kind, seed=0)
        result = fvis.render(model, objective, param, steps=args.steps, progress=False)
        with torch.no_grad():
            p = model(model.fvis_info.normalize(result.images)).softmax(1).diagonal()
        print(f"{kind:6s} p(class): min {p.min():.4f}, mean {p.mean():.4f}")
        rows.append((kind, grid(result.images, ncol=10, scale=args.scale)))
        if kind == "cppn":
            with torch.no_grad():
                big = param(28 * args.scale).cpu()
            rows.append((f"cppn {28 * args.scale} px", grid(big, ncol=10, pad=2 * args.scale)))
    label_w = 110
    width = label_w + max(g.width for _, g in rows)
    canvas = Image.new("RGB", (width, sum(g.height for _, g in rows)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for name, g in rows:
        canvas.paste(g, (label_w, y))
        draw.text((6, y + g.height // 2 - 6), name, fill="black")
        y += g.height
    save_image(canvas, args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
