"""The ``fvis`` command line: ``fvis render``, ``fvis layers``, ``fvis explain``,
``fvis attribute``.

Run ``fvis COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG_RENDER = """examples:
  fvis render --model fvis:mnist --class all -o out/classes.png
  fvis render --model fvis:mnist --layer conv3 --channel 0-7 -o out/conv3.png
  fvis render --model fvis:mnist --layer fc1 --channel 5 --negative -o out/fc1_5_neg.png
  fvis render --model fvis:mnist --class 3 --prior generator:mnist -o out/three.png
  fvis render --model torchvision:googlenet --layer inception4a --channel 97 --size 224
  fvis render --model fvis:mnist --class 8 --start digit.png --radius 0.1 --transforms none
"""


def _int_list(spec: str) -> list[int]:
    """``"3"``, ``"0,2,5"``, ``"0-7"`` or combinations → list of ints."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="fvis:mnist",
        help="model spec: fvis:mnist (bundled), torchvision:NAME, timm:NAME, hf:FOLDER "
        "(a transformers image classifier), or a checkpoint written by fvis.models.save "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT (bundled, or from the local cache; nothing is downloaded), none "
        "(random init, seeded), a file path, or a torchvision enum name (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)",
    )


def _load(args):
    from fvis.models import default_device, load_model

    device = args.device or default_device()
    weights = None if str(args.weights).lower() == "none" else args.weights
    return load_model(args.model, weights=weights, device=device), device


def _objectives(args, model):
    """One objective per batch item from the unit options, and the class index of each
    item (``None`` unless ``--class``)."""
    from fvis import objectives as O
    from fvis.models import info

    if args.class_ is not None:
        if args.layer:
            raise SystemExit("fvis render: give either --class or --layer, not both")
        meta = info(model)
        if args.class_ == "all":
            if not meta.labels:
                raise SystemExit("fvis render: --class all needs a model with labels")
            labels = list(range(len(meta.labels)))
        else:
            labels = [
                int(c) if c.strip().lstrip("-").isdigit() else c.strip()
                for c in args.class_.split(",")
            ]
            labels = [meta.label_index(c) for c in labels]
        unit = O.class_log_prob if args.log_prob else O.class_logit
        units = [unit(k) for k in labels]
        classes = labels
    elif args.layer:
        classes = None
        if args.deepdream:
            units = [O.layer(args.layer)]
        else:
            if args.channel is None:
                raise SystemExit("fvis render: --layer needs --channel (or --deepdream)")
            make = (
                (lambda k: O.neuron(args.layer, k, args.x, args.y))
                if args.neuron
                else (lambda k: O.channel(args.layer, k))
            )
            units = [make(k) for k in _int_list(args.channel)]
    else:
        raise SystemExit(
            "fvis render: say what to visualize: --class K or --layer NAME "
            "--channel K (see fvis render --help)"
        )
    if args.negative:
        units = [-u for u in units]
    if args.batch > 1:
        classes = classes and classes * args.batch
        if len(units) != 1:
            raise SystemExit(
                "fvis render: --batch repeats one unit; it cannot be combined "
                "with several channels or classes"
            )
        units = units * args.batch
    return units, classes


def _penalties(args, objective):
    from fvis import objectives as O

    for weight, pen in (
        (args.tv, O.total_variation()),
        (args.l1, O.l1(constant=0.5)),
        (args.frequency, O.frequency()),
        (args.blur, O.blur()),
    ):
        if weight:
            objective = objective - weight * pen
    return objective


def _ball(args, meta, size):
    """The hard ball of ``--start/--radius/--norm``, or None."""
    if args.start is None:
        if args.radius is not None:
            raise SystemExit("fvis render: --radius bounds the distance from --start; give both")
        return None
    if args.radius is None:
        raise SystemExit("fvis render: --start needs --radius (how far the image may move)")
    from fvis.image import load_image
    from fvis.param import Ball

    return Ball(load_image(args.start, size=size, channels=meta.channels), args.radius, args.norm)


def cmd_render(args) -> int:
    import torch

    import fvis
    from fvis import objectives as O
    from fvis.image import grid
    from fvis.io import save_image
    from fvis.models import info
    from fvis.outputs import select
    from fvis.transforms import fit

    model, device = _load(args)
    units, classes = _objectives(args, model)
    objective = O.one_per_item(units)
    if args.diversity:
        layer = args.layer or _last_layer(model)
        objective = objective + args.diversity * O.diversity(layer)
    objective = _penalties(args, objective)
    meta = info(model)
    if args.size:
        meta_size = (args.size, args.size)
    else:
        meta_size = tuple(meta.input_size[1:])
    ball = _ball(args, meta, meta_size)
    param = None
    if args.prior and args.prior != "image":
        if ball:
            raise SystemExit("fvis render: --start works in image space; drop --prior")
        from fvis.codespace import param_for

        param = param_for(args.prior, model, batch=len(units), seed=args.seed)
    else:
        from fvis.param import for_input

        param = (ball.start if ball else for_input)(
            (meta.channels, *meta_size),
            len(units),
            kind=args.param,
            decay_power=args.decay_power,
            seed=args.seed,
        )
    result = fvis.render(
        model,
        objective,
        param,
        transforms=None if args.transforms == "none" else "standard",
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        device=device,
        redirected_relu_steps=args.redirected_relu,
        progress=not args.quiet,
        thresholds=_int_list(args.thresholds) if args.thresholds else (),
        importance=args.importance,
        ball=ball,
    )
    out = Path(args.output)
    scale = args.scale or max(1, 128 // max(result.images.shape[-2:]))
    save_image(result.grid(ncol=args.ncol, scale=scale), out)
    if result.importance is not None:
        from fvis.heatmap import colorize

        maps = colorize(result.importance, "inferno", signed=False, vmax=1.0)
        save_image(
            grid(maps, ncol=args.ncol, scale=scale),
            out.with_name(f"{out.stem}_importance{out.suffix}"),
        )
    for step, snap in sorted(result.snapshots.items()):
        save_image(
            grid(snap, ncol=args.ncol, scale=scale),
            out.with_name(f"{out.stem}_step{step}{out.suffix}"),
        )
    final = result.history[-1]
    probs = None
    if classes is not None:
        with torch.no_grad():
            x = result.images.to(device)
            if meta.fixed_size:  # as render fed it: fitted to the model's one size
                x = fit(x, tuple(meta.input_size[1:]))
            probs = select(model(meta.normalize(x))).softmax(1).cpu()
            if probs.dim() == 4:  # segmentation: the mean probability over the pixels
                probs = probs.mean((2, 3))
    for i, u in enumerate(units):
        line = f"  [{i}] {u.name}: objective {final[i]:.4g}"
        if probs is not None:
            k = classes[i]
            line += f", p(class {meta.labels[k] if meta.labels else k}) = {probs[i, k]:.4f}"
        print(line)
    print(f"saved {out.resolve()}")
    return 0


def _last_layer(model) -> str:
    from fvis.hooks import layers

    names = [li.name for li in layers(model) if li.name not in ("input", "output")]
    return names[-1]


def cmd_layers(args) -> int:
    from fvis.hooks import layers

    model, _ = _load(args)
    size = (model.fvis_info.channels, args.size, args.size) if args.size else None
    rows = layers(model, size)
    width = max(len(r.name) for r in rows)
    print(f"{'layer'.ljust(width)}  {'type'.ljust(18)}  channels  shape")
    for r in rows:
        print(
            f"{r.name.ljust(width)}  {r.type.ljust(18)}  {r.channels:8d}  "
            f"{'×'.join(map(str, r.shape))}"
        )
    return 0


def cmd_explain(args) -> int:
    try:
        from fvis.explain import main as explain_main
    except ImportError:
        print("fvis explain is not available in this build", file=sys.stderr)
        return 2
    return explain_main(args)


def cmd_attribute(args) -> int:
    from fvis.attribute_folder import main as attribute_main

    return attribute_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fvis", description="Feature visualization and attribution for PyTorch models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "render",
        help="synthesize images that maximize units of a model",
        epilog=EPILOG_RENDER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(r)
    unit = r.add_argument_group("what to visualize (one image per unit, all in one batch)")
    unit.add_argument(
        "--class",
        dest="class_",
        metavar="K",
        help="class logit(s): an index, a label name, a comma list, or 'all'",
    )
    unit.add_argument(
        "--log-prob",
        action="store_true",
        help="with --class: maximize log p(class) (log-softmax) instead of the logit",
    )
    unit.add_argument("--layer", help="layer name (see fvis layers); with --channel")
    unit.add_argument(
        "--channel", metavar="K", help="channel(s) of --layer: 5, 0,3,9 or 0-7 (one image each)"
    )
    unit.add_argument(
        "--neuron",
        action="store_true",
        help="maximize one position of the channel (centre unless --x/--y) "
        "instead of its spatial mean",
    )
    unit.add_argument("--x", type=int, default=None, help="neuron column (with --neuron)")
    unit.add_argument("--y", type=int, default=None, help="neuron row (with --neuron)")
    unit.add_argument(
        "--deepdream", action="store_true", help="maximize the whole --layer (mean of squares)"
    )
    unit.add_argument("--negative", action="store_true", help="minimize instead of maximize")
    unit.add_argument(
        "--batch",
        type=int,
        default=1,
        help="render one unit this many times (use with --diversity)",
    )
    unit.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        help="weight of the batch diversity term on --layer (default 0)",
    )
    opt = r.add_argument_group("optimization")
    opt.add_argument("--steps", type=int, default=512, help="optimizer steps (default 512)")
    opt.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default: the parameterization's, 0.05 for fft/pixel, "
        "0.1 for maco, 0.001 for cppn)",
    )
    opt.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    opt.add_argument(
        "--size",
        type=int,
        default=None,
        help="image size in pixels (default: the model's input size)",
    )
    opt.add_argument(
        "--param",
        choices=("fft", "pixel", "maco", "cppn"),  # fvis.param.KINDS (torch-free import)
        default="fft",
        help="image parameterization (default fft: 1/f spectrum, decorrelated colour; maco: "
        "natural-image magnitude, learned phase; cppn: a coordinate network; pixel)",
    )
    opt.add_argument(
        "--decay-power", type=float, default=1.0, help="Fourier spectrum decay 1/f^p (default 1)"
    )
    opt.add_argument(
        "--prior",
        default="image",
        help="'image' (default) or generator:NAME to search a generator's code "
        "space (e.g. generator:mnist)",
    )
    opt.add_argument(
        "--transforms",
        choices=("standard", "none"),
        default="standard",
        help="random transforms each step (default: Lucid's standard recipe)",
    )
    opt.add_argument(
        "--redirected-relu",
        type=int,
        default=16,
        metavar="STEPS",
        help="use the redirected ReLU gradient for the first STEPS steps (default 16; 0 disables)",
    )
    start = r.add_argument_group(
        "start image (adversarial examples, caricatures): the image starts at --start and "
        "is projected after every step onto the ball of --radius around it"
    )
    start.add_argument("--start", metavar="IMAGE", help="image file to start from")
    start.add_argument(
        "--radius", type=float, default=None, help="largest distance from --start, in [0, 1] units"
    )
    start.add_argument(
        "--norm", choices=("linf", "l2"), default="linf", help="distance (default: linf)"
    )
    pen = r.add_argument_group("penalties (weights; 0 disables)")
    pen.add_argument("--tv", type=float, default=0.0, help="total variation")
    pen.add_argument("--l1", type=float, default=0.0, help="L1 distance from grey")
    pen.add_argument("--frequency", type=float, default=0.0, help="high-frequency energy")
    pen.add_argument("--blur", type=float, default=0.0, help="pull towards a blurred copy")
    outg = r.add_argument_group("output")
    outg.add_argument(
        "-o",
        "--output",
        default="fvis_render.png",
        help="output PNG (a grid of all images; default %(default)s)",
    )
    outg.add_argument(
        "--thresholds", default=None, help="also save the images at these steps, e.g. 32,128"
    )
    outg.add_argument(
        "--importance",
        action="store_true",
        help="also save OUT_importance.png: where the objective reacted to the image over "
        "the whole optimization (accumulated |gradient|, MACO's transparency map; inferno)",
    )
    outg.add_argument("--ncol", type=int, default=None, help="images per row in the grid")
    outg.add_argument(
        "--scale",
        type=int,
        default=None,
        help="enlarge each image this many times (default: to ≥128 px)",
    )
    outg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_render)

    lay = sub.add_parser("layers", help="list every addressable layer with its shape")
    _add_model_args(lay)
    lay.add_argument(
        "--size", type=int, default=None, help="input size in pixels (default: the model's)"
    )
    lay.set_defaults(func=cmd_layers)

    ex = sub.add_parser(
        "explain",
        help="attribution report: which channels drove a decision and what they respond to",
    )
    _add_model_args(ex)
    ex.add_argument("--image", help="input image file (default: a held-out MNIST digit)")
    ex.add_argument(
        "--digit",
        type=int,
        default=0,
        help="index of the held-out MNIST digit when no --image (default 0)",
    )
    ex.add_argument("--method", default="integrated_gradients", help="attribution method")
    ex.add_argument("--layer", default=None, help="hidden layer for the building blocks")
    ex.add_argument("--target", default=None, help="class to explain (default: predicted)")
    ex.add_argument("--top", type=int, default=6, help="number of channels shown (default 6)")
    ex.add_argument(
        "--groups",
        type=int,
        default=0,
        help="show K neuron groups (NMF of the layer's activations) instead of single "
        "channels (PNG only)",
    )
    ex.add_argument("--steps", type=int, default=256, help="steps of each channel render")
    ex.add_argument("-o", "--output", default="fvis_explain.png", help="report PNG or HTML")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_explain)

    at = sub.add_parser(
        "attribute",
        help="attribution heatmaps (PNG) and maps (NPZ) for a folder of images, in batches",
        epilog="example:\n  fvis attribute --model timm:resnet18 --images photos/ "
        "--method saliency,gradcam -o out/\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(at)
    at.add_argument("--images", required=True, help="folder of images (png, jpg, ...)")
    at.add_argument(
        "--method",
        default="integrated_gradients",
        help="attribution method(s), comma-separated (default %(default)s)",
    )
    at.add_argument(
        "--target", default=None, help="class index or label for all (default: each predicted)"
    )
    at.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    at.add_argument(
        "-o",
        "--output",
        default="fvis_attributions",
        help="output folder: NAME_METHOD.png and attributions.npz (default %(default)s)",
    )
    at.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    at.set_defaults(func=cmd_attribute)

    ev = sub.add_parser("evaluate", help="rank attribution methods by explanation quality")
    _add_model_args(ev)
    ev.add_argument("--methods", help="comma list of attribution methods (default: seven)")
    ev.add_argument("--images", type=int, default=32, help="number of inputs (default 32)")
    ev.add_argument("--dataset", help="folder of images (default: the bundled held-out digits)")
    ev.add_argument("--patch", type=int, default=4, help="pixel-flipping cell size (default 4)")
    ev.add_argument("--steps", type=int, default=20, help="pixel-flipping steps (default 20)")
    ev.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    ev.add_argument("-o", "--output", default="fvis_evaluation", help="report folder")
    ev.set_defaults(func=lambda args: __import__("fvis.evaluate").evaluate.main(args))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fvis.hooks import LayerError

    try:
        return args.func(args)
    except (LayerError, ValueError, IndexError, FileNotFoundError, ImportError) as e:
        print(f"fvis {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
