"""A minimal progress bar on stderr (shown only on a terminal, or when forced)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "render") as p: p.update(step, "obj=1.23")``."""

    def __init__(self, total: int, desc: str = "", enabled: bool | None = True, stream=None):
        self.total, self.desc = total, desc
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = bool(enabled) and (isatty or enabled == "always")
        self.start = self._last = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def update(self, n: int, postfix: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if n < self.total and now - self._last < 0.1:
            return
        self._last = now
        frac = n / max(self.total, 1)
        bar = "█" * int(24 * frac) + "·" * (24 - int(24 * frac))
        rate = n / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.desc} {bar} {n}/{self.total} {rate:5.1f} it/s {postfix}  ")
        self.stream.flush()

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
