"""Screenshots of the studio for the README, and its latency on the bundled model.

    python scripts/studio_screenshots.py     # docs/studio_grid.png, docs/studio_unit.png

Serves the studio on a free local port and drives Debian's headless Chromium
(``/usr/bin/chromium``) with Playwright. Prints, for a fresh browser session on a
running server: the time from opening the page to the first unit image of the grid (a
fresh browser profile each try, and again with the browser's cache warm, as for a
returning visitor), and from clicking *render* to the first intermediate image (median
of ``--repeat`` tries).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps"))
from fvis_studio import serve  # noqa: E402

FIRST_TILE = "[...document.images].some(i => i.complete && i.naturalWidth > 0)"
VIEWPORT = {"width": 1360, "height": 900}
ALL_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


def shrink(path: str) -> None:
    """¾ size, 256 colours: a small PNG that keeps the heatmaps' colours."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def open_grid(browser, url):
    """A new page in ``browser`` (a browser: a fresh profile, nothing cached; or a
    context: a returning visitor) opened to the first unit image: (page, seconds)."""
    page = browser.new_page()
    page.set_viewport_size(VIEWPORT)
    t = time.perf_counter()
    page.goto(url)
    page.wait_for_function(FIRST_TILE, timeout=120_000)
    return page, time.perf_counter() - t


def first_preview(page) -> float:
    page.get_by_text("Render", exact=True).click()
    page.get_by_role("button", name="render", exact=True).wait_for(timeout=60_000)
    steps = page.get_by_label("steps").last
    steps.fill("2000")
    steps.press("Enter")
    time.sleep(0.5)
    t = time.perf_counter()
    page.get_by_role("button", name="render", exact=True).click()
    page.locator("[data-testid=stImage]").first.wait_for(timeout=300_000)
    took = time.perf_counter() - t
    page.get_by_role("button", name="cancel").click()
    page.get_by_text("cancelled at step").wait_for(timeout=60_000)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as store,
        serve.studio({"FVIS_STUDIO_DIR": store}) as url,
        serve.chromium() as browser,
    ):
        page, cold = open_grid(browser, url)
        page.get_by_text("conv3 · 64×14×14").click()
        page.get_by_role("button", name="conv3[63]", exact=True).wait_for(timeout=60_000)
        page.wait_for_function(ALL_LOADED, timeout=60_000)
        time.sleep(0.5)
        page.screenshot(path=f"{args.out}/studio_grid.png")
        page.get_by_role("button", name="conv3[1]", exact=True).click()
        page.get_by_text("excite it most").wait_for(timeout=60_000)
        page.wait_for_function(ALL_LOADED, timeout=60_000)
        time.sleep(0.5)
        page.set_viewport_size({"width": 1360, "height": 1500})
        time.sleep(1)
        page.screenshot(path=f"{args.out}/studio_unit.png")
        for name in ("studio_grid", "studio_unit"):
            shrink(f"{args.out}/{name}.png")
        page.close()
        grid, render = [], []
        for _ in range(args.repeat):
            page, took = open_grid(browser, url)
            grid.append(took)
            render.append(first_preview(page))
            page.close()
        returning = browser.new_context()  # one profile: Streamlit's scripts cached
        open_grid(returning, url)[0].close()
        warm = []
        for _ in range(args.repeat):
            page, took = open_grid(returning, url)
            warm.append(took)
            page.close()
    print(f"first open (server cold): {cold:.2f} s to the first unit image")
    if not grid:
        return 0
    print(f"open → first unit image: median {statistics.median(grid):.2f} s of {grid}")
    print(f"  the same, browser cache warm: median {statistics.median(warm):.2f} s of {warm}")
    print(
        f"render → first intermediate image: median {statistics.median(render):.2f} s of {render}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
