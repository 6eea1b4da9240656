"""End to end in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
.ci/run; never a downloaded one) driven headless by Playwright, against the studio served
by streamlit on a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ALL_IMAGES_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The studio served on 127.0.0.1:PORT; yields its URL."""
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        FVIS_STUDIO_DIR=str(tmp_path_factory.mktemp("studio")),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "studio.py"),
        "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
        "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not start: {proc.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_studio_grid_to_unit_page_in_chromium(studio, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(studio)
    tile = page.get_by_role("button", name="conv1[3]", exact=True)
    tile.wait_for(timeout=60_000)
    tile.click()
    page.get_by_text("conv1[3] — unit 3 of conv1").wait_for(timeout=60_000)
    page.get_by_text("excite it most").wait_for(timeout=60_000)
    page.wait_for_function(f"document.images.length >= 12 && {ALL_IMAGES_LOADED}", timeout=30_000)
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert len(widths) >= 12 and min(widths) > 0
    assert errors == []
    page.close()
