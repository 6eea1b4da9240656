"""Objectives: what a visualization maximizes and what an attribution explains.

An :class:`Objective` maps captured activations to **one value per batch item**,
shape ``(B,)``. Objectives are **maximized**; ``-objective`` minimizes. Penalties
(:func:`l1`, :func:`total_variation`, :func:`frequency`, ...) return positive
amounts, so a regularized objective reads ``channel("conv3", 5) - 0.1 * total_variation()``.

Objectives compose with ``+``, ``-``, scalar ``*`` and ``/`` and unary ``-``; the
operands are never modified and per-item values are kept (nothing is averaged over
the batch). ``batch=i`` (or :meth:`Objective.on`) makes an objective count for item
``i`` only, so one batch renders many units: see :func:`one_per_item`.

Layer names are those of :mod:`fvis.hooks` (``"conv3"``, ``"layer1.0.relu:1"``,
``"output"``) plus ``"image"``: the parameterization's image in [0, 1] before
transforms, which :func:`fvis.render` provides.

"Channel" means the feature dimension of the layer's layout (:mod:`fvis.hooks.layouts`):
dim 1 of ``(B, C, H, W)`` and ``(B, C)``, the last dim of channels-last ``(B, H, W, C)``
and of tokens ``(B, N, D)``. Objectives read every layer features first,
``(B, D, h, w)`` (:meth:`fvis.hooks.Activations.grid`): a ViT "channel" is an embedding
dimension averaged over the patch tokens (the class token left out), a neuron is one
dimension at one patch of the grid.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from fvis.errors import check_finite
from fvis.hooks import OUTPUT
from fvis.outputs import select
from fvis.transforms import gaussian_blur

__all__ = [
    "IMAGE",
    "Objective",
    "blur",
    "channel",
    "channel_interpolate",
    "class_log_prob",
    "class_logit",
    "class_region",
    "direction",
    "direction_neuron",
    "diversity",
    "frequency",
    "grid",
    "l1",
    "l2",
    "layer",
    "neuron",
    "one_per_item",
    "random_direction",
    "reference_l2",
    "total_variation",
]

IMAGE = "image"

Acts = Mapping[str, torch.Tensor]


class Objective:
    """A function of activations to one value per batch item, ``(B,)``, to be maximized.

    ``layers`` names the activations it reads (so only those are captured); ``name``
    is the readable name shown in outputs. ``-objective`` minimizes.
    """

    __slots__ = ("fn", "layers", "name")

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Sequence[str], name: str):
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name

    def __call__(self, acts: Acts) -> torch.Tensor:
        value = self.fn(acts)
        if value.dim() != 1:
            raise ValueError(f"objective {self.name} returned shape {tuple(value.shape)}, not (B,)")
        return value

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # ---- arithmetic: every operator builds a new objective ----
    def __add__(self, other):
        if isinstance(other, numbers.Real):
            check_finite(f"the number added to {self.name}", other)
            return Objective(lambda a: self(a) + other, self.layers, f"{self.name} + {other:g}")
        other = _check(other, "+")
        return Objective(
            lambda a: self(a) + other(a), self.layers + other.layers, f"{self.name} + {other.name}"
        )

    __radd__ = __add__

    def __neg__(self):
        return Objective(lambda a: -self(a), self.layers, f"-{_paren(self.name)}")

    def __sub__(self, other):
        if isinstance(other, numbers.Real):
            return self + (-other)
        other = _check(other, "-")
        return Objective(
            lambda a: self(a) - other(a),
            self.layers + other.layers,
            f"{self.name} - {_paren(other.name)}",
        )

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, k):
        if not isinstance(k, numbers.Real):
            raise TypeError(
                f"objectives multiply by numbers only, not {type(k).__name__}; "
                "combine objectives with + and -"
            )
        check_finite(f"the weight of {self.name}", k)
        return Objective(lambda a: self(a) * k, self.layers, f"{k:g}·{_paren(self.name)}")

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not isinstance(k, numbers.Real):
            raise TypeError(f"objectives divide by numbers only, not {type(k).__name__}")
        if check_finite(f"the divisor of {self.name}", k) == 0:
            raise ValueError(f"{self.name} divided by 0")
        return self * (1.0 / k)

    def on(self, i: int) -> Objective:
        """This objective for batch item ``i`` only (0 for the other items)."""
        i = _index(i, "batch item")

        def fn(a):
            v = self(a)
            if not i < v.shape[0]:
                raise IndexError(f"batch={i} but the batch has {v.shape[0]} item(s)")
            mask = torch.zeros_like(v)
            mask[i] = 1
            return v * mask

        return Objective(fn, self.layers, f"{self.name}@{i}")


def _check(other, op: str) -> Objective:
    if not isinstance(other, Objective):
        raise TypeError(f"cannot combine an Objective {op} {type(other).__name__}")
    return other


def _index(n, what: str) -> int:
    """``n`` as an index ≥ 0 (``TypeError`` for a non-integer, ``IndexError`` if negative)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{what} must be an integer index, not {n!r}")
    if n < 0:
        raise IndexError(f"{what} {n} is negative; indices start at 0")
    return int(n)


def _paren(name: str) -> str:
    return f"({name})" if (" + " in name or " - " in name) else name


def _make(fn, layers, name, batch: int | None) -> Objective:
    obj = Objective(fn, layers, name)
    return obj if batch is None else obj.on(batch)


def grid(acts: Acts, layer: str) -> torch.Tensor:
    """The activation of ``layer`` features first, ``(B, D, h, w)`` or ``(B, D)``
    (:meth:`fvis.hooks.Activations.grid`; a plain mapping is read as it is)."""
    read = getattr(acts, "grid", None)
    return read(layer) if read is not None else acts[layer]


def _channel_of(t: torch.Tensor, layer: str, n: int) -> torch.Tensor:
    """Channel ``n`` of activation ``t`` (features first): (B, H, W) or (B,)."""
    c = t.shape[1] if t.dim() > 1 else 1
    if not 0 <= n < c:
        raise IndexError(
            f"channel {n} is out of range for layer {layer!r} with {c} channels (valid: 0..{c - 1})"
        )
    return t[:, n]


def _spatial_mean(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) → (B,): the mean over positions, if any."""
    return t.flatten(1).mean(1) if t.dim() > 1 else t


def channel(layer: str, n: int, *, batch: int | None = None) -> Objective:
    """Mean activation of channel ``n`` over all positions: ``mean_{y,x} A[b, n, y, x]``
    (features first; tokens: ``mean_{i ≥ prefix} A[b, i, n]``)."""
    n = _index(n, f"channel of {layer!r}")

    def fn(a):
        return _spatial_mean(_channel_of(grid(a, layer), layer, n))

    return _make(fn, [layer], f"channel({layer}:{n})", batch)


def neuron(
    layer: str, n: int, x: int | None = None, y: int | None = None, *, batch: int | None = None
) -> Objective:
    """Activation of channel ``n`` at one position ``A[b, n, y, x]`` (centre by default:
    ``y = H // 2``, ``x = W // 2``). For a fully connected layer, ``A[b, n]``."""
    n = _index(n, f"channel of {layer!r}")
    x = None if x is None else _index(x, "neuron x")
    y = None if y is None else _index(y, "neuron y")

    def fn(a):
        t = _channel_of(grid(a, layer), layer, n)
        if t.dim() == 1:
            if x is not None or y is not None:
                raise ValueError(f"layer {layer!r} has no positions (a vector of "
                                 f"{a[layer].shape[-1]} units): write {layer}[{n}] "
                                 "without @(x,y)")  # fmt: skip
            return t
        if t.dim() != 3:
            raise ValueError(
                f"layer {layer!r} has no 2-D grid of positions (features-first shape "
                f"{tuple(t.shape)}); use channel() or declare its layout in ModelInfo.layouts"
            )
        h, w = t.shape[-2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise IndexError(
                f"position (x={xx}, y={yy}) is outside layer {layer!r} of size {h}×{w}"
            )
        return t[:, yy, xx]

    where = "" if x is None and y is None else f" @({x},{y})"
    return _make(fn, [layer], f"neuron({layer}:{n}{where})", batch)


def layer(name: str, *, batch: int | None = None) -> Objective:
    """DeepDream: mean of squared activations of the whole layer, ``mean A[b]²``."""
    return _make(lambda a: a[name].pow(2).flatten(1).mean(1), [name], f"layer({name})", batch)


def _label_index(a: Acts, label: int | str) -> int:
    if isinstance(label, int):
        return label
    info = getattr(a, "info", None)
    if info is None:
        raise ValueError(
            f"class {label!r} given by name, but the model's labels are unknown; pass an index"
        )
    return info.label_index(label)


def class_logit(label: int | str, *, batch: int | None = None) -> Objective:
    """The model output (pre-softmax logit) of class ``label``: an index, or a name
    from the model's labels (``model.fvis_info.labels``). A spatial output (B, K, H, W)
    is averaged over positions."""
    if not isinstance(label, str):
        label = _index(label, "class")

    def fn(a):
        out = select(a[OUTPUT])  # a dict / ModelOutput output: its main tensor
        return _spatial_mean(_channel_of(out, OUTPUT, _label_index(a, label)))

    return _make(fn, [OUTPUT], f"class({label})", batch)


def class_log_prob(label: int | str, *, batch: int | None = None) -> Objective:
    """Log-probability of class ``label`` (index or name), ``log softmax(z)_k = z_k −
    log Σ_j exp z_j`` over the output's classes (dimension 1): seed 001's activation
    maximization of ``log p(ω_k | x)``. Unlike the logit it rises only by beating the
    other classes. A spatial output (B, K, H, W) is averaged over positions. ≤ 0."""

    def fn(a):
        out = select(a[OUTPUT])
        if out.dim() < 2:
            raise ValueError(
                f"class_log_prob needs class scores along dimension 1; the output is "
                f"{tuple(out.shape)}"
            )
        k = _label_index(a, label)
        _channel_of(out, OUTPUT, k)  # range check with the usual message
        return _spatial_mean(torch.log_softmax(out, dim=1)[:, k])

    return _make(fn, [OUTPUT], f"log_p({label})", batch)


def class_region(
    label: int | str, mask, *, key: str | None = None, batch: int | None = None
) -> Objective:
    """Segmentation: the mean logit of class ``label`` over a region,
    ``Σ_{y,x} m[y,x] · out[b, label, y, x] / Σ_{y,x} m[y,x]``, at the mask's resolution
    (the output is resized bilinearly to the mask's (H, W) if it differs, so a mask
    drawn on the input works for models with coarse logits). ``mask``: (H, W) or
    (B, H, W), bool or weights ≥ 0 (see :func:`fvis.models.segmentation.predicted_mask`).
    ``key`` names the output entry (``"out"`` for torchvision; default: the main one)."""
    m = torch.as_tensor(mask)
    if m.dim() not in (2, 3) or m.dtype.is_complex or (m.float() < 0).any():
        raise ValueError(
            f"mask must be (H, W) or (B, H, W) of bools or weights ≥ 0, not {tuple(m.shape)}"
        )
    if not (m.flatten(-2).float().sum(-1) > 0).all():
        raise ValueError("mask is empty (for some item): the region's mean is undefined")

    def fn(a):
        out = select(a[OUTPUT], key)
        if out.dim() != 4:
            raise ValueError(
                f"class_region needs a (B, classes, H, W) output; got {tuple(out.shape)}"
            )
        w = m.to(device=out.device, dtype=out.dtype)
        if out.shape[-2:] != w.shape[-2:]:
            out = F.interpolate(out, size=w.shape[-2:], mode="bilinear", align_corners=False)
        k = _label_index(a, label)
        logit = _channel_of(out, OUTPUT, k)
        w = w.expand_as(logit)
        return (logit * w).flatten(1).sum(1) / w.flatten(1).sum(1)

    return _make(fn, [OUTPUT], f"region(class {label})", batch)


def _dir_tensor(vec, like: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(vec, dtype=like.dtype, device=like.device).flatten()
    if v.numel() != like.shape[1]:
        raise ValueError(
            f"direction has {v.numel()} entries but the layer has {like.shape[1]} channels"
        )
    return v


def _direction_map(t: torch.Tensor, vec, cossim_pow: float) -> torch.Tensor:
    """Per position ``<A, v>`` (× cos(A, v)^p when p > 0): (B, H, W) or (B,)."""
    v = _dir_tensor(vec, t)
    shape = (1, -1) + (1,) * (t.dim() - 2)
    dot = (t * v.view(shape)).sum(1)
    if cossim_pow:
        cos = dot / (t.norm(dim=1) * v.norm() + 1e-8)
        dot = dot * cos.clamp(min=1e-1) ** cossim_pow
    return dot


def direction(layer: str, vec, *, cossim_pow: float = 0.0, batch: int | None = None) -> Objective:
    """Mean over positions of ``<A[b, :, y, x], v>`` for a direction ``v`` in channel space;
    with ``cossim_pow = p > 0`` each term is weighted by ``max(cos, 0.1)^p`` (Olah et al.
    2018), which favours activations pointing along ``v`` over large ones."""

    def fn(a):
        return _spatial_mean(_direction_map(grid(a, layer), vec, cossim_pow))

    cos = f", cos^{cossim_pow:g}" if cossim_pow else ""
    name = f"direction({layer}{cos})"
    return _make(fn, [layer], name, batch)


def direction_neuron(
    layer: str,
    vec,
    x: int | None = None,
    y: int | None = None,
    *,
    cossim_pow: float = 0.0,
    batch: int | None = None,
) -> Objective:
    """``<A[b, :, y, x], v>`` at one position (centre by default)."""

    def fn(a):
        d = _direction_map(grid(a, layer), vec, cossim_pow)
        if d.dim() == 1:
            return d
        h, w = d.shape[-2:]
        return d[:, h // 2 if y is None else y, w // 2 if x is None else x]

    return _make(fn, [layer], f"direction_neuron({layer})", batch)


def random_direction(
    layer: str, seed: int = 0, *, over: str = "channels", batch: int | None = None
) -> Objective:
    """A seeded random direction, ``v = z / ‖z‖`` with ``z ~ N(0, I)`` drawn from
    ``torch.Generator().manual_seed(seed)`` on the CPU (the same direction on every
    device), as an objective (seed 004: units weighted by random signed parameters).

    ``over="channels"``: ``v`` has one entry per channel, ``z = randn(C)``, and the
    objective is :func:`direction` along it, ``mean_{y,x} <A[b, :, y, x], v>``.
    ``over="layer"``: ``v`` spans the whole activation, ``z = randn(C, H, W)`` (or
    ``randn(C)`` for a (B, C) layer), and the objective is ``<A[b], v> = Σ_{c,y,x}
    A[b, c, y, x] · v[c, y, x]``, so neurons of one channel get different weights.
    """
    if over not in ("channels", "layer"):
        raise ValueError(f"over must be 'channels' or 'layer', not {over!r}")
    drawn: dict[tuple[int, ...], torch.Tensor] = {}

    def vector(shape: tuple[int, ...]) -> torch.Tensor:
        if shape not in drawn:
            z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            drawn[shape] = z / z.norm()
        return drawn[shape]

    def fn(a):
        t = grid(a, layer)
        if t.dim() < 2:
            raise ValueError(f"layer {layer!r} gives {tuple(t.shape)}: no channel dimension")
        if over == "channels":
            return _spatial_mean(_direction_map(t, vector((t.shape[1],)), 0.0))
        v = vector(tuple(t.shape[1:])).to(device=t.device, dtype=t.dtype)
        return (t * v).flatten(1).sum(1)

    return _make(fn, [layer], f"random_direction({layer}, seed={seed}, {over})", batch)


def channel_interpolate(layer1: str, n1: int, layer2: str, n2: int) -> Objective:
    """Across the batch, item ``b`` of ``B`` maximizes ``(1 - w_b)·channel1 + w_b·channel2``
    with ``w_b = b / (B - 1)``: a morph from one unit to the other."""
    c1, c2 = channel(layer1, n1), channel(layer2, n2)

    def fn(a):
        v1, v2 = c1(a), c2(a)
        n = v1.shape[0]
        w = torch.linspace(0, 1, n, device=v1.device, dtype=v1.dtype) if n > 1 else v1 * 0
        return (1 - w) * v1 + w * v2

    return Objective(fn, [layer1, layer2], f"interpolate({layer1}:{n1} → {layer2}:{n2})")


def diversity(layer: str, group: int | None = None) -> Objective:
    """Dissimilarity of each item from the rest of the batch (Olah et al. 2017):
    ``-mean_{j≠b} cos(G_b, G_j)`` with ``G`` the flattened channel Gram matrix of the
    layer. Add it with a weight to a batch of the same unit to get varied images.
    ``group=g``: items are compared only within consecutive groups of ``g`` (several
    units' diversity sets in one batch)."""

    def fn(a):
        t = grid(a, layer)
        b = t.shape[0]
        g = b if group is None else group
        if b % g:
            raise ValueError(f"diversity groups of {g} do not divide a batch of {b}")
        if g < 2:
            return t.new_zeros(b)
        f = t.flatten(2) if t.dim() > 2 else t.unsqueeze(2)
        gram = F.normalize(torch.bmm(f, f.transpose(1, 2)).flatten(1), dim=1)
        gram = gram.view(b // g, g, -1)
        sim = gram @ gram.transpose(1, 2)
        off = sim.sum(2) - sim.diagonal(dim1=1, dim2=2)
        return (-off / (g - 1)).reshape(b)

    return Objective(fn, [layer], f"diversity({layer})")


# ---- penalties: positive amounts, subtract them ----


def l1(layer: str = IMAGE, constant: float = 0.0, *, batch: int | None = None) -> Objective:
    """``mean |A[b] - c|`` (a penalty: subtract it)."""
    return _make(
        lambda a: (a[layer] - constant).abs().flatten(1).mean(1),
        [layer],
        f"l1({layer})",
        batch,
    )


def l2(layer: str = IMAGE, constant: float = 0.0, *, batch: int | None = None) -> Objective:
    """``mean (A[b] - c)²`` (a penalty: subtract it)."""
    return _make(
        lambda a: (a[layer] - constant).pow(2).flatten(1).mean(1),
        [layer],
        f"l2({layer})",
        batch,
    )


def total_variation(layer: str = IMAGE, *, batch: int | None = None) -> Objective:
    """Anisotropic total variation ``mean|x[.., y+1, x] - x[.., y, x]| + mean|x[.., x+1] -
    x[.., x]|`` (a penalty: subtract it)."""

    def fn(a):
        t = a[layer]
        dy = (t[..., 1:, :] - t[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (t[..., :, 1:] - t[..., :, :-1]).abs().flatten(1).mean(1)
        return dx + dy

    return _make(fn, [layer], f"tv({layer})", batch)


def blur(layer: str = IMAGE, sigma: float = 1.0, *, batch: int | None = None) -> Objective:
    """``0.5 · mean (x - stopgrad(blur_σ(x)))²`` (a penalty: subtract it). Its gradient
    ``x - blur(x)`` pulls each step towards a blurred copy, as Lucid's
    ``blur_input_each_step``."""

    def fn(a):
        t = a[layer]
        return 0.5 * (t - gaussian_blur(t, sigma).detach()).pow(2).flatten(1).mean(1)

    return _make(fn, [layer], f"blur({layer}, σ={sigma:g})", batch)


def frequency(layer: str = IMAGE, power: float = 2.0, *, batch: int | None = None) -> Objective:
    """High-frequency energy of the image (a penalty: subtract it):
    ``Σ_f (|f| / f_max)^p · |X̂(f)|² / (C·H·W)`` over the **full** spectrum, with ``X̂``
    the orthonormal 2-D DFT of each channel minus its mean, ``|f| = √(f_y² + f_x²)`` in
    cycles per pixel and ``f_max = √0.5``. Isotropic: an image and its transpose score
    the same. Zero for a constant image; 1 for a ±1 checkerboard (all energy at
    ``f_max``); ``(|f| / f_max)^p · a² / 2`` for a sinusoid of amplitude ``a``.
    """

    def fn(a):
        t = a[layer]
        h, w = t.shape[-2:]
        spec = torch.fft.fft2(t - t.mean(dim=(-2, -1), keepdim=True), norm="ortho")
        fy = torch.fft.fftfreq(h, device=t.device, dtype=t.dtype)[:, None]
        fx = torch.fft.fftfreq(w, device=t.device, dtype=t.dtype)[None, :]
        weight = ((fy**2 + fx**2) / 0.5) ** (power / 2)
        energy = spec.abs().pow(2) * weight
        return energy.flatten(1).sum(1) / (t[0].numel())

    return _make(fn, [layer], f"frequency({layer})", batch)


def reference_l2(
    reference: torch.Tensor, layer: str = IMAGE, *, batch: int | None = None
) -> Objective:
    """``mean (x[b] - r)²`` for a reference image ``r`` ((C, H, W) or (B, C, H, W)), a
    penalty: subtract it to pull the image towards ``r`` (seed 001's class-mean prior)."""
    ref = torch.as_tensor(reference)

    def fn(a):
        t = a[layer]
        r = ref.to(device=t.device, dtype=t.dtype)
        return (t - r).pow(2).flatten(1).mean(1)

    return _make(fn, [layer], f"l2_to_reference({layer})", batch)


def one_per_item(objectives: Sequence[Objective]) -> Objective:
    """One batch for many units: item ``i`` maximizes ``objectives[i]``, which sees item
    ``i``'s activations only (a batch of one). Render it with a batch of
    ``len(objectives)``; building and evaluating it take time linear in the count."""
    objectives = list(objectives)
    for o in objectives:
        if not isinstance(o, Objective):
            raise TypeError(f"one_per_item takes Objectives, not {type(o).__name__}")
    if not objectives:
        raise ValueError("one_per_item needs at least one objective")
    n = len(objectives)

    def fn(a):
        b = next(_tensors(a)).shape[0]
        if b != n:
            raise ValueError(f"one_per_item has {n} objectives for a batch of {b}; use batch={n}")
        # unbind: one autograd node per layer (slicing per item would make the backward
        # pass add n full-size gradients, quadratic in n); other outputs are sliced
        unbound = {k: v.unbind(0) for k, v in a.items() if isinstance(v, torch.Tensor)}
        values = []
        for i, o in enumerate(objectives):
            item = type(a)(
                {k: unbound[k][i].unsqueeze(0) if k in unbound else _item(v, i)
                 for k, v in a.items()}
            )  # fmt: skip
            if hasattr(a, "__dict__"):
                item.__dict__.update(a.__dict__)  # Activations' info, grads, output
            values.append(o(item))
        return torch.cat(values)

    layers = [name for o in objectives for name in o.layers]
    return Objective(fn, layers, " | ".join(o.name for o in objectives))


def _tensors(value):
    """The tensors in an activation (a tensor, or a model output such as a dict)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)


def _item(value, i: int):
    """Item ``i`` (a batch of one) of a structured model output (dict, list, tuple)."""
    if isinstance(value, torch.Tensor):
        return value[i : i + 1]
    if isinstance(value, Mapping):
        items = {k: _item(v, i) for k, v in value.items()}
        try:
            return type(value)(items)
        except TypeError:
            return items
    if hasattr(value, "_fields"):  # named tuple
        return type(value)(*(_item(v, i) for v in value))
    if isinstance(value, list | tuple):
        return type(value)(_item(v, i) for v in value)
    return value
