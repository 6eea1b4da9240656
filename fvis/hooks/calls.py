"""The call tracker: which call of which module is running now.

A forward pre-hook on every module pushes ``(layer name, module)``, a forward hook pops
it, so :meth:`CallTracker.current` names the innermost running module call, with
``":k"`` for the k-th call of a module that runs several times in one forward pass
(names as :mod:`fvis.hooks.names` gives them).
"""

from __future__ import annotations

from collections import Counter

from torch import Tensor, nn

from fvis.hooks.names import trace

__all__ = ["CallTracker"]


class CallTracker:
    """Keeps the stack of running modules (forward pre-hook pushes, forward hook pops)."""

    def __init__(self, model: nn.Module, x: Tensor):
        tr = trace(model, x)  # before any hook: per-module call counts, cached
        self.multi = {n for n, calls in tr.calls.items() if len(calls) > 1}
        self.names: dict[int, str] = {}
        self.modules: list[nn.Module] = []
        for n, m in model.named_modules():
            self.names.setdefault(id(m), n)
            self.modules.append(m)
        self.counts: Counter = Counter()
        self.stack: list[tuple[str, nn.Module]] = []

    def pre(self, module, inputs):
        n = self.names[id(module)]
        k = self.counts[n]
        self.counts[n] += 1
        self.stack.append((f"{n}:{k}" if n in self.multi else n, module))

    def post(self, module, inputs, output):
        if self.stack:
            self.stack.pop()

    def current(self) -> tuple[str, nn.Module | None]:
        return self.stack[-1] if self.stack else ("", None)
