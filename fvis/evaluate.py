"""Which explanation to trust, measured: ``fvis evaluate``.

:func:`evaluate` runs every measure of :mod:`fvis.quality` on several attribution
methods over the same held-out inputs and :meth:`Report.save` writes the report:
``selectivity.png`` (pixel-flipping curves MoRF / LeRF / random with their areas),
``continuity.png`` (continuity against the largest shift), ``randomization.png``
(cascading-randomisation curves), ``report.md`` and ``report.html`` (the ranking table
with the settings) and ``report.json`` (every number). Same seed, same report.

>>> report = evaluate(model, ["saliency", "gradient"], image, steps=4, max_shift=1, samples=2)
>>> report.save("out/evaluation")   # report.md, report.html, report.json and the plots
PosixPath('out/evaluation')
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from fvis import hooks
from fvis.attribution import get as get_method
from fvis.attribution.base import Attribution
from fvis.io import atomic_write_bytes, atomic_write_text, check_output_folder
from fvis.models.metadata import info as model_info
from fvis.quality import (
    ORDERS,
    continuity,
    diversity,
    infidelity,
    max_sensitivity,
    model_randomization,
    pixel_flipping,
    transfer,
    transformation_robustness,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "Report",
    "evaluate",
    "evaluate_visualizations",
    "line_chart",
    "main",
]

DEFAULT_METHODS = (
    "saliency,gradient_x_input,integrated_gradients,smoothgrad,guided_backprop,lrp,gradcam"
)
_CAM = ("cam", "gradcam", "gradcam_plus_plus", "attention_rollout")  # maps on a layer grid

# (key, heading, lower is better)
COLUMNS = [
    ("morf_auc", "MoRF area ↓", True),
    ("gap", "LeRF − MoRF area ↑", False),
    ("continuity", "continuity ↓", True),
    ("randomization", "ρ after randomisation ↓", True),
    ("infidelity", "infidelity ↓", True),
    ("max_sensitivity", "max-sensitivity ↓", True),
]


class _Unit(Attribution):
    """A method's maps scaled to unit L1 norm per item, so map units cancel out."""

    def __init__(self, method: Attribution, options: dict):
        super().__init__(method.model)
        self.method, self.options = method, options

    def attribute(self, inputs, target=None, **options):
        r = self.method.attribute(inputs, target, **self.options, **options)
        return r / r.flatten(1).abs().sum(1).clamp(min=1e-12).view(-1, *[1] * (r.dim() - 1))


@dataclass
class Report:
    """Per method: ``curves[m][order]`` mean pixel-flipping curve (K+1,) of scores relative
    to the intact score, ``continuity[m]`` (max shift → mean C), ``randomization[m]``
    (stage → mean ρ), ``scores[m][column]`` (means over the images) and the ``ranks``."""

    settings: dict
    methods: list[str]
    fractions: list[float]
    curves: dict[str, dict[str, list[float]]]
    continuity: dict[str, dict[int, float]]
    stages: list[str]
    randomization: dict[str, list[float]]
    scores: dict[str, dict[str, float]]
    ranks: dict[str, float] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Methods from best to worst mean rank over the columns (ties: given order)."""
        return sorted(self.methods, key=lambda m: self.ranks[m])

    def markdown(self) -> str:
        head = "| rank | method | " + " | ".join(h for _, h, _ in COLUMNS) + " | mean rank |"
        rows = [head, "|---:|---|" + "---:|" * (len(COLUMNS) + 1)]
        for i, m in enumerate(self.ranking(), 1):
            vals = " | ".join(f"{self.scores[m][k]:.4g}" for k, _, _ in COLUMNS)
            rows.append(f"| {i} | {m} | {vals} | {self.ranks[m]:.2f} |")
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return "\n".join(rows) + f"\n\nSettings: {settings}\n"

    def figures(self) -> dict[str, Image.Image]:
        """The three plots, by file name."""
        colors = _palette(len(self.methods))
        panels = []
        for m in self.methods:
            series = [
                (f"{o} {_area(self.fractions, self.curves[m][o]):.2f}", self.fractions,
                 self.curves[m][o], col)
                for o, col in zip(ORDERS, ((200, 40, 40), (40, 80, 200), (150, 150, 150)))
            ]  # fmt: skip
            panels.append(line_chart(series, m, "fraction removed", "score / f(x)"))
        selectivity = _grid(panels, 4)
        shifts = sorted(next(iter(self.continuity.values())))
        cont = line_chart(
            [(m, shifts, [self.continuity[m][s] for s in shifts], c)
             for m, c in zip(self.methods, colors)],
            "continuity under shifts", "largest shift (px)", "C (unit-L1 maps)", size=(520, 340),
        )  # fmt: skip
        xs = list(range(len(self.stages) + 1))
        rand = line_chart(
            [(m, xs, [1.0] + self.randomization[m], c) for m, c in zip(self.methods, colors)],
            "cascading randomisation: " + " > ".join(["none", *self.stages]),
            "layers randomized (top-down)", "Spearman rho with original", size=(520, 340),
        )  # fmt: skip
        return {"selectivity.png": selectivity, "continuity.png": cont, "randomization.png": rand}

    def html(self, figures: dict[str, Image.Image] | None = None) -> str:
        figures = self.figures() if figures is None else figures
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in COLUMNS)
        rows = []
        for i, m in enumerate(self.ranking(), 1):
            cells = "".join(f"<td>{self.scores[m][k]:.4g}</td>" for k, _, _ in COLUMNS)
            rows.append(f"<tr><td>{i}</td><td>{html.escape(m)}</td>{cells}"
                        f"<td>{self.ranks[m]:.2f}</td></tr>")  # fmt: skip
        imgs = "".join(
            f'<p><img alt="{n}" src="data:image/png;base64,{_b64(im)}"></p>'
            for n, im in figures.items()
        )
        settings = "".join(
            f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>"
            for k, v in self.settings.items()
        )
        return (
            "<!doctype html><meta charset='utf-8'><title>fvis evaluation</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
            f"<h1>Explanation quality: {html.escape(str(self.settings.get('model')))}</h1>"
            f"<table><tr><th>rank</th><th>method</th>{head}<th>mean rank</th></tr>"
            f"{''.join(rows)}</table><h2>Settings</h2><ul>{settings}</ul>{imgs}"
        )

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["continuity"] = {m: {str(s): v for s, v in c.items()} for m, c in self.continuity.items()}
        return json.dumps(d, indent=1, ensure_ascii=False)

    def save(self, folder) -> Path:
        """Write the report files into ``folder`` (created); returns its path."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        figures = self.figures()
        for name, im in figures.items():
            atomic_write_bytes(_png(im), out / name)
        pics = "\n".join(f"![{n}]({n})" for n in figures)
        atomic_write_text(
            f"# Explanation quality\n\n{self.markdown()}\n{pics}\n", out / "report.md"
        )
        atomic_write_text(self.html(figures), out / "report.html")
        atomic_write_text(self.to_json(), out / "report.json")
        return out


def _area(xs, ys) -> float:
    return float(torch.trapezoid(torch.tensor(ys), torch.tensor(xs)))


def evaluate(
    model,
    methods,
    images: torch.Tensor,
    labels=None,
    *,
    patch: int = 4,
    steps: int = 20,
    max_shift: int = 2,
    samples: int = 16,
    seed: int = 0,
    imputation: str = "fill",
    noise: float = 0.01,
    options: dict[str, dict] | None = None,
) -> Report:
    """Evaluate ``methods`` (names of :data:`fvis.attribution.METHODS` or a comma list)
    on ``images`` ((B, C, H, W) in [0, 1]) explaining ``labels`` (``None``: predicted).

    Per method, means over the images of: the MoRF area of the pixel-flipping curve of
    ``f(x_k) / f(x)`` (``patch``, ``steps``, black fill, or with ``imputation="road"``
    ROAD's noisy linear imputation with ``noise``; lower = selective) and the LeRF −
    MoRF gap (higher = the map separates evidence from clutter); :func:`continuity` of
    unit-L1 maps up to ``max_shift`` px; the Spearman ρ of ``|R|`` after randomizing every
    layer (:func:`model_randomization`); :func:`infidelity` (``normalize=True``, so map
    scale cancels) and :func:`max_sensitivity`, ``samples`` perturbations each. Methods
    are ranked per column; the table sorts them by mean rank. ``options`` per method go
    to its ``attribute`` (Grad-CAM family: ``upsample=True`` by default). Random draws
    come from ``seed``.
    """
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError("give at least one attribution method")
    info = model_info(model)
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:  # already normalized: normalizing twice would explain other inputs
        raise ValueError(f"evaluate takes images in [0, 1] and normalizes them itself; these "
                         f"span [{lo:.3g}, {hi:.3g}]: pass them before normalization")  # fmt: skip
    x = info.normalize(images.detach())
    f0, target = _explained(model, x, labels)
    curves, cont, rand, scores = {}, {}, {}, {}
    for name in names:
        curves[name], fractions, cont[name], stages, rand[name], scores[name] = _measure(
            model, name, options, x, target, f0, patch=patch, steps=steps, max_shift=max_shift,
            samples=samples, seed=seed, imputation=imputation, noise=noise,
        )  # fmt: skip
    ranks = _mean_ranks(names, scores)
    removal = "black fill" if imputation == "fill" else f"ROAD imputation, noise={noise}"
    settings = dict(model=info.name or type(model).__name__, images=x.shape[0], patch=patch,
                    steps=steps, removal=removal, max_shift=max_shift, samples=samples,
                    infidelity="normalized, sigma=0.1 of the valid range",
                    max_sensitivity="radius 0.02, unit-L1 maps", seed=seed,
                    threads=torch.get_num_threads())  # fmt: skip
    return Report(settings, names, fractions, curves, cont, stages, rand, scores, ranks)


def _explained(model, x: torch.Tensor, labels):
    """``(f0, target)``: the explained logits ``f(x)`` (B,) of ``labels`` (``None``: the
    predicted classes) and those classes (B,); refused unless every ``f(x) > 0``."""
    with hooks.guard(model), torch.no_grad():  # eval mode, restored after
        out = model(x)
    f0 = (
        out.gather(1, torch.as_tensor(labels).long().view(-1, 1)).squeeze(1)
        if labels is not None
        else out.max(1).values
    )
    target = out.argmax(1) if labels is None else torch.as_tensor(labels).long().view(-1)
    if (f0 <= 0).any():
        bad = (f0 <= 0).nonzero().flatten().tolist()
        which = ", ".join(f"{i} (f = {float(f0[i]):.3g})" for i in bad[:5])
        raise ValueError("pixel-flipping curves are shown relative to f(x): the explained "
                         f"logits must be positive, and input {which}"
                         f"{' …' if len(bad) > 5 else ''} is not; leave out inputs the model "
                         "does not classify")  # fmt: skip
    return f0, target


def _measure(model, name, options, x, target, f0, *, patch, steps, max_shift, samples, seed,
             imputation, noise):  # fmt: skip
    """One method's measures (settings as in :func:`evaluate`): ``(curves, fractions,
    continuity, stages, randomization, scores)`` — the mean pixel-flipping curve per order
    (K+1,) of ``f(x_k) / f(x)`` at ``fractions``, ``{max shift: mean C}``, the mean ρ per
    randomisation stage, and the row of :data:`COLUMNS`."""
    make = get_method(name)
    opts = dict((options or {}).get(name, {"upsample": True} if name in _CAM else {}))
    method = make(model)
    maps = method.attribute(x, target, **opts).detach()
    curves, area = {}, {}
    for order in ORDERS:
        fc = pixel_flipping(model, x, maps, target, patch=patch, steps=steps, order=order,
                            imputation=imputation, noise=noise, generator=seed)  # fmt: skip
        rel = fc.scores / f0[:, None]
        curves[order] = rel.mean(0).tolist()
        area[order] = float(torch.trapezoid(rel, fc.fractions, dim=1).mean())
    unit = _Unit(method, opts)
    cont = {
        s: float(continuity(unit, x, target, max_shift=s).mean()) for s in range(1, max_shift + 1)
    }
    res = model_randomization(model, lambda mod, mk=make, o=opts: _Unit(mk(mod), o), x, target,
                              seed=seed)  # fmt: skip
    rand = res.correlation.mean(0).tolist()
    scores = {
        "morf_auc": area["morf"],
        "gap": area["lerf"] - area["morf"],
        "continuity": cont[max_shift],
        "randomization": rand[-1],
        "infidelity": float(infidelity(model, x, maps if maps.shape == x.shape
                                       else maps.expand_as(x), target, n=samples,
                                       normalize=True, generator=seed).mean()),
        "max_sensitivity": float(max_sensitivity(unit, x, target, n=samples,
                                                 generator=seed).mean()),
    }  # fmt: skip
    return curves, fc.fractions.tolist(), cont, res.stages, rand, scores


def _mean_ranks(names: list[str], scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each method's mean rank over :data:`COLUMNS` (1 = best; ties keep the given order)."""
    ranks = {m: 0.0 for m in names}
    for key, _, lower in COLUMNS:
        order = sorted(names, key=lambda m: scores[m][key] if lower else -scores[m][key])
        for i, m in enumerate(order, 1):
            ranks[m] += i / len(COLUMNS)
    return ranks


def evaluate_visualizations(
    model,
    images: torch.Tensor,
    classes,
    *,
    other=None,
    layer: str | None = None,
    n: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """The feature-visualization measures of :mod:`fvis.quality.visualization` on a batch
    of class visualizations ``images`` ((B, C, H, W) in [0, 1], ``classes`` an int or
    (B,)), as means over the batch (higher is better): ``robustness`` — mean over ``n``
    draws of Lucid's standard transforms of ``f(T(x)) / f(x)``
    (:func:`transformation_robustness`; images with ``f(x) ≤ 0`` left out); ``diversity``
    — ``1 − mean pairwise cosine`` of the Gram matrices at ``layer`` (of the pixels with
    ``layer=None``; needs B ≥ 2, else left out); with a second
    classifier ``other`` (e.g. ``fvis:mnist-mlp``), ``transfer`` — its mean probability of
    the class. Random draws come from ``seed``.
    """
    rob = transformation_robustness(model, classes, images, n=n, generator=seed)
    out = {"robustness": float(rob.nanmean())}
    if images.shape[0] >= 2:
        out["diversity"] = diversity(images, model if layer else None, layer)
    if other is not None:
        out["transfer"] = float(transfer(other, images, classes).mean())
    return out


# ---------------------------------------------------------------- pictures (PIL only)


def _palette(n: int) -> list[tuple[int, int, int]]:
    base = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34)]  # fmt: skip
    return [base[i % len(base)] for i in range(n)]


def line_chart(
    series, title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (300, 220)
) -> Image.Image:
    """A line chart of ``series`` = ``[(label, xs, ys, rgb), ...]`` with axes, ticks at the
    ends of each axis and a legend, drawn with PIL."""
    w, h = size
    font = ImageFont.load_default()
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    left, right, top, bottom = 44, 8, 22, 30
    legend = 12 * len(series)
    xs_all = [v for s in series for v in s[1]]
    ys_all = [v for s in series for v in s[2]]
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = min(ys_all + [0.0]), max(ys_all)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pw, ph = w - left - right, h - top - bottom - legend

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph

    d.text((left, 4), title[: w // 6], fill="black", font=font)
    d.rectangle([left, top, left + pw, top + ph], outline=(120, 120, 120))
    if y0 < 0 < y1:
        d.line([px(x0, 0), px(x1, 0)], fill=(210, 210, 210))
    for v in (y0, y1):
        d.text((2, px(x0, v)[1] - 5), f"{v:.3g}", fill="black", font=font)
    for v in (x0, x1):
        d.text((px(v, y0)[0] - 6, top + ph + 2), f"{v:.3g}", fill="black", font=font)
    d.text((left + pw // 2 - 3 * len(xlabel), top + ph + 2), xlabel, fill="black", font=font)
    d.text((left + 4, top + 2), ylabel, fill=(90, 90, 90), font=font)
    for i, (label, xs, ys, color) in enumerate(series):
        d.line([px(a, b) for a, b in zip(xs, ys)], fill=color, width=2)
        ly = h - legend + 12 * i - 2
        d.line([(left, ly + 6), (left + 16, ly + 6)], fill=color, width=2)
        d.text((left + 20, ly), label, fill="black", font=font)
    return im


def _grid(panels: list[Image.Image], ncol: int) -> Image.Image:
    w, h = panels[0].size
    rows = (len(panels) + ncol - 1) // ncol
    canvas = Image.new("RGB", (w * min(ncol, len(panels)), h * rows), "white")
    for i, p in enumerate(panels):
        canvas.paste(p, ((i % ncol) * w, (i // ncol) * h))
    return canvas


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _b64(im: Image.Image) -> str:
    return base64.b64encode(_png(im)).decode("ascii")


# ---------------------------------------------------------------- command line


def _positive(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the model's logit of each image's label is > 0 (images in [0, 1])."""
    x = model_info(model).normalize(images.to(hooks.model_device(model)))
    with hooks.guard(model), torch.no_grad():
        out = torch.cat([model(c) for c in x.split(256)])
    return out.gather(1, labels.to(out.device).long().view(-1, 1)).squeeze(1).cpu() > 0


def load_inputs(
    model, n: int, dataset: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` evaluation images in [0, 1] and their labels: the first ``n`` bundled held-out
    digits (classes interleaved) whose true-class logit is positive (pixel flipping divides
    by it: digit 402 of 1000 is left out on the bundled CNN) or the first ``n`` image files
    of ``dataset`` (sorted by name, resized to the model's input; labels ``None`` = explain
    the predicted class)."""
    info = model_info(model)
    if n < 1:
        raise ValueError(f"--images must be ≥ 1, not {n}")
    if dataset is None:
        if info.input_size != (1, 28, 28):
            raise ValueError("give --dataset FOLDER for a model that does not take MNIST digits")
        from fvis.data import mnist

        images, labels = mnist("test")
        if n > len(images):
            raise ValueError(f"--images {n}: the bundled held-out digits are {len(images)}; "
                             "ask for fewer or give --dataset FOLDER")  # fmt: skip
        keep = _positive(model, images, labels).nonzero().flatten()[:n]
        if len(keep) < n:
            raise ValueError(f"--images {n}: only {len(keep)} held-out digits have a positive "
                             "true-class logit, which pixel flipping divides by; "
                             "ask for fewer")  # fmt: skip
        return images[keep], labels[keep]
    from fvis.image import image_files, load_image

    files = image_files(dataset)[:n]
    size, ch = tuple(info.input_size[1:]), info.channels
    return torch.cat([load_image(str(p), size=size, channels=ch) for p in files]), None


def main(args) -> int:
    """``fvis evaluate`` (see ``fvis evaluate --help``)."""
    from fvis.models import default_device, load_model

    check_output_folder(args.output, "fvis evaluate")
    weights = None if str(args.weights).lower() == "none" else args.weights
    model = load_model(args.model, weights=weights, device=args.device or default_device())
    images, labels = load_inputs(model, args.images, args.dataset)
    methods = args.methods or DEFAULT_METHODS
    report = evaluate(model, methods, images, labels, patch=args.patch, steps=args.steps,
                      seed=args.seed, imputation=getattr(args, "imputation", "fill"))  # fmt: skip
    path = report.save(args.output)
    print(report.markdown())
    print(f"saved {path.resolve()}/report.html, report.md, report.json and the plots")
    return 0
