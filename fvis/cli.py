"""The ``fvis`` command line: ``render``, ``layers``, ``explain``, ``attribute``,
``gallery``, ``studio``.

Argument parsing only: each command turns its options into a recipe
(:mod:`fvis.recipes`) and runs it, so a command gives the same picture as the same
recipe from Python, the studio or the gallery. Run ``fvis COMMAND --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG_RENDER = """examples:
  fvis render --model fvis:mnist --unit 'conv3[0-7]' -o out/conv3.png
  fvis render --model fvis:mnist --unit 'class[*]' --tv 0.05 -o out/classes.png
  fvis render --model fvis:mnist --class all -o out/classes.png
  fvis render --model fvis:mnist --layer conv3 --channel 0-7 -o out/conv3.png
  fvis render --model fvis:mnist --layer fc1 --channel 5 --negative -o out/fc1_5_neg.png
  fvis render --model fvis:mnist --class 3 --prior generator:mnist -o out/three.png
  fvis render --model torchvision:googlenet --layer inception4a --channel 97 --size 224
"""


def _int_list(spec: str) -> list[int]:
    """``"32,128"`` → ``[32, 128]`` (``--thresholds``)."""
    try:
        return [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--thresholds takes step numbers such as 32,128, not {spec!r}") from None


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
    from fvis.recipes import load_model

    return load_model(args.model, args.weights, args.device)


def _add_unit_args(p: argparse.ArgumentParser):
    """The options :func:`_unit_specs` reads, as a group of ``p`` (returned)."""
    unit = p.add_argument_group("what to visualize (one image per unit, all in one batch)")
    unit.add_argument(
        "--unit",
        metavar="SPEC",
        nargs="+",
        action="extend",
        help="unit spec(s), space-separated or repeated: conv3[5], conv3[0-7], "
        "conv3[5]@(x,y) (neuron), "
        "class[3], class[*], -conv3[5] (minimized; write --unit=-conv3[5]), conv3{3:1,7:-0.5} "
        "(direction), "
        "deepdream(conv3); layer1.0.relu:1[5] is channel 5 of a module's second call",
    )
    unit.add_argument(
        "--class",
        dest="class_",
        metavar="K",
        help="class logit(s): an index, a label name, a comma list, or 'all'",
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
    for axis, side in (("x", "column"), ("y", "row")):
        unit.add_argument(f"--{axis}", type=int, help=f"neuron {side} (with --neuron)")
    unit.add_argument(
        "--deepdream", action="store_true", help="maximize the whole --layer (mean of squares)"
    )
    unit.add_argument("--negative", action="store_true", help="minimize instead of maximize")
    return unit


def _unit_specs(args) -> list[str]:
    """The unit specs (:mod:`fvis.recipes.units`) the unit options name."""
    given = [args.unit is not None, args.class_ is not None, args.layer is not None]
    if sum(given) > 1:
        raise ValueError("give one of --unit, --class or --layer")
    sign = "-" if args.negative else ""
    if args.unit is not None:
        if args.channel is not None or args.neuron or args.deepdream:
            raise ValueError("--unit says everything; drop --channel/--neuron/--deepdream")
        specs = " ".join(args.unit).split()
        return [sign + s for s in specs] if sign else specs
    if args.class_ is not None:
        classes = "*" if args.class_ == "all" else args.class_
        return [f"{sign}class[{classes}]"]
    if args.layer is None:
        raise ValueError(
            "say what to visualize: --unit 'conv3[5]', --class K or --layer NAME "
            "--channel K (see fvis render --help)"
        )
    if args.deepdream:
        return [f"{sign}deepdream({args.layer})"]
    if args.channel is None:
        raise ValueError("--layer needs --channel (or --deepdream)")
    where = ""
    if args.neuron:
        if (args.x is None) != (args.y is None):
            raise ValueError("give both --x and --y (or neither, for the centre)")
        where = "@center" if args.x is None else f"@({args.x},{args.y})"
    elif args.x is not None or args.y is not None:
        raise ValueError("--x/--y place a --neuron; add --neuron")
    return [f"{sign}{args.layer}[{args.channel}]{where}"]


def render_recipe(args):
    """The :class:`fvis.recipes.RenderRecipe` the ``fvis render`` options describe."""
    from fvis.errors import check_int
    from fvis.recipes import RenderRecipe

    if args.recipe:
        from fvis.recipes.options import RENDER, flag

        default, given = RenderRecipe(), []
        for k in RENDER:  # argparse's dest: the flag with "_" for "-"
            if getattr(args, flag(RENDER, k)[2:].replace("-", "_")) != getattr(default, k):
                given.append(flag(RENDER, k))
        given += [f"--{k.rstrip('_')}" for k in ("unit", "class_", "layer", "channel")
                  if getattr(args, k) is not None]  # fmt: skip
        if given:  # they would be ignored: the recipe holds every setting
            raise ValueError(f"--recipe gives every setting; drop {', '.join(given)} or edit "
                             f"the recipe file")  # fmt: skip
        return RenderRecipe.from_json(Path(args.recipe).read_text(), source=args.recipe)
    check_int("--batch", args.batch)  # the recipe's repeat: named as the user typed it
    return RenderRecipe(
        units=tuple(_unit_specs(args)),
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        param=args.param,
        decay_power=args.decay_power,
        size=args.size,
        prior=args.prior,
        transforms=args.transforms,
        redirected_relu=args.redirected_relu,
        tv=args.tv,
        l1=args.l1,
        frequency=args.frequency,
        blur=args.blur,
        diversity=args.diversity,
        diversity_layer=args.layer if args.diversity else None,
        repeat=args.batch,
    )


def cmd_render(args) -> int:

    from fvis.io import atomic_write_text, check_output
    from fvis.models import info as model_info
    from fvis.outputs import probabilities
    from fvis.recipes import save_render
    from fvis.transforms import model_input

    check_output(args.output)  # before any work
    recipe = render_recipe(args)  # its settings checked before the model loads
    model = _load(args)
    units = recipe.unit_list(model)
    thresholds = _int_list(args.thresholds) if args.thresholds else ()
    result = recipe.run(
        model, progress=not args.quiet, thresholds=thresholds, importance=args.importance
    )
    out = save_render(result, args.output, ncol=args.ncol, scale=args.scale)
    if args.save_recipe:
        atomic_write_text(recipe.to_json(), args.save_recipe)
    info = model_info(model)
    final = result.history[-1]
    probs = None
    if any(u.kind == "class" for u in units):
        from fvis.hooks import model_device

        # as render fed it (fitted to a fixed-size model); segmentation: the mean over pixels
        x = model_input(model, result.images.to(model_device(model)))
        probs = probabilities(model, x).cpu()
    values = recipe.unit_values(model, result.images).cpu()
    extra = recipe.tv or recipe.l1 or recipe.frequency or recipe.blur or recipe.diversity
    for i, u in enumerate(units):
        line = f"  [{i}] {u} = {values[i]:.4g}"
        if extra:  # what was maximized: on a transformed image, penalties subtracted
            line += f" (optimized objective with penalties {final[i]:.4g})"
        if probs is not None and u.kind == "class":
            k = info.label_index(u.index)
            line += f", p(class {info.labels[k] if info.labels else k}) = {probs[i, k]:.4f}"
        print(line)
    print(f"recipe {recipe.hash()[:12]}; saved {out.resolve()}")
    return 0


def cmd_layers(args) -> int:
    from fvis.hooks import layers

    model = _load(args)
    size = (model.fvis_info.channels, args.size, args.size) if args.size else None
    rows = layers(model, size)
    width = max(len(r.name) for r in rows)
    print(f"{'layer'.ljust(width)}  {'type'.ljust(18)}  features  grid     layout           shape")
    for r in rows:
        grid = "×".join(map(str, r.grid)) or "-"
        print(
            f"{r.name.ljust(width)}  {r.type.ljust(18)}  {r.features:8d}  {grid:7s}  "
            f"{r.layout_name:15s}  {'×'.join(map(str, r.shape))}"
        )
    return 0


def explain_recipe(args):
    """The :class:`fvis.recipes.ExplainRecipe` the ``fvis explain`` options describe."""
    from fvis.recipes import ExplainRecipe

    target = args.target
    if target is not None and target.strip().isdigit():
        target = int(target)
    return ExplainRecipe(
        method=args.method,
        layer=args.layer,
        target=target,
        top=args.top,
        groups=args.groups,
        steps=args.steps,
        tv=args.tv,
        seed=args.seed,
    )


def cmd_explain(args) -> int:
    from fvis.explain import REPORT_FORMATS
    from fvis.io import check_output
    from fvis.recipes import input_image

    check_output(args.output, REPORT_FORMATS)  # before any work
    recipe = explain_recipe(args)
    if recipe.groups and Path(args.output).suffix.lower() in (".html", ".htm"):
        raise ValueError("--groups writes a picture: give -o a .png (or .jpg/.webp) path")
    model = _load(args)
    image = input_image(model, args.image, args.digit)
    report = recipe.run(model, image, progress=not args.quiet)
    path = report.save(args.output)
    if recipe.groups:
        for g, sc in enumerate(report.scores):
            top = report.directions[g].topk(min(3, report.directions.shape[1])).indices.tolist()
            print(f"  group {g}: share {sc:+.4g}, strongest channels {top}")
        print(f"class {report.label}; {report.layer}'s activation A ≈ S·D with "
              f"{recipe.groups} groups (non-negative factorization, ‖A − SD‖ / ‖A‖ = "
              f"{report.error:.1%}: more groups fit closer); saved {path.resolve()}")  # fmt: skip
        return 0
    for c, s in zip(report.channels, report.channel_scores):
        print(f"  {report.layer}[{c}]  attribution {s:+.4g}")
    print(f"class {report.label} (p = {report.probability:.4f}); saved {path.resolve()}")
    return 0


def cmd_attribute(args) -> int:
    from fvis.attribute_folder import main as attribute_main

    return attribute_main(args)


def cmd_gallery(args) -> int:
    from fvis.gallery import run

    return run(args)


def studio_app() -> Path:
    """The studio's Streamlit app file, the one place its path is known. ``apps/`` ships
    inside the package as ``fvis/apps`` (a link to the checkout's ``apps/``), so this is
    the same file in a checkout, an editable install and an installed wheel."""
    here = Path(__file__).resolve().parent
    for path in (here / "apps" / "studio.py", here.parent / "apps" / "studio.py"):
        if path.is_file():
            return path
    raise FileNotFoundError("the studio app (fvis/apps/studio.py) is missing; reinstall fvis")


def cmd_studio(args) -> int:
    import subprocess

    # fvis works offline: no usage statistics leave the machine
    cmd = [sys.executable, "-m", "streamlit", "run", str(studio_app()),
           "--browser.gatherUsageStats", "false"]  # fmt: skip
    if args.port:
        cmd += ["--server.port", str(args.port)]
    if args.headless:
        cmd += ["--server.headless", "true"]
    return subprocess.call(cmd)


class OneLineErrors(argparse.ArgumentParser):
    """argparse whose usage errors are one line, as fvis's other user errors:
    ``PROG: error: MESSAGE (see PROG --help)``, exit status 2. Subcommands inherit it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``fvis`` command: one subcommand per front end, each built below."""
    parser = OneLineErrors(
        prog="fvis", description="Feature visualization and attribution for PyTorch models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_render_parser, _layers_parser, _explain_parser, _attribute_parser,
                _evaluate_parser, _gallery_parser, _studio_parser):  # fmt: skip
        add(sub)
    return parser


def _render_parser(sub) -> None:
    from fvis.recipes import RenderRecipe
    from fvis.recipes.options import RENDER, add_options

    D = RenderRecipe()
    r = sub.add_parser(
        "render",
        help="synthesize images that maximize units of a model",
        epilog=EPILOG_RENDER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(r)
    unit = _add_unit_args(r)
    add_options(unit, D, RENDER, ("repeat", "diversity"))
    opt = r.add_argument_group("optimization")
    opt.add_argument(
        "--recipe",
        metavar="JSON",
        help="render this saved recipe (the unit and optimization options are then ignored)",
    )
    settings = ("steps", "lr", "seed", "size", "param", "decay_power", "prior", "transforms")
    add_options(opt, D, RENDER, (*settings, "redirected_relu"))
    pen = r.add_argument_group("penalties (weights; 0 disables)")
    add_options(pen, D, RENDER, ("tv", "l1", "frequency", "blur"))
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
    outg.add_argument("--save-recipe", metavar="JSON", help="also save the recipe as JSON")
    outg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_render)


def _layers_parser(sub) -> None:
    lay = sub.add_parser("layers", help="list every addressable layer with its shape")
    _add_model_args(lay)
    lay.add_argument(
        "--size", type=int, default=None, help="input size in pixels (default: the model's)"
    )
    lay.set_defaults(func=cmd_layers)


def _explain_parser(sub) -> None:
    from fvis.recipes import ExplainRecipe
    from fvis.recipes.options import EXPLAIN, add_options

    E = ExplainRecipe()
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
    add_options(ex, E, EXPLAIN, ("method",))
    ex.add_argument("--layer", default=None, help="hidden layer for the building blocks")
    ex.add_argument("--target", default=None, help="class to explain (default: predicted)")
    add_options(ex, E, EXPLAIN, ("top", "groups", "steps", "tv", "seed"))
    ex.add_argument("-o", "--output", default="fvis_explain.png", help="report PNG or HTML")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_explain)


def _attribute_parser(sub) -> None:
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


def _evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="rank attribution methods by explanation quality")
    _add_model_args(ev)
    ev.add_argument("--methods", help="comma list of attribution methods (default: seven)")
    ev.add_argument("--images", type=int, default=32, help="number of inputs (default 32)")
    ev.add_argument("--dataset", help="folder of images (default: the bundled held-out digits)")
    ev.add_argument("--patch", type=int, default=4, help="pixel-flipping cell size (default 4)")
    ev.add_argument("--steps", type=int, default=20, help="pixel-flipping steps (default 20)")
    ev.add_argument("--imputation", choices=("fill", "road"), default="fill",
                    help="removed cells: black (default) or ROAD's noisy imputation")  # fmt: skip
    ev.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    ev.add_argument("-o", "--output", default="fvis_evaluation", help="report folder")
    ev.set_defaults(func=lambda args: __import__("fvis.evaluate").evaluate.main(args))


def _gallery_parser(sub) -> None:
    from fvis.gallery.options import add_arguments as gallery_arguments

    g = sub.add_parser(
        "gallery", help="every unit of chosen layers as a static site (resumable; --ray)"
    )
    gallery_arguments(g)
    g.set_defaults(func=cmd_gallery)


def _studio_parser(sub) -> None:
    st = sub.add_parser("studio", help="open the studio (a Streamlit app) in the browser")
    st.add_argument("--port", type=int, default=None, help="server port (default streamlit's)")
    st.add_argument("--headless", action="store_true", help="do not open a browser")
    st.set_defaults(func=cmd_studio)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (:func:`fvis.errors.user_errors`) prints one line
    and exits with status 2, ``--debug`` (anywhere) adds the traceback; Ctrl-C gives 130."""
    from fvis.errors import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand, which names its own --help
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return run_cli(f"fvis {args.command}", lambda: args.func(args), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
