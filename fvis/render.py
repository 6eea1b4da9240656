"""The optimization loop: parameterization → image → transforms → model → objective → step.

>>> model = fvis.load_model("fvis:mnist")
>>> result = fvis.render(model, fvis.objectives.class_logit(3), steps=16, progress=False)
>>> result.images.shape, result.history.shape      # (B, C, H, W) in [0, 1]; (steps, B)
(torch.Size([1, 1, 28, 28]), torch.Size([16, 1]))
>>> result.pil()[0].save("three.png")
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fvis import hooks
from fvis import transforms as T
from fvis.errors import NonFiniteError, check_finite
from fvis.image import grid, to_pil
from fvis.models import check_device
from fvis.models.metadata import info as model_info
from fvis.objectives import IMAGE, Objective
from fvis.param import DEFAULT_LR, MAX_BATCH, Ball, for_input
from fvis.progress import Progress
from fvis.redirect import REDIRECTED_RELU_STEPS, redirected_relu

__all__ = ["RenderResult", "loss_step", "render"]


def loss_step(model, objective, images, x, layers, wrt, redirect: bool = False):
    """One optimization step's forward and backward, shared by :func:`render` and
    :func:`fvis.codespace.maximize`: ``(values, grads)``, the objective (B,) and the
    gradients of the loss ``L = −Σ_b values_b`` with respect to ``wrt`` (``None`` where
    unused). Objectives are maximized; this is the one place the sign is taken, and every
    optimizer then descends ``L`` (torch's optimizers; DGN-AM's ``z ← z − lr·∇L``).

    ``images``: (B, C, H, W) in [0, 1], what pixel objectives read; ``x``: the model's
    input made from them (transformed, normalized). ``layers``: what ``objective`` reads.
    ``redirect``: the model's ReLUs pass Lucid's redirected gradient (:mod:`fvis.redirect`),
    defined for descending a loss. The model's guard is held for this step only, so other
    fvis calls on a shared model take turns between steps.
    """

    def step(x):
        with hooks.guard(model):
            with redirected_relu() if redirect else contextlib.nullcontext():
                acts = hooks.capture(model, x, layers) if layers else hooks.Activations()
                acts[IMAGE] = images
                values = objective(acts)
            return values, torch.autograd.grad(-values.sum(), wrt, allow_unused=True)

    return hooks.channels_last_input(model, x, step)  # oneDNN's faster conv and pooling


@dataclass
class RenderResult:
    """What :func:`render` returns.

    ``images``: (B, C, H, W) in [0, 1] after the last step (CPU). ``snapshots``:
    ``{step: images}`` at the requested thresholds. ``history``: (steps, B) objective
    value per step and batch item (before each step's update). ``importance`` (with
    ``render(importance=True)``): (B, 1, H, W), ``Σ_steps Σ_channels |∂objective/∂image|``
    normalized to a maximum of 1 per item: the parts of the picture the objective kept
    reacting to (MACO's transparency map, Fel et al. 2023); use it as an alpha channel.
    """

    images: torch.Tensor
    history: torch.Tensor
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    objective: str = ""
    importance: torch.Tensor | None = None

    def pil(self) -> list:
        """The images as PIL images (one per batch item)."""
        return to_pil(self.images)

    def grid(self, ncol: int | None = None, scale: int = 1):
        """All images in one PIL image, ``ncol`` per row, enlarged ``scale`` times."""
        return grid(self.images, ncol=ncol, scale=scale)

    def _repr_png_(self) -> bytes:  # notebooks: the grid, enlarged to ≥ 128 px per image
        from fvis.figures import png_bytes

        return png_bytes(self.grid(scale=max(1, 128 // max(self.images.shape[-2:]))))

    def _repr_html_(self) -> str:
        from fvis.figures import html_figure

        final = ", ".join(f"{v:.4g}" for v in self.history[-1].tolist()[:8])
        picture = self.grid(scale=max(1, 128 // max(self.images.shape[-2:])))
        return html_figure(picture, f"{self.objective}: {len(self.history)} steps, final {final}")


MAX_FIT = 4  # a fixed-size model sees the centre crop: at most this many times its side
_CHECK_EVERY = 8  # steps between checks for a non-finite objective (each check syncs)


def _check_settings(steps, batch, lr, seed, thresholds, redirected_relu_steps) -> None:
    """Refuse settings that cannot give a picture, before any work."""
    for name, value, low in (("steps", steps, 1), ("batch", batch, 1), ("seed", seed, 0),
                             ("redirected_relu_steps", redirected_relu_steps, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < low:
            raise ValueError(f"{name} must be ≥ {low}, not {value}")
    if batch > MAX_BATCH:
        raise ValueError(
            f"batch {batch} is too large: render at most {MAX_BATCH} items at once (valid: "
            f"1..{MAX_BATCH}); split the units over several renders"
        )
    if lr is not None:
        check_finite("lr", lr, positive=True)
    bad = [t for t in thresholds if not (isinstance(t, numbers.Integral) and 1 <= t <= steps)]
    if bad:
        raise ValueError(f"thresholds must be steps in 1..{steps}, not {bad}")


def _check_images(images, fit_size) -> None:
    """Refuse a parameterization whose images are not (B, C, H, W), too many or too large."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"the parameterization must return images (B, C, H, W), not {shape}")
    b, _, h, w = images.shape
    if not 1 <= b <= MAX_BATCH:
        raise ValueError(f"the parameterization has batch {b}; valid: 1..{MAX_BATCH}")
    if fit_size is not None and (h > MAX_FIT * fit_size[0] or w > MAX_FIT * fit_size[1]):
        raise ValueError(
            f"images of {h}×{w} are far larger than the model's fixed input "
            f"{fit_size[0]}×{fit_size[1]}, which sees only their centre; use a size up to "
            f"{MAX_FIT * fit_size[0]}×{MAX_FIT * fit_size[1]}"
        )


def _check_history(history, step: int, name: str, lr: float) -> None:
    """Stop at the first step whose objective is NaN or infinite, saying which."""
    recent = torch.stack(history[-_CHECK_EVERY:])
    finite = torch.isfinite(recent)
    if bool(finite.all()):
        return
    row = int((~finite.all(1)).nonzero()[0])
    first = step - len(recent) + 1 + row
    items = (~finite[row]).nonzero().flatten().tolist()
    raise NonFiniteError(
        f"the objective {name} became {recent[row][~finite[row]][0].item()} at step {first} "
        f"(batch items {items[:8]}); lower the learning rate (lr={lr:g}) or the objective's "
        "weights"
    )


def _optimizer(optimizer, params, lr: float) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(params, lr=lr)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=lr)
    if callable(optimizer):
        return optimizer(params)
    raise TypeError(
        "optimizer must be None, a torch.optim.Optimizer class or a callable params -> optimizer"
    )


@torch.no_grad()
def _images(param: nn.Module, ball: Ball | None) -> torch.Tensor:
    """The parameterization's images on the CPU, exactly inside the ball if any."""
    images = param()
    return (images if ball is None else ball.project(images)).cpu()


def render(
    model: nn.Module,
    objective: Objective,
    param: nn.Module | None = None,
    *,
    transforms="standard",
    steps: int = 512,
    lr: float | None = None,
    optimizer=None,
    seed: int = 0,
    batch: int = 1,
    thresholds: Sequence[int] = (),
    size="auto",
    redirected_relu_steps: int = REDIRECTED_RELU_STEPS,
    device=None,
    progress: bool = True,
    importance: bool = False,
    callback=None,
    ball: Ball | None = None,
) -> RenderResult:
    """Optimize ``param`` so that ``objective`` (per batch item) is maximized.

    ``param``: a parameterization (``forward() -> (B, C, H, W)`` in [0, 1]); default
    :func:`fvis.param.image` at the model's input size, ``batch`` items, Fourier +
    decorrelated colour for RGB. ``transforms``: ``"standard"`` (Lucid's), ``None``, a
    callable or a list (:mod:`fvis.transforms`). ``size``: ``"auto"`` centre-crops or
    pads the transformed image to the model's input size when the model only takes that
    size (``fvis_info.fixed_size``), ``None`` never does, ``(H, W)`` always does.
    The model's normalization (``fvis_info``) is applied after the transforms.
    ``optimizer``: Adam(lr) by default, or a ``torch.optim.Optimizer`` class, or a
    callable ``params -> optimizer``; ``lr`` defaults to the parameterization's ``lr``
    attribute (0.05 for pixel/Fourier, 0.1 for MACO, 0.001 for CPPN), else 0.05.
    ``redirected_relu_steps``: use Lucid's redirected-ReLU gradient for this many first
    steps (default 16, :data:`fvis.redirect.REDIRECTED_RELU_STEPS`; 0 disables).
    ``device``: defaults to the model's (the model is moved if another is given).
    Same seed, same device → same images, bit for bit. ``importance``: also accumulate
    the gradient magnitude at the image (:class:`RenderResult`). ``callback(step, images,
    values)``, if given, runs after each step with the images that step scored
    ((B, C, H, W), detached) and their objective values ((B,)); an exception raised in
    it stops the render (the model is restored, no hooks remain) and propagates. ``ball``: a
    :class:`fvis.param.Ball` (L∞ or L2 around a start image) onto which the image is
    projected after every step (adversarial examples, caricatures); without ``param``
    the image starts at the ball's center.
    """
    _check_settings(steps, batch, lr, seed, thresholds, redirected_relu_steps)
    info = model_info(model)
    param = _placed(model, param, info, batch, seed, ball, device)
    transform, fit_size = T.resolve(transforms), _fit_size(size, info)
    layers = [n for n in objective.layers if n != IMAGE]
    gen = torch.Generator().manual_seed(seed)  # CPU: transform draws need no device sync
    lr = getattr(param, "lr", DEFAULT_LR) if lr is None else lr
    params = [p for p in param.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the parameterization has no trainable parameters")
    with torch.no_grad():
        _check_images(param(), fit_size)
    opt = _optimizer(optimizer, params, lr)
    thresholds = set(int(t) for t in thresholds)
    history, snapshots, saliency = [], {}, None

    # the model's guard is held for one step at a time, so renders (and other fvis calls)
    # that share a model take turns step by step instead of waiting for a whole render
    with Progress(steps, f"render {objective.name}"[:60], progress) as bar:
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            images = param()
            x = transform(images, gen)
            x = info.normalize(x if fit_size is None else T.fit(x, fit_size))
            # gradients for the parameterization (and the image) only: the model's
            # parameters get none, whatever their requires_grad
            wrt = [*params, images] if importance else params
            values, grads = loss_step(
                model, objective, images, x, layers, wrt, step <= redirected_relu_steps
            )
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            if ball is not None:
                ball.project_(param)
            if importance and grads[-1] is not None:
                g = grads[-1].detach().abs().sum(1, keepdim=True)
                saliency = g if saliency is None else saliency + g
            history.append(values.detach())
            if step % _CHECK_EVERY == 0 or step == steps:
                _check_history(history, step, objective.name, lr)
            if step in thresholds:
                snapshots[step] = _images(param, ball)
            if bar.enabled:
                bar.update(step, f"objective {values.detach().mean().item():.4g}")
            if callback is not None:
                callback(step, images.detach(), values.detach())
    return RenderResult(
        images=_images(param, ball),
        history=torch.stack(history).cpu(),
        snapshots=snapshots,
        objective=objective.name,
        importance=None if saliency is None else _peak_normalized(saliency),
    )


def _placed(model, param, info, batch: int, seed: int, ball, device) -> nn.Module:
    """The parameterization on the render's device (the model's, or ``device``, where the
    model is moved); without one, :func:`fvis.param.for_input` (or the ball's start)."""
    if device is not None:
        device = check_device(device)
        if hooks.model_device(model) != device:
            model.to(device)
    else:
        device = hooks.model_device(model)
    if param is None:
        start = for_input if ball is None else ball.start
        param = start(info.input_size, batch, seed=seed)
    param = param.to(device)
    if ball is not None:
        ball.check(param)
    return param


def _fit_size(size, info) -> tuple | None:
    """``(H, W)`` the transformed image is fitted to, or None (see :func:`render`'s ``size``)."""
    if size == "auto":
        return tuple(info.input_size[1:]) if info.fixed_size else None
    return None if size is None else tuple(size)


def _peak_normalized(saliency: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) divided by each item's maximum, on the CPU."""
    peak = saliency.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (saliency / peak).cpu()
