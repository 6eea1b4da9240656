"""The session's one background job on the page: start it, watch it, collect it.

A job is either a render of the Render view (``kind="render"``, finished results go to
the history) or a unit rendered on demand (``kind="unit"``, added to the gallery). While
it runs, :func:`progress` redraws the progress bar, the latest intermediate images and
the objective curve every :data:`POLL_S` seconds; *cancel* stops it at the next step.
"""

from __future__ import annotations

import streamlit as st

from fvis.image import grid
from fvis_studio import history
from fvis_studio.jobs import Job
from fvis_studio.tiles import TILE_PX, image

POLL_S = 0.3  # how often the page redraws a running job (each redraw sends one PNG)
FIRST_WAIT_S = 0.8  # the run that starts a job waits this long for its first image


def start(work_and_steps, **info) -> Job:
    """Start ``work(callback)`` (``work_and_steps = (work, steps)``), cancelling a job still
    running in this session."""
    old = st.session_state.job
    if old is not None and old.running:
        old.cancel()
    work, steps = work_and_steps
    job = st.session_state.job = Job(work, steps, **info)
    # the first intermediate image then goes out with this run, not one poll later
    job.wait_preview(FIRST_WAIT_S)
    return job


@st.fragment(run_every=POLL_S)
def progress() -> None:
    """The running job's progress; a full rerun once it has finished."""
    job = st.session_state.job
    if job is None:
        return
    if not job.running:
        st.rerun()  # collect it outside this fragment
    st.progress(job.step / job.total, text=f"step {job.step} of {job.total}")
    st.button("cancel", key="cancel", on_click=job.cancel)
    if job.preview is not None:
        names = job.info.get("names") or []
        what = " ".join(names) if len(names) == len(job.preview) else f"{len(job.preview)} images"
        image(preview(job.preview), f"step {job.preview_step}: {what}")
    if job.curve:
        st.line_chart(job.curve, height=160, x_label="step", y_label="mean objective")


def preview(images):
    """The intermediate images as one picture, enlarged like the tiles."""
    return grid(images, ncol=min(len(images), 8), scale=max(1, TILE_PX // max(images.shape[-2:])))


def collect(ctx) -> None:
    """A finished job's result into the history or the gallery, its message onto the page."""
    job = st.session_state.job
    if job is None or job.running:
        return
    st.session_state.job = None
    if job.status == "cancelled":
        st.session_state.job_note = f"cancelled at step {job.step} of {job.total}"
    elif job.status == "failed":
        st.session_state.job_error = f"The render failed: {job.error}"
    elif job.info["kind"] == "render":
        result, units, scores = job.result
        history.add(job.info["model"], job.info["recipe"], result, units, scores, job.curve)
        st.session_state.job_note = f"rendered {job.total} steps"
    else:
        files, record = job.result
        job.info["gallery"].add(files, record, job.curve[: job.info["steps"]])
        st.session_state.job_note = f"{job.info['unit']} added to the gallery"


def messages() -> None:
    if msg := st.session_state.pop("job_error", None):
        st.error(msg)
    if msg := st.session_state.pop("job_note", None):
        st.caption(msg)
