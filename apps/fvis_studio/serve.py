"""The studio as a local server and a headless browser on it: for the browser test, the
README's screenshots and the latency measurement (``python -m fvis_studio.serve``).

The browser is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright; nothing
downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "studio.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def studio(env: dict | None = None, timeout: float = 60):
    """Serve the studio on 127.0.0.1 at a free port; yields its URL. ``env`` adds to the
    environment (e.g. ``FVIS_STUDIO_DIR``)."""
    port = free_port()
    root = str(APP.parents[1])
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [root, full.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless=true",
        f"--server.port={port}", "--server.address=127.0.0.1",
        "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
    ]  # fmt: skip
    with server(cmd, f"http://127.0.0.1:{port}", "/_stcore/health", full, timeout) as url:
        yield url


@contextlib.contextmanager
def server(cmd: list[str], url: str, health: str, env: dict | None = None, timeout: float = 60):
    """Run ``cmd`` until ``url + health`` answers; yields ``url``; stops it on exit. Its
    stderr goes to a temporary file, not a pipe: a pipe nobody reads fills (64 KiB) and
    blocks the server; the file's tail is the error when the server does not start."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(url + health, timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        proc.wait()
                        err.seek(max(0, err.seek(0, os.SEEK_END) - 2000))
                        tail = err.read().decode(errors="replace")
                        raise RuntimeError(f"{' '.join(cmd[:4])} did not start: {tail}") from None
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def chromium():
    """Playwright's handle on Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
