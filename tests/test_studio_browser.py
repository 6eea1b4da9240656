"""End to end in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
.ci/run; never a downloaded one) driven headless by Playwright, against the studio served
by streamlit on a free local port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from fvis_studio import serve  # noqa: E402
from fvis_studio.gallery import PREBUILT  # noqa: E402  (the committed gallery)

ALL_IMAGES_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with serve.studio({"FVIS_STUDIO_DIR": str(tmp_path_factory.mktemp("studio"))}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with serve.chromium() as b:
        yield b


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


def test_static_gallery_opens_from_the_file_system(browser):
    """The committed gallery's pages, opened as files: index → a layer's grid → a unit
    page; every image of each loads (lazy images are scrolled into view first)."""
    (index,) = PREBUILT[0].glob("*/index.html")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    seen = 0
    for url in (index.as_uri(), (index.parent / "conv1" / "page-1.html").as_uri(),
                (index.parent / "conv1" / "0003.html").as_uri()):  # fmt: skip
        page.goto(url)
        page.evaluate("[...document.images].forEach(i => i.scrollIntoView())")
        page.wait_for_function(ALL_IMAGES_LOADED, timeout=30_000)
        seen += page.evaluate("document.images.length")
    assert seen >= 16 + 7  # a grid of conv1's 16 units, and a unit page's 7 pictures
    assert errors == []
    page.close()
