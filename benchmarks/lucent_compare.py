"""Rendering against Lucent (torch-lucent): a mid-layer channel, and a whole 64-channel
layer — fvis renders the 64 channels as one batch, Lucent one channel at a time.

Equal settings: googlenet (random init), ``size`` px, Fourier + decorrelated colour
parameterization, Adam lr 0.05, ``steps`` steps, Lucid's standard transforms on both
sides (each library's own). What differs by design: Lucent runs the whole network each
step, fvis stops after the target layer. Lucent upsamples images under 224 px to 224
unless ``fixed_image_size`` is given: it is given, so both optimize at ``size`` px. The
outputs are not compared pixel for pixel (different random initial images and transform
draws).

torch-lucent 0.1.8 pins kornia < 0.5 and imports ``decorator``; the shim below supplies
``decorator`` (the one function Lucent uses), kornia's two moved functions at their old
names, and an empty ``IPython.display`` (it
shows nothing here) for this benchmark only.
"""

from __future__ import annotations

import functools
import sys
import types

import torch
import torchvision

import fvis
from benchmarks.common import paired, row
from fvis import objectives as O
from fvis.models import ModelInfo, attach


def _shim() -> None:
    try:
        import IPython.display  # noqa: F401
    except ImportError:  # Lucent's show() imports it; nothing is shown here
        ipy, disp = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        disp.display = disp.HTML = disp.Image = lambda *a, **k: None
        ipy.display = disp
        sys.modules.setdefault("IPython", ipy)
        sys.modules.setdefault("IPython.display", disp)
    import kornia
    from kornia.geometry import transform as kt

    for name in ("get_rotation_matrix2d", "warp_affine"):  # moved in kornia 0.5
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kt, name))
    try:
        import decorator  # noqa: F401

        return
    except ImportError:
        pass
    mod = types.ModuleType("decorator")

    def decorator(caller):  # decorator.decorator(caller)(func) → caller(func, *a, **k)
        def deco(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return caller(func, *args, **kwargs)

            return wrapper

        return deco

    mod.decorator = decorator
    sys.modules["decorator"] = mod


def run(smoke: bool = False, pairs: int = 5, device="cpu") -> list[dict]:
    _shim()
    from lucent.optvis import objectives as LO
    from lucent.optvis import param as LP
    from lucent.optvis import render as LR

    size, steps = (32, 2) if smoke else (64, 8)
    channels = 4 if smoke else 64
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    model = attach(net, ModelInfo((3, size, size), name="googlenet"))
    rows = []

    def fvis_render(layer, chans):
        obj = O.one_per_item([O.channel(layer, c) for c in chans])
        return fvis.render(model, obj, fvis.param.image(size, batch=len(chans)), steps=steps,
                           progress=False, device=device)  # fmt: skip

    def lucent_render(layer, chans):
        for c in chans:
            LR.render_vis(net, LO.channel(layer.replace(".", "_"), c),
                          lambda: LP.image(size),
                          thresholds=(steps,), progress=False, show_image=False,
                          preprocess=False, fixed_image_size=size)  # fmt: skip

    for case, layer, chans in (
        (f"mid-layer channel (inception4a:97), {size} px, {steps} steps", "inception4a", [97]),
        (f"whole layer, {channels} channels (inception3a.branch1), {size} px, {steps} steps",
         "inception3a.branch1", list(range(channels))),
    ):  # fmt: skip
        t = paired(lambda la=layer, c=chans: fvis_render(la, c),
                   lambda la=layer, c=chans: lucent_render(la, c), 1 if smoke else pairs,
                   device)  # fmt: skip
        rows.append(row("render", case, "lucent", t, "different by design (see docstring)"))
    return rows
