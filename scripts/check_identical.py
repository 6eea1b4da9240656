"""Attribution outputs before and after a refactoring: bit for bit.

    python scripts/check_identical.py save DIR       # compute and save every output
    python scripts/check_identical.py compare DIR    # compute again and compare

Every entry of :data:`fvis.attribution.METHODS` (plus the LRP composites, simple Taylor,
the layer methods and ``top_channels``), a short render with the redirected ReLU, a short
code-space search and the canonizers' BatchNorm pairs, on the bundled models and on
torchvision resnet18, vgg16, googlenet and densenet121 (random init with seed 0 and
randomized BatchNorm statistics, batch of 2; 64 px, VGG16 32 px), on one thread. A method
that refuses a model is recorded by its error type and message, which must not change either.
Saved outputs live outside the repository (plain tensors, strings and tuples, read back
weights_only); the script is what is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_attr_sweep import MODELS as SWEEP_MODELS  # noqa: E402  (the sweep's models,
from test_attr_sweep import SWEEP, build  # noqa: E402  methods and BatchNorm randomization)

# the sweep's models but MobileNetV2 (its outputs are covered by the sweep's own checks)
MODELS = {k: v for k, v in SWEEP_MODELS.items() if k != "mobilenet_v2"}


def _attempt(fn):
    try:
        out = fn()
    except Exception as e:  # a refusal is an output too
        return f"{type(e).__name__}: {e}"
    if isinstance(out, tuple):
        return tuple(o.detach().clone() if isinstance(o, torch.Tensor) else o for o in out)
    return out.detach().clone() if isinstance(out, torch.Tensor) else out


def outputs(spec: str, shape) -> dict:
    import fvis
    from fvis import attribution as A

    model = build(spec)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *shape, generator=g)
    res = {}
    for name, make in SWEEP.items():
        kw = {"generator": 0} if name in ("smoothgrad", "smoothgrad_squared", "vargrad") else {}
        res[name] = _attempt(lambda make=make, kw=kw: make(model).attribute(x, **kw))
    res["layer_gxa"] = _attempt(lambda: A.LayerGradientXActivation(model).attribute(x))
    res["layer_ig"] = _attempt(
        lambda: A.LayerIntegratedGradients(model).attribute(x, steps=8, return_delta=True)
    )
    res["top_channels"] = _attempt(lambda: tuple(A.top_channels(model, x, k=4)))
    res["bn_pairs"] = _attempt(lambda: A.canonizers.MergeBatchNorm().pairs(model, x))
    if spec == "fvis:mnist":
        from fvis import codespace
        from fvis import objectives as O

        r = fvis.render(model, O.channel("conv3", 5), steps=6, redirected_relu_steps=3, seed=0)
        res["render"] = r.images.clone()
        c = codespace.maximize(model, O.class_logit(3), generator="mnist", batch=2, steps=6)
        res["codespace"] = c.images.clone()
    return res


def compare(old, new, where="") -> list[str]:
    if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
        if old.shape == new.shape and old.dtype == new.dtype and torch.equal(old, new):
            return []
        diff = (
            (old.double() - new.double()).abs().max().item() if old.shape == new.shape else "shape"
        )
        return [f"{where}: differs (max |Δ| {diff})"]
    if isinstance(old, (tuple, list)) and isinstance(new, (tuple, list)) and len(old) == len(new):
        return [e for i, (a, b) in enumerate(zip(old, new)) for e in compare(a, b, f"{where}[{i}]")]
    if isinstance(old, dict) and isinstance(new, dict):
        errs = [f"{where}.{k}: missing" for k in old.keys() - new.keys()]
        errs += [f"{where}.{k}: new" for k in new.keys() - old.keys()]
        return errs + [
            e for k in old.keys() & new.keys() for e in compare(old[k], new[k], f"{where}.{k}")
        ]
    return [] if old == new else [f"{where}: {old!r} != {new!r}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["save", "compare"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    errors, n = [], 0
    for spec in args.models.split(","):
        path = args.dir / (spec.replace(":", "_") + ".pt")
        res = outputs(spec, MODELS[spec])
        print(f"{spec}: {len(res)} outputs", flush=True)
        n += len(res)
        if args.action == "save":
            args.dir.mkdir(parents=True, exist_ok=True)
            torch.save(res, path)
        else:
            errors += compare(torch.load(path, weights_only=True), res, spec)
    if args.action == "compare":
        print("\n".join(errors) or f"identical: {n} outputs on {args.models}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
