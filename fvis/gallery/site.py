"""The gallery's static site: plain HTML and one stylesheet, relative links only, so it
opens from the file system. Every name printed is escaped; images load lazily; a
layer's grid is split into pages of :data:`fvis.gallery.layout.PER_PAGE` units."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote

from fvis.gallery import layout
from fvis.io import atomic_write_text

__all__ = ["write"]

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
a{color:#0645ad;text-decoration:none}a:hover{text-decoration:underline}
nav{margin:.5em 0 1em}nav a{margin-right:1em}
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}
.grid{display:flex;flex-wrap:wrap;gap:6px}
.tile{width:96px;text-align:center;font-size:12px}
.tile img,.big img{image-rendering:pixelated;width:96px;height:96px;object-fit:contain;
background:#eee}
.tile .none{display:block;width:96px;height:96px;background:#f4f4f4;color:#999;line-height:96px}
.big img{width:192px;height:192px}
.strip img{image-rendering:pixelated;height:96px;max-width:100%}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figcaption{font-size:12px;color:#555}
pre{background:#f6f6f6;padding:.8em;font-size:12px;white-space:pre-wrap}
.values{font-size:12px;color:#555}
"""


def _href(path: str) -> str:
    return escape(quote(path), quote=True)


def _page(title: str, body: str, css: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width">'
        f"<title>{escape(title)}</title>"
        f'<link rel="stylesheet" href="{_href(css)}">\n<body>{body}</body></html>\n'
    )


def _unit_title(u: dict) -> str:
    return u["unit"] + (f" ({u['label']})" if u.get("label") else "")


def write(out: Path, root: Path, manifest: dict) -> None:
    """Write the manifest, the pages of the gallery in ``root`` and the folder's index."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    atomic_write_text(text, root / "manifest.json")
    atomic_write_text(CSS, root / "style.css")
    done = {u["unit"]: u for u in manifest["units"]}
    model = manifest["model"]["spec"]
    rows = []
    for layer in manifest["layers"]:
        pages = max(1, -(-len(layer["units"]) // layout.PER_PAGE))
        folder = layer["folder"]
        for p in range(pages):
            chunk = layer["units"][p * layout.PER_PAGE : (p + 1) * layout.PER_PAGE]
            _grid_page(root, manifest, layer, chunk, p + 1, pages, done)
        for i, spec in enumerate(layer["units"]):
            if spec in done:
                prev = layer["units"][i - 1] if i else None
                nxt = layer["units"][i + 1] if i + 1 < len(layer["units"]) else None
                _unit_page(root, manifest, layer, done[spec], prev, nxt, i // layout.PER_PAGE + 1)
        shape = "×".join(map(str, layer["shape"]))
        rows.append(
            f'<tr><td><a href="{_href(folder)}/page-1.html">{escape(layer["name"])}</a></td>'
            f"<td>{escape(layer['type'])}</td><td>{escape(shape)}</td>"
            f"<td>{layer['done']} / {len(layer['units'])}</td></tr>"
        )
    r = manifest["recipe"]
    settings = (
        f"{r['render']['steps']} steps, {escape(r['render']['param'])}, tv {r['render']['tv']:g}, "
        f"batch {r['batch']}, {manifest['build']['threads']} thread(s) on "
        f"{escape(manifest['build']['device'])}, torch {escape(manifest['build']['torch'])}"
    )
    body = (
        f'<nav><a href="../index.html">all galleries</a></nav>'
        f"<h1>{escape(model)}</h1><p>gallery {escape(manifest['key'])}: {settings}. "
        f'<a href="manifest.json">manifest.json</a></p>'
        f"<table><tr><th>layer</th><th>type</th><th>shape</th><th>units</th></tr>"
        f"{''.join(rows)}</table>"
    )
    atomic_write_text(_page(f"fvis gallery: {model}", body, "style.css"), root / "index.html")
    _folder_index(out)


def _grid_page(root, manifest, layer, chunk, page, pages, done) -> None:
    folder = layer["folder"]
    tiles = []
    for spec in chunk:
        u = done.get(spec)
        if u is None:
            tiles.append(f'<div class="tile"><span class="none">not yet</span>{escape(spec)}</div>')
            continue
        name = f"{u['index']:04d}.html"
        src = u["images"]["positive"].split("/", 1)[1]
        value = u["objective"]["positive"]
        tiles.append(
            f'<div class="tile"><a href="{_href(name)}"><img loading="lazy" '
            f'src="{_href(src)}" alt="{escape(spec, quote=True)}"><br>{escape(_unit_title(u))}'
            f"</a><br><span class=values>{value:.3g}</span></div>"
        )
    links = " ".join(
        f'<a href="page-{p}.html">{p}</a>' if p != page else f"<b>{p}</b>"
        for p in range(1, pages + 1)
    )
    body = (
        f'<nav><a href="../index.html">layers</a> pages: {links}</nav>'
        f"<h1>{escape(layer['name'])}</h1><p>{escape(manifest['model']['spec'])}, "
        f"{len(layer['units'])} units, page {page} of {pages}</p>"
        f'<div class="grid">{"".join(tiles)}</div>'
    )
    title = f"{layer['name']} — fvis gallery"
    atomic_write_text(_page(title, body, "../style.css"), root / folder / f"page-{page}.html")


def _figure(src: str, caption: str, cls: str = "big") -> str:
    return (
        f'<figure class="{cls}"><img loading="lazy" src="{_href(src)}" '
        f'alt="{escape(caption, quote=True)}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def _curve_svg(values: list[float], width: int = 360, height: int = 120) -> str:
    """The objective per step as an inline SVG polyline (no script, no external file)."""
    lo, hi = min(values), max(values)
    span, last = (hi - lo) or 1.0, max(len(values) - 1, 1)
    points = " ".join(
        f"{4 + i * (width - 8) / last:.1f},{height - 14 - (v - lo) * (height - 22) / span:.1f}"
        for i, v in enumerate(values)
    )
    label = f"steps 1–{len(values)}: {values[0]:.4g} → {values[-1]:.4g} (max {hi:.4g})"
    return (
        f'<figure><svg width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label, quote=True)}"><polyline fill="none" stroke="#36c" '
        f'stroke-width="1.5" points="{points}"/></svg><figcaption>{escape(label)}'
        "</figcaption></figure>"
    )


def _unit_page(root, manifest, layer, u, prev, nxt, page) -> None:
    images = {k: v.split("/", 1)[1] for k, v in u["images"].items()}
    obj = u["objective"]
    spec = u["unit"]
    parts = [_figure(images["positive"], f"maximized: {spec} = {obj['positive']:.4g}")]
    if "negative" in images:  # recorded as the value of -unit: shown as the unit's
        caption = f"minimized: {spec} = {-obj['negative']:.4g}"
        parts.append(_figure(images["negative"], caption))
    if "codespace" in images:
        caption = f"in the generator's code space: {obj['codespace']:.4g}"
        parts.append(_figure(images["codespace"], caption))
    sections = [f"<section>{''.join(parts)}</section>"]
    if u.get("curve"):
        curve = _curve_svg(u["curve"])
        sections.append(f"<h2>Objective while optimizing</h2>{curve}<p>the optimized objective: "
                        "on a randomly transformed image, penalties subtracted</p>")  # fmt: skip
    if "diversity" in images:
        values = ", ".join(f"{v:.3g}" for v in obj["diversity"])
        caption = f"{spec} on each: {values}"
        sections.append(f"<h2>Diversity</h2>{_figure(images['diversity'], caption, 'strip')}")
    if "examples" in u:
        for side, title in (
            ("top", "Dataset examples that excite it most"),
            ("bottom", "… and least"),
        ):
            rank = manifest["recipe"]["rank"]
            values = f"{rank} activation: " + ", ".join(
                f"#{e['index']}: {e['value']:.3g}" for e in u["examples"][side]
            )
            sections.append(
                f"<h2>{title}</h2>{_figure(images[side], values, 'strip')}<br>"
                f"{_figure(images[side + '_maps'], 'where the unit fires', 'strip')}"
            )
    rows = []
    for name, r in u["renders"].items():
        recipe = manifest["recipes"][r["recipe"]]
        own = {k: v for k, v in recipe.items() if k not in ("units", "seeds")}
        own["units"] = [recipe["units"][i // recipe["repeat"]] for i in r["items"]]
        own["seeds"] = [recipe["seeds"][i] for i in r["items"]]
        rows.append(
            f"<h3>{escape(name)}</h3><p>recipe {escape(r['recipe'][:12])}…: items "
            f"{escape(str(r['items']))} of a batch of {len(recipe['units'])} (the whole "
            f'recipe is in <a href="../manifest.json">manifest.json</a>)</p>'
            f"<pre>{escape(json.dumps(own, sort_keys=True))}</pre>"
        )
    sections.append(f"<h2>Recipes</h2>{''.join(rows)}")
    nav = [f'<a href="page-{page}.html">{escape(layer["name"])}</a>']
    for link, text in ((prev, "← previous"), (nxt, "next →")):
        if link is not None:
            index = link.rsplit("[", 1)[1].rstrip("]")
            nav.append(f'<a href="{int(index):04d}.html">{text}</a>')
    body = (
        f'<nav><a href="../index.html">layers</a>{"".join(nav)}</nav>'
        f"<h1>{escape(_unit_title(u))}</h1><p>{escape(manifest['model']['spec'])}</p>"
        + "".join(sections)
    )
    path = root / layer["folder"] / f"{u['index']:04d}.html"
    atomic_write_text(_page(f"{_unit_title(u)} — fvis gallery", body, "../style.css"), path)


def _folder_index(out: Path) -> None:
    """``out/index.html`` and ``out/galleries.json``: every gallery in the folder."""
    rows, listing = [], {}
    for manifest_path in sorted(out.glob("*/manifest.json")):
        m = json.loads(manifest_path.read_text())
        key = manifest_path.parent.name
        listing[key] = {k: m[k] for k in ("model", "recipe", "build")}
        done = sum(layer["done"] for layer in m["layers"])
        total = sum(len(layer["units"]) for layer in m["layers"])
        layers = ", ".join(
            f'<a href="{_href(key)}/{_href(layer["folder"])}/page-1.html">'
            f"{escape(layer['name'])}</a>"
            for layer in m["layers"]
        )
        rows.append(
            f'<tr><td><a href="{_href(key)}/index.html">{escape(key)}</a></td>'
            f"<td>{escape(m['model']['spec'])}</td><td>{layers}</td><td>{done} / {total}</td></tr>"
        )
    atomic_write_text(json.dumps(listing, sort_keys=True, indent=1), out / "galleries.json")
    body = (
        "<h1>fvis galleries</h1><table><tr><th>gallery</th><th>model</th><th>layers</th>"
        f"<th>units</th></tr>{''.join(rows)}</table>"
    )
    css = next(iter(sorted(out.glob("*/style.css"))), None)
    href = f"{css.parent.name}/style.css" if css else "style.css"
    atomic_write_text(_page("fvis galleries", body, href), out / "index.html")
