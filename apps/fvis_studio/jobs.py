"""Renders that run beside the page: live progress, intermediate images, cancel.

A Streamlit script reruns from the top on every click, so work done inside the script
is cut short (or sees its controls change) whenever the user touches anything. A
:class:`Job` runs its work in a thread instead, with every input fixed when it starts;
the page only reads the job's state and may ask it to stop. The work receives
:meth:`Job.step_done` as ``fvis.render``'s ``callback``, so the stop takes effect at the
next optimizer step, and ``render`` restores the model and removes its hooks on the way
out.

>>> job = Job(lambda cb: fvis.render(model, objective, steps=256, callback=cb), 256)
>>> job.step, job.preview, job.status     # read from the page while it runs
>>> job.cancel(); job.wait()
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Cancelled", "Job", "NonFinite"]

PREVIEW_EVERY_S = 0.1  # copy an intermediate image at most this often (cheap on CPU, a sync on GPU)


class Cancelled(Exception):
    """Raised inside the render by the job's callback once the user pressed cancel."""


class NonFinite(ArithmeticError):
    """The objective became NaN or infinite while optimizing."""


class Job:
    """``work(callback)`` running in a daemon thread; ``total`` steps are expected.

    State read by the page (no lock: each field is replaced whole or appended to):
    ``step`` (last finished step), ``preview`` ((B, C, H, W) images of a recent step, CPU),
    ``preview_step``, ``curve`` (mean objective per step), ``status`` (``"running"``,
    ``"done"``, ``"cancelled"``, ``"failed"``), ``error`` (one line, when failed),
    ``result`` (what ``work`` returned), ``first_preview_s`` (seconds from start to the
    first intermediate image).
    """

    def __init__(self, work: Callable[[Callable], Any], total: int, **info):
        self.total, self.info = int(total), info
        self.step, self.preview, self.preview_step = 0, None, 0
        self.curve: list[float] = []
        self.status, self.error, self.result = "running", None, None
        self.first_preview_s: float | None = None
        self._stop = threading.Event()
        self._previewed = threading.Event()  # set at the first intermediate image (or the end)
        self._last_preview = -math.inf
        self._work = work
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="fvis-studio-job", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self.status == "running"

    def cancel(self) -> None:
        """Ask the render to stop at its next step."""
        self._stop.set()

    def wait_preview(self, timeout: float) -> bool:
        """Block until the first intermediate image exists (or the job ended); False if
        ``timeout`` passed first."""
        return self._previewed.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished; False if ``timeout`` passed first."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def step_done(self, step: int, images: torch.Tensor, values: torch.Tensor) -> None:
        """``fvis.render`` callback: record progress, refuse NaN, honour cancel."""
        if self._stop.is_set():
            raise Cancelled
        if not bool(torch.isfinite(values).all()):
            raise NonFinite(
                f"the objective became {values.flatten()[~torch.isfinite(values.flatten())][0]:g}"
                f" at step {step} of {self.total}: lower the learning rate or check the "
                "model's weights"
            )
        self.curve.append(float(values.mean()))
        now = time.perf_counter()
        if now - self._last_preview >= PREVIEW_EVERY_S or step == self.total:
            self._last_preview = now
            self.preview, self.preview_step = images.cpu(), step
            if self.first_preview_s is None:
                self.first_preview_s = now - self.started
                self._previewed.set()
        self.step = step

    def _run(self) -> None:
        try:
            self.result = self._work(self.step_done)
            self.status = "done"
        except Cancelled:
            self.status = "cancelled"
        except Exception as e:  # shown in the page; the session stays usable
            self.error = str(e) or type(e).__name__
            self.status = "failed"
        finally:
            self._previewed.set()
