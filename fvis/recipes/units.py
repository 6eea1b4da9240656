"""Units from short strings: what one image maximizes.

==========================  =====================================================
spec                        unit
==========================  =====================================================
``conv3[5]``                channel 5 of ``conv3``, mean over positions
``conv3[0-7]``              channels 0…7, one unit each (also ``conv3[0,3,9]``;
                            ``conv3[*]`` every channel)
``conv3[5]@(4,3)``          neuron: channel 5 at column x = 4, row y = 3
``conv3[5]@center``         neuron at the centre (``y = H // 2``, ``x = W // 2``)
``class[3]``                class logit 3; a label (``class[cat]``), a range, ``*``
``-conv3[5]``               any unit negated: minimized (its "negative")
``conv3{3:1,7:-0.5}``       direction in channel space: ``Σ_c w_c A[c]``, mean over
                            positions (``@(x,y)`` for one position)
``deepdream(conv3)``        the whole layer, ``mean A²`` (DeepDream)
==========================  =====================================================

The layer part is a layer name of :mod:`fvis.hooks` unchanged, so a reused module's
per-call names work: ``layer1.0.relu:1[5]`` is channel 5 of the second call. Brackets
say "which unit", so ``:k`` keeps its one meaning (the k-th call); Lucent's
``layer:channel`` habit (``conv3:5``) is refused with the bracketed spelling.
Several specs may be given in one string, separated by spaces.

``str(unit)`` is the canonical spec: ``parse_unit(str(u)) == u``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from fvis import objectives as O
from fvis.hooks import OUTPUT

__all__ = ["Unit", "UnitError", "parse_unit", "parse_units", "KINDS"]

KINDS = ("channel", "neuron", "class", "direction", "layer")

_SPEC = re.compile(
    r"""^(?P<neg>-)?(?:
        deepdream\((?P<dream>[^()\[\]{}@\s]+)\)
      | (?P<layer>[^()\[\]{}@\s]+)
        (?: \[(?P<items>[^\[\]]*)\] | \{(?P<weights>[^{}]*)\} )
        (?: @(?P<pos>center|\(\s*\d+\s*,\s*\d+\s*\)) )?
    )$""",
    re.VERBOSE,
)
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


class UnitError(ValueError):
    """A unit spec that cannot be read (the message says how to write it)."""


_HOW = (
    "write a unit as conv3[5] (channel), conv3[0-7] (range), conv3[5]@(x,y) (neuron), "
    "class[3] (class), -conv3[5] (minimized) or conv3{5:1,7:-1} (direction)"
)


@dataclass(frozen=True)
class Unit:
    """One unit: ``kind`` (:data:`KINDS`), ``layer`` (``"output"`` for classes),
    ``index`` (channel, or class index or label), ``position`` ``(x, y)`` of a neuron
    (``None``: the centre), ``weights`` ``((channel, w), …)`` of a direction, and
    ``negative`` (minimize)."""

    kind: str
    layer: str
    index: int | str | None = None
    position: tuple[int, int] | None = None
    weights: tuple[tuple[int, float], ...] = ()
    negative: bool = False

    def __str__(self) -> str:
        sign = "-" if self.negative else ""
        if self.kind == "layer":
            return f"{sign}deepdream({self.layer})"
        if self.kind == "class":
            return f"{sign}class[{self.index}]"
        if self.kind == "direction":
            body = ",".join(f"{c}:{_number(w)}" for c, w in self.weights)
            body = f"{self.layer}{{{body}}}"
        else:
            body = f"{self.layer}[{self.index}]"
        if self.kind == "neuron" or (self.kind == "direction" and self.position is not None):
            body += (
                "@center" if self.position is None else f"@({self.position[0]},{self.position[1]})"
            )
        return sign + body

    def __neg__(self) -> Unit:
        return Unit(self.kind, self.layer, self.index, self.position, self.weights,
                    not self.negative)  # fmt: skip

    @property
    def channel(self) -> int | None:
        """The channel (or class index) this unit reads, if it reads one."""
        return self.index if isinstance(self.index, int) else None

    def objective(self, labels=None) -> O.Objective:
        """The objective (maximized; negated for a negative unit). ``labels``: the model's
        class labels, to resolve ``class[name]`` (else the objective resolves it)."""
        if self.kind == "class":
            k = self.index
            if isinstance(k, str) and labels is not None:
                k = list(labels).index(k) if k in labels else k
            obj = O.class_logit(k)
        elif self.kind == "channel":
            obj = O.channel(self.layer, self.index)
        elif self.kind == "neuron":
            x, y = self.position or (None, None)
            obj = O.neuron(self.layer, self.index, x, y)
        elif self.kind == "direction":
            obj = _sparse_direction(self.layer, self.weights, self.position)
        else:
            obj = O.layer(self.layer)
        obj = -obj if self.negative else obj
        obj.name = str(self)
        return obj


def _number(w: float) -> str:
    """``w`` as short as reads back exactly: ``1``, ``-0.5``, ``1000001.0``."""
    short = f"{w:g}"
    return short if float(short) == w else repr(w)


def _sparse_direction(layer, weights, position) -> O.Objective:
    """``Σ_c w_c A[:, c]`` over the listed channels (the dot product with a direction
    that is zero elsewhere), mean over positions or at ``position`` (x, y)."""
    idx = [c for c, _ in weights]
    w = [v for _, v in weights]

    def fn(a):
        t = O.grid(a, layer)
        channels = t.shape[1] if t.dim() > 1 else 1
        if max(idx) >= channels:
            raise IndexError(
                f"direction uses channel {max(idx)} but layer {layer!r} has {channels} "
                f"channels (valid: 0..{channels - 1})"
            )
        vec = t.new_tensor(w).view((1, -1) + (1,) * (t.dim() - 2))
        d = (t[:, idx] * vec).sum(1)
        if d.dim() == 1:
            return d
        if position is None:
            return d.flatten(1).mean(1)
        x, y = position
        return d[:, y, x]

    return O.Objective(fn, [layer], f"direction({layer})")


def _int(text: str, what: str, spec: str) -> int:
    text = text.strip()
    if text.startswith("-") and text[1:].isdigit():
        raise UnitError(
            f"unit {spec!r}: {what} {text} is negative; {what}s count from 0 "
            f"(to minimize a unit, put '-' in front of the whole spec: -{spec.lstrip('-')})"
        )
    if not text.isdigit():
        raise UnitError(f"unit {spec!r}: {what} {text!r} is not a whole number; {_HOW}")
    return int(text)


def _items(text: str, spec: str, kind: str, count: int | None, labels) -> list[int | str]:
    """``5``, ``0-7``, ``0,3,9``, ``*`` (needs ``count``), or class labels."""
    what = "class" if kind == "class" else "channel"
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise UnitError(f"unit {spec!r}: empty {what} in [{text}]; {_HOW}")
        m = _RANGE.match(part)
        if part == "*":
            if count is None:
                raise UnitError(f"unit {spec!r}: '*' (every {what}) needs the model to count them")
            out.extend(range(count))
        elif m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise UnitError(f"unit {spec!r}: range {part} runs backwards; write {b}-{a}")
            if count is not None and b >= count:
                raise UnitError(  # the first unit out of range, before the range is built
                    f"unit {spec!r}: {what} {max(a, count)} is out of range (valid: 0..{count - 1})"
                )
            _check_many(len(out) + b - a + 1, spec)
            out.extend(range(a, b + 1))
        elif kind == "class" and not part.lstrip("-").isdigit():
            if labels is not None and part not in labels:
                hint = _labels_hint(part, labels)
                raise UnitError(f"unit {spec!r}: no class named {part!r}; {hint}")
            out.append(part)
        else:
            out.append(_int(part, what, spec))
    for k in out:
        if isinstance(k, int) and count is not None and k >= count:
            raise UnitError(f"unit {spec!r}: {what} {k} is out of range (valid: 0..{count - 1})")
    return out


def parse_units(text: str, *, count=None, labels=None) -> list[Unit]:
    """Every unit a spec string names (see the module docstring), in order.

    ``count``: ``layer -> number of channels`` (the features of the layer's layout; a
    callable; ``"output"`` counts the classes), needed for ``*`` and used to check
    ranges. ``labels``: the model's class labels, to check ``class[name]``. Raises
    :class:`UnitError` with the correct spelling, and for more than one render's batch
    of units (:data:`fvis.param.MAX_BATCH`).
    """
    specs = text.split()
    if not specs:
        raise UnitError(f"no unit given; {_HOW}")
    units: list[Unit] = []
    for spec in specs:
        units += _parse_one(spec, count, labels)
        _check_many(len(units), text)
    return units


def _check_many(n: int, spec: str) -> None:
    """Refuse more units than one render's batch holds (before building them)."""
    from fvis.param import MAX_BATCH

    if n > MAX_BATCH:
        raise UnitError(
            f"unit {spec!r} names {n} units; one render takes 1..{MAX_BATCH} (split the range)"
        )


def parse_unit(text: str, *, count=None, labels=None) -> Unit:
    """The one unit ``text`` names (a range or list is refused)."""
    units = parse_units(text, count=count, labels=labels)
    if len(units) != 1:
        raise UnitError(f"{text!r} names {len(units)} units; give one")
    return units[0]


def _parse_one(spec: str, count, labels) -> list[Unit]:
    m = _SPEC.match(spec)
    if m is None:
        raise UnitError(_diagnose(spec))
    neg = bool(m.group("neg"))
    if m.group("dream"):
        return [Unit("layer", m.group("dream"), negative=neg)]
    layer = m.group("layer")
    pos = m.group("pos")
    position = None
    if pos and pos != "center":
        x, y = (int(v) for v in pos.strip("()").split(","))
        position = (x, y)
    if m.group("weights") is not None:
        weights = []
        for part in m.group("weights").split(","):
            c, sep, w = part.partition(":")
            if not sep:
                raise UnitError(
                    f"unit {spec!r}: a direction lists channel:weight pairs, e.g. "
                    f"{layer}{{3:1,7:-0.5}}"
                )
            try:
                wf = float(w)
            except ValueError:
                raise UnitError(f"unit {spec!r}: weight {w!r} is not a number") from None
            if wf != wf or wf in (float("inf"), float("-inf")):
                raise UnitError(f"unit {spec!r}: weight {w!r} is not finite")
            weights.append((_int(c, "channel", spec), wf))
        n = count(layer) if count else None
        for c, _ in weights:
            if n is not None and c >= n:
                raise UnitError(f"unit {spec!r}: channel {c} is out of range (valid: 0..{n - 1})")
        return [Unit("direction", layer, None, position, tuple(weights), neg)]
    is_class = layer == "class"
    kind = "class" if is_class else ("neuron" if pos else "channel")
    if is_class and pos:
        raise UnitError(f"unit {spec!r}: a class has no position")
    n = count(OUTPUT if is_class else layer) if count else None
    items = _items(m.group("items"), spec, kind, n, labels)
    return [Unit(kind, OUTPUT if is_class else layer, k, position, (), neg) for k in items]


def _diagnose(spec: str) -> str:
    base, sep, idx = spec.lstrip("-").rpartition(":")
    if sep and idx.isdigit() and "[" not in spec and "{" not in spec:
        return (
            f"unit {spec!r}: write channel {idx} of {base} as {base}[{idx}] (Lucent's "
            f"'layer:channel' is not fvis's: ':{idx}' names the call of a module that runs "
            f"more than once, e.g. layer1.0.relu:1[5] is channel 5 of its second call)"
        )
    if re.fullmatch(r"[\w.:]+", spec.lstrip("-")):
        return f"unit {spec!r} names a layer but no unit; {_HOW}"
    return f"cannot read unit {spec!r}; {_HOW}"


def _labels_hint(name: str, labels) -> str:
    """What to write instead of an unknown class name: every label of a short list, else
    the nearest ones, else the index range."""
    labels = [str(x) for x in labels]
    if len(labels) <= 12:
        return f"the labels are {', '.join(labels)}"
    near = difflib.get_close_matches(name, labels, n=5, cutoff=0.5)
    near = near or [x for x in labels if name.lower() in x.lower()][:5]
    if near:
        return f"nearest: {', '.join(near)}"
    return f"give an index 0..{len(labels) - 1} or one of the model's {len(labels)} labels"
