"""How much of a network's convolution work one removed patch reaches: the bound on what
incremental inference (recomputing only the changed region, Nakandala et al. 2019) could
save in pixel flipping, where consecutive steps differ by one ``patch``² cell.

    python scripts/incremental_bound.py [--model torchvision:resnet18] [--size 224] [--patch 16]

For every cell of an image, runs the model on the image with that cell set to the
image's minimum (the benchmark's fill) and, for each ``nn.Conv2d``, counts the output
positions (h, w) whose values changed (relative change > 1e-4, so rounding alone does
not count). A conv's share of the work is its multiply-adds
``C_out · C_in / groups · k_h · k_w · H_out · W_out``; the script prints the fraction of
all convolution multiply-adds an exact incremental forward must still do — mean, min and
max over the cells — and so the most it could save (1 / fraction), before the cost of
copying the cached activations it patches.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import fvis  # noqa: E402


def reached_work(model: nn.Module, x: torch.Tensor, patch: int) -> torch.Tensor:
    """(cells,): the fraction of conv multiply-adds whose outputs change when one cell of
    ``x`` (1, C, H, W) is set to ``x.min()``, one entry per cell (row-major)."""
    _, _, h, w = x.shape
    cells = [(i, j) for i in range(0, h, patch) for j in range(0, w, patch)]
    batch = x.repeat(len(cells) + 1, 1, 1, 1)
    for n, (i, j) in enumerate(cells, start=1):
        batch[n, :, i : i + patch, j : j + patch] = x.min()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    with torch.inference_mode():
        outs = fvis.hooks.capture(model, batch, list(convs))
    reached, total = torch.zeros(len(cells)), 0.0
    for name, m in convs.items():
        o = outs[name]
        change = (o[1:] - o[:1]).abs().amax(1) > 1e-4 * o[:1].abs().amax().clamp_min(1e-12)
        macs = m.out_channels * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        reached += change.flatten(1).sum(1).double() * macs
        total += macs * o.shape[-2] * o.shape[-1]
    return reached / total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--patch", type=int, default=16)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    random_init = args.model.startswith(("torchvision:", "timm:"))  # as in the benchmark
    model = fvis.load_model(args.model, **({"weights": None} if random_init else {}))
    x = torch.randn(1, model.fvis_info.input_size[0], args.size, args.size)
    f = reached_work(model, x, args.patch)
    print(f"{args.model}, {args.size} px, {args.patch} px cells ({len(f)}): an exact "
          f"incremental forward still does {f.mean():.1%} of the conv multiply-adds "
          f"(cells: {f.min():.1%}–{f.max():.1%}); at most {1 / f.mean():.2f}× fewer")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
