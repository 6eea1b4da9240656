"""Activation maximization in a generator's code space (DGN-AM, Nguyen et al. 2016;
PPGN, Nguyen et al. 2017).

Pixel-space AM finds inputs that excite a unit but rarely look like data. Searching
the code ``z`` of a generator ``G`` trained on the data keeps the image on the data
manifold:

    code z → G(z) → adapt (range, channels, size) → image in [0, 1] → [transforms]
           → model normalization → model (hooked) → objective

Two ways in, one implementation of the image side:

* :class:`GeneratorParam` is a parameterization like any other (``forward() ->
  (B, C, H, W)`` in [0, 1]): ``fvis.render(model, objective, GeneratorParam(g, 10))``
  runs every objective in code space with render's optimizer and transforms.
* :func:`maximize` runs the DGN-AM loop itself: normalized gradient steps with a
  decaying step size, code decay, clipping to bounds measured from real data and
  PPGN's optional prior and noise terms, for a batch of codes, with restarts.

Generators are ``fvis.generators.load(name)`` (bundled) or any ``nn.Module`` with a
declared interface (:func:`fvis.generators.declare`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fvis import hooks
from fvis import transforms as T
from fvis.generators import BUNDLED, GeneratorInfo, load
from fvis.generators import info as generator_info
from fvis.image import grid
from fvis.models.metadata import info as model_info
from fvis.objectives import IMAGE, Objective
from fvis.progress import Progress
from fvis.render import loss_step

__all__ = [
    "CodeSpaceResult",
    "GeneratorParam",
    "adapt",
    "as_generator",
    "maximize",
    "param_for",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights, RGB → grey


def adapt(images: torch.Tensor, gen: GeneratorInfo, size: Sequence[int] | None = None):
    """A generator's images → images in [0, 1] of ``size`` ``(C, H, W)`` for a model.

    The output range is mapped to [0, 1] (and clamped); 1 → 3 channels repeats grey,
    3 → 1 takes BT.601 luma; a different ``(H, W)`` is a bilinear resize (antialiased
    when shrinking). Differentiable. ``(B, C', H', W') → (B, C, H, W)``.
    """
    x = gen.to_unit(images)
    if size is None:
        return x
    c, h, w = (int(s) for s in size)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * weights).sum(1, keepdim=True)
        else:
            raise ValueError(
                f"cannot adapt {x.shape[1]}-channel generator images to a {c}-channel model"
            )
    if tuple(x.shape[-2:]) != (h, w):
        shrink = h < x.shape[-2] or w < x.shape[-1]
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return x


def as_generator(generator: str | os.PathLike | nn.Module, device=None) -> nn.Module:
    """A generator module with a declared interface: a bundled name or checkpoint path
    is loaded (:func:`fvis.generators.load`), a module is checked and returned."""
    if isinstance(generator, nn.Module):
        generator_info(generator)  # raises with instructions when undeclared
        return generator.to(device) if device is not None else generator
    return load(generator, device=device)


def _init_codes(gen: GeneratorInfo, batch: int, init, scale: float, rng, device, clip=True):
    """Starting codes (batch, *code_shape): a tensor as given, the prior mean, or prior
    samples shrunk towards the mean by ``scale``; clipped to the bounds if ``clip``."""
    project = gen.clip if clip else (lambda z: z)
    if isinstance(init, torch.Tensor):
        z = torch.as_tensor(init, dtype=torch.float32)
        if tuple(z.shape) == gen.code_shape:
            z = z.expand(batch, *gen.code_shape)
        if tuple(z.shape) != (batch, *gen.code_shape):
            raise ValueError(
                f"init codes have shape {tuple(z.shape)}; need {(batch, *gen.code_shape)} "
                f"or {gen.code_shape}"
            )
        return project(z.to(device).clone())
    if init == "mean":
        mean, _ = gen.stats(torch.zeros((), device=device))
        return project(mean.expand(batch, *gen.code_shape).clone())
    if init == "random":
        # the Gaussian prior (mean, std), not a fitted sampling mixture: a start near the
        # mean that the objective moves, not a finished digit
        return gen.sample(batch, rng, device=device, scale=scale, mixture=False)
    raise ValueError(f"init must be 'random', 'mean' or a tensor of codes, not {init!r}")


class GeneratorParam(nn.Module):
    """A batch of generator codes as a parameterization: ``forward()`` returns
    ``adapt(G(z))``, (B, C, H, W) in [0, 1].

    ``generator``: a bundled name, a checkpoint path, or a module with a declared
    interface. ``size``: ``(C, H, W)`` the images are adapted to (default: the
    generator's own). ``init``: ``"random"`` (prior samples, ``scale`` × the spread,
    from ``seed``), ``"mean"`` or codes. ``clip``: project the codes onto the declared
    bounds before each forward pass (projected gradient ascent). ``decay``: DGN-AM's
    code decay, ``z ← mean + (1 − decay)(z − mean)`` in each forward pass that records
    gradients (once per :func:`fvis.render` step). The generator is put in eval mode and
    its weights stay fixed (``requires_grad`` off).
    """

    def __init__(
        self,
        generator: str | os.PathLike | nn.Module = "mnist",
        batch: int = 1,
        *,
        size: Sequence[int] | None = None,
        init="random",
        scale: float = 0.5,
        clip: bool = True,
        decay: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        gen = as_generator(generator)
        for p in gen.parameters():
            p.requires_grad_(False)
        self.generator = gen.eval()
        self.gen_info = generator_info(gen)
        self.size = tuple(int(s) for s in size) if size is not None else self.gen_info.size
        self.clip, self.decay = clip, float(decay)
        rng = torch.Generator().manual_seed(seed)
        z = _init_codes(self.gen_info, batch, init, scale, rng, hooks.model_device(gen), clip)
        self.code = nn.Parameter(z)

    def train(self, mode: bool = True) -> GeneratorParam:
        """The generator stays in eval mode (its BatchNorm/dropout, if any, act as at
        inference); only the codes are optimized."""
        super().train(mode)
        self.generator.eval()
        return self

    @property
    def codes(self) -> torch.Tensor:
        """The current codes (B, *code_shape), detached."""
        return self.code.detach().clone()

    @torch.no_grad()
    def project_(self, decay: float = 0.0) -> None:
        """Decay the codes towards the prior mean, then clip them to the bounds (in place)."""
        z = self.code
        if decay:
            mean, _ = self.gen_info.stats(z)
            z.copy_(mean + (1.0 - decay) * (z - mean))
        if self.clip:
            z.copy_(self.gen_info.clip(z))

    def forward(self) -> torch.Tensor:
        self.project_(self.decay if torch.is_grad_enabled() else 0.0)
        return adapt(self.generator(self.code), self.gen_info, self.size)

    def extra_repr(self) -> str:
        return (
            f"codes={tuple(self.code.shape)}, size={self.size}, clip={self.clip}, "
            f"decay={self.decay:g}"
        )


def param_for(
    prior: str, model: nn.Module, batch: int = 1, *, seed: int = 0, **kwargs
) -> GeneratorParam:
    """The parameterization a prior spec names, for ``model``: ``"generator:NAME"`` (a
    bundled generator, e.g. ``generator:mnist``) or ``"generator:PATH.pt"``, with images
    adapted to the model's input size. For the command line and the gallery."""
    kind, _, name = prior.partition(":")
    if kind != "generator" or not name:
        raise ValueError(
            f"unknown prior {prior!r}: use 'generator:NAME' (bundled: "
            f"{', '.join(BUNDLED)}) or 'generator:PATH.pt'"
        )
    gen = load(name, device=hooks.model_device(model))
    return GeneratorParam(gen, batch, size=model_info(model).input_size, seed=seed, **kwargs)


@dataclass
class CodeSpaceResult:
    """What :func:`maximize` returns (CPU tensors).

    ``images``: (B, C, H, W) in [0, 1] at the model's input size; ``codes``: (B, *code
    shape); ``values``: (B,) objective of the final codes; ``history``: (steps, B)
    objective before each step of the restart kept for each item; ``restart``: (B,)
    which restart that was.
    """

    images: torch.Tensor
    codes: torch.Tensor
    values: torch.Tensor
    history: torch.Tensor
    restart: torch.Tensor
    objective: str = ""

    def grid(self, ncol: int | None = None, scale: int = 1):
        """All images in one PIL image, ``ncol`` per row, enlarged ``scale`` times."""
        return grid(self.images, ncol=ncol, scale=scale)


def _has_encoder(gen: nn.Module) -> bool:
    """Whether ``gen.encode`` can run (bundled generators loaded with ``encoder=False``
    have the method but no encoder)."""
    if not callable(getattr(gen, "encode", None)):
        return False
    return getattr(gen, "encoder", gen) is not None


def _prior_step(gen: nn.Module, gi: GeneratorInfo, z: torch.Tensor) -> torch.Tensor:
    """PPGN's prior term ``R(z) − z``: towards the autoencoder's reconstruction
    ``R(z) = E(G(z))`` when the generator has an encoder (``encode``), else the
    Gaussian prior's score ``−(z − mean)/std²``."""
    if _has_encoder(gen):
        with torch.no_grad():
            return gen.encode(gen(z)) - z
    mean, std = gi.stats(z)
    return -(z - mean) / std.pow(2)


def maximize(
    model: nn.Module,
    objective: Objective,
    generator: str | os.PathLike | nn.Module = "mnist",
    *,
    batch: int = 1,
    steps: int = 200,
    lr: float | tuple[float, float] = (1.0, 0.01),
    decay: float = 0.01,
    clip: bool = True,
    normalize_step: bool = True,
    prior: float = 0.0,
    noise: float = 0.0,
    restarts: int = 1,
    init="random",
    init_scale: float = 0.5,
    transforms=None,
    redirected_relu_steps: int = 50,
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> CodeSpaceResult:
    """Maximize ``objective`` over ``batch`` generator codes with the DGN-AM update

        z ← clip( mean + (1 − decay)·(z − lr_t·ĝ + prior·(R(z) − z) + noise·std·ε − mean) )

    with ``ĝ = ∇_z L / mean|∇_z L|`` per item for the loss ``L = −objective``
    (``normalize_step``; else the raw gradient; one step of :func:`fvis.render.loss_step`,
    render's own), ``lr_t`` linear from ``lr[0]`` to ``lr[1]`` over the steps (a
    number: constant), ``R`` PPGN's prior reconstruction (:func:`_prior_step`), ``ε ~
    N(0, 1)`` (PPGN's ε₃ term) and ``clip`` the declared bounds (the bundled generators'
    are measured on encoded training data). DGN-AM's defaults (Nguyen et al. 2016) were
    lr 8 → 1e-10 over 200 steps and decay 0.01 for fc6 codes of scale ~10; the defaults
    here are scaled to codes of unit spread.

    Each of ``restarts`` runs starts from new random codes (``init``: ``"random"``
    prior samples shrunk by ``init_scale``, ``"mean"`` or a tensor); for each item the
    restart whose final objective is highest is kept. ``transforms``: as in
    :func:`fvis.render` (default none: the generator is the prior).
    ``redirected_relu_steps``: the model's ReLUs pass Lucid's redirected gradient
    (:mod:`fvis.redirect`) for this many first steps, so a unit that is off at the
    starting codes can still be reached (the generator's ReLUs are left alone). The model's
    normalization (``fvis_info``) is applied; activations come from
    :func:`fvis.hooks.capture`. The generator is moved to the model's device.
    Returns a :class:`CodeSpaceResult`. Same seed, same device → same result.
    """
    device = torch.device(device) if device is not None else hooks.model_device(model)
    model.to(device)
    gen = as_generator(generator, device=device)
    search = _CodeSearch(
        model, objective, gen, T.resolve(transforms), torch.Generator().manual_seed(seed), device,
        steps, lr, decay, clip, normalize_step, prior, noise, redirected_relu_steps,
    )  # fmt: skip
    runs = []
    with (
        hooks.guard(model),
        hooks.guard(gen),
        Progress(steps * restarts, f"codespace {objective.name}"[:60], progress) as bar,
    ):
        for r in range(restarts):
            z = _init_codes(search.gi, batch, init, init_scale, search.rng, device, clip)
            z, history = search.climb(z, bar, done=r * steps)
            with torch.no_grad():
                values, images = search.evaluate(z)
            trace = torch.stack(history) if history else values.new_zeros(0, batch)
            runs.append((values, z, images, trace))
    return _best_restarts(runs, batch, objective.name)


@dataclass
class _CodeSearch:
    """One :func:`maximize` call's search, set up: how codes become the model's input,
    the DGN-AM update and the loop of steps (the settings are :func:`maximize`'s)."""

    model: nn.Module
    objective: Objective
    gen: nn.Module
    transform: object
    rng: torch.Generator
    device: torch.device
    steps: int
    lr: float | tuple[float, float]
    decay: float
    clip: bool
    normalize_step: bool
    prior: float
    noise: float
    redirected_relu_steps: int

    def __post_init__(self):
        self.gi = generator_info(self.gen)
        self.info = model_info(self.model)
        self.layers = [n for n in self.objective.layers if n != IMAGE]
        lr = self.lr
        self.lr0, self.lr1 = (lr, lr) if isinstance(lr, int | float) else lr
        _, self.std = self.gi.stats(torch.zeros((), device=self.device))

    def inputs(self, z: torch.Tensor, transformed: bool = True):
        """``(images, x)``: ``adapt(G(z))`` (B, C, H, W) in [0, 1] at the model's input
        size, and the model's input made from them (transformed, normalized)."""
        images = adapt(self.gen(z), self.gi, self.info.input_size)
        x = self.transform(images, self.rng) if transformed else images
        return images, self.info.normalize(x)

    def evaluate(self, z: torch.Tensor):
        """``(values, images)``: the objective (B,) of codes ``z``, untransformed."""
        images, x = self.inputs(z, transformed=False)
        acts = hooks.capture(self.model, x, self.layers) if self.layers else hooks.Activations()
        acts[IMAGE] = images
        return self.objective(acts), images

    def climb(self, z: torch.Tensor, bar: Progress, done: int):
        """``steps`` updates from codes ``z``: ``(z, history)``, the final codes and the
        objective (B,) before each step; ``done`` steps of other restarts came before."""
        history = []
        for t in range(self.steps):
            z.requires_grad_(True)
            images, x = self.inputs(z)
            redirect = t < self.redirected_relu_steps
            values, (g,) = loss_step(self.model, self.objective, images, x, self.layers, [z],
                                     redirect)  # fmt: skip
            history.append(values.detach())
            z = self.update(z, g, t)
            if bar.enabled:
                bar.update(done + t + 1, f"objective {values.detach().mean().item():.4g}")
        return z, history

    @torch.no_grad()
    def update(self, z: torch.Tensor, g: torch.Tensor, t: int) -> torch.Tensor:
        """Step ``t``'s DGN-AM update of codes ``z`` (B, *code_shape) given the loss
        gradient ``g = ∇_z L`` (terms and settings as in :func:`maximize`):
        ``z ← clip(mean + (1 − decay)·(z − lr_t·ĝ + prior·(R(z) − z) + noise·std·ε − mean))``."""
        gi = self.gi
        if self.normalize_step:
            g = g / g.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *[1] * len(gi.code_shape))
        lr_t = self.lr0 + (self.lr1 - self.lr0) * t / max(self.steps - 1, 1)
        step = -lr_t * g  # descend the loss L = −objective
        if self.prior:
            step = step + self.prior * _prior_step(self.gen, gi, z)
        if self.noise:
            eps = torch.randn(z.shape, generator=self.rng).to(self.device)
            step = step + self.noise * self.std * eps
        z = z.detach() + step
        if self.decay:
            mean, _ = gi.stats(z)
            z = mean + (1.0 - self.decay) * (z - mean)
        if self.clip:
            z = gi.clip(z)
        return z


def _best_restarts(runs, batch: int, name: str) -> CodeSpaceResult:
    """Per item, the restart with the highest final value (the first one on ties);
    ``runs``: per restart ``(values (B,), codes, images, history (steps, B))``."""
    values, codes, images, history = (torch.stack(t).cpu() for t in zip(*runs))
    best = values.argmax(0)
    items = torch.arange(batch)
    return CodeSpaceResult(
        images=images[best, items],
        codes=codes[best, items],
        values=values[best, items],
        history=history.transpose(1, 2)[best, items].T,
        restart=best,
        objective=name,
    )
