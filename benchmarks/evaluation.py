"""Evaluation against Quantus: pixel flipping (selectivity) at equal settings.

Quantus's ``RegionPerturbation`` removes one ``patch``² region per step (fill: each image's
minimum, Quantus's "black") and runs one forward of the batch per step; fvis's
:func:`fvis.quality.pixel_flipping` with ``steps`` = regions builds every step's input
and scores them in large chunks under ``inference_mode`` on channels-last input.
Both are first checked to record the same curve (Quantus stores ``f(x) − f(x_k)``).
A third row times fvis against one bare forward of all ``(K+1)·B`` perturbed inputs
(channels-last input, ``inference_mode``; scores checked equal): the cost of scoring
every step. fvis is under it where steps change nothing (cells already equal to the
fill: an MNIST digit's black border) or where channels-last kernels speed up a
one-channel network; where neither holds (ResNet-18 on noise) it shows fvis has no
overhead left, and that Quantus / this row bounds any ratio at equal forwards.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

import fvis
from benchmarks.common import paired, row
from fvis.attribution import Saliency
from fvis.quality import pixel_flipping


def cases(smoke: bool):
    """(name, model, x, y, patch, regions)."""
    from fvis.data import mnist

    m = fvis.load_model("fvis:mnist")
    images, labels = mnist("test")
    b = 2 if smoke else 8
    x, y = m.fvis_info.normalize(images[:b]), labels[:b]
    k = 4 if smoke else 49
    out = [(f"fvis:mnist, batch {b}, 4 px patches, {k} regions", m, x, y, 4, k)]
    if not smoke:
        r = fvis.load_model("torchvision:resnet18", weights=None)
        g = torch.Generator().manual_seed(0)
        xr = torch.randn(4, 3, 224, 224, generator=g)
        out.append(("resnet18 (random init) 224 px, batch 4, 16 px patches, 16 regions", r, xr,
                    torch.arange(4), 16, 16))  # fmt: skip
    return out


def compare(model, x, y, patch: int, regions: int, pairs: int, device, aa: bool = False):
    """Paired timing of fvis vs Quantus on one case, after checking their curves agree;
    with ``aa`` also fvis against itself (the noise floor)."""
    import quantus

    model, x, y = model.to(device), x.to(device), y.to(device)
    maps = Saliency(model).attribute(x, y).detach()
    n_cells = (x.shape[-1] // patch) ** 2
    fill = x.flatten(1).min(1).values.view(-1, 1, 1, 1).expand_as(x)

    def ours():
        return pixel_flipping(model, x, maps, y, patch=patch, steps=regions,
                              fraction=regions / n_cells, fill=fill)  # fmt: skip

    metric = quantus.RegionPerturbation(patch_size=patch, order="morf",
                                        regions_evaluation=regions, normalise=False,
                                        disable_warnings=True)  # fmt: skip
    xn, yn, an = x.cpu().numpy(), y.cpu().numpy(), maps.cpu().numpy()

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(metric(model, xn, yn, a_batch=an, softmax=False,
                                     device=str(device)))  # fmt: skip

    rows = _perturbed(x, maps, fill, patch, regions)

    def every_step():
        with torch.inference_mode():
            return model(rows)

    a, q = ours(), theirs()
    drop = (a.scores[:, :1] - a.scores[:, 1:]).numpy()
    err = float(np.abs(drop - q).max() / max(1e-12, np.abs(q).max()))
    check = f"same curves (max rel. diff {err:.1e})" if err < 1e-3 else f"DIFFER {err:.2e}"
    bare = every_step()[torch.arange(len(rows)), y.repeat(regions + 1)].view(regions + 1, -1).T
    same = float((bare.float().cpu() - a.scores).abs().max() / a.scores.abs().max())
    bare_check = f"same scores (max rel. diff {same:.1e})" if same < 1e-3 else f"DIFFER {same:.2e}"
    timing, fl = paired(ours, theirs, pairs, device), paired(ours, every_step, pairs, device)
    return timing, check, (fl, bare_check), paired(ours, ours, pairs, device) if aa else None


def _perturbed(x, maps, fill, patch: int, regions: int) -> torch.Tensor:
    """The ``(regions+1)·B`` inputs pixel flipping scores (MoRF, one ``patch``² cell per
    step), built with its own ranking and cell masks; step-major, channels-last."""
    from fvis.hooks.state import _nhwc
    from fvis.quality.selectivity import _cell_relevance, _pixels, _ranks

    rank = _ranks(_cell_relevance(maps, x, patch), "morf", torch.Generator())
    ph, pw = -(-x.shape[-2] // patch), -(-x.shape[-1] // patch)
    out = []
    for k in range(regions + 1):
        gone = _pixels((rank < k).view(-1, ph, pw), patch, x.shape[-2:])
        out.append(torch.where(gone, fill, x))
    return _nhwc(torch.cat(out))


def run(smoke: bool = False, pairs: int = 5, device="cpu") -> list[dict]:
    rows = []
    for i, (name, model, x, y, patch, regions) in enumerate(cases(smoke)):
        t, check, fl, aa = compare(model, x, y, patch, regions, 1 if smoke else pairs, device,
                                   i == 0)  # fmt: skip
        rows.append(row("evaluation", f"pixel flipping: {name}", "quantus", t, check))
        rows.append(row("evaluation", f"pixel flipping vs one bare forward of all its "
                        f"inputs, {name}", "bare forward", *fl))  # fmt: skip
        if aa is not None:  # the noise floor: fvis's call against itself
            rows.append(row("evaluation", f"A/A: fvis vs itself, {name}", "fvis", aa, "identical"))
    return rows
