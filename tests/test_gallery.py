"""The gallery: two layers of the bundled model, its manifest against the schema, the
site, resume after kill -9, Ray with 2 workers, and the recipe it records."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from fvis.cli import main
from fvis.gallery import SCHEMA_PATH, read
from fvis.gallery.build import pinned_threads
from fvis.recipes import RenderRecipe

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--model", "fvis:mnist", "--device", "cpu", "--layers", "conv1,output", "-q"]
ARGS += [
    "--max-channels",
    "3",
    "--batch",
    "2",
    "--steps",
    "3",
    "--diversity",
    "2",
    "--examples",
    "2",
]


def files(folder: Path) -> dict[str, bytes]:
    """Every image and batch record of a gallery (records without their timings)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".png":
            out[str(p.relative_to(folder))] = p.read_bytes()
        elif p.parent.parent.name == ".records":
            record = json.loads(p.read_text())
            for u in record["units"]:
                u.pop("seconds")
            out[str(p.relative_to(folder))] = json.dumps(record, sort_keys=True).encode()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process build: (gallery folder, manifest)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["gallery", *ARGS, "-o", str(out)]) == 0
    (root,) = [p.parent for p in out.glob("*/manifest.json")]
    return root, json.loads((root / "manifest.json").read_text())


def test_manifest_validates_and_the_site_links_every_unit(reference):
    import jsonschema

    root, manifest = reference
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text()))
    assert [layer["name"] for layer in manifest["layers"]] == ["conv1", "output"]
    assert [u["unit"] for u in manifest["units"]] == [
        "conv1[0]",
        "conv1[1]",
        "conv1[2]",
        "class[0]",
        "class[1]",
        "class[2]",
    ]
    assert manifest["build"] == {"threads": 1, "device": "cpu", "torch": torch.__version__}
    assert manifest["units"][4]["label"] == "1"
    for u in manifest["units"]:
        assert set(u["images"]) == {
            "positive",
            "negative",
            "diversity",
            "top",
            "top_maps",
            "bottom",
            "bottom_maps",
        }
        for rel in u["images"].values():
            assert Image.open(root / rel).size[0] >= 28
        assert Image.open(root / u["images"]["diversity"]).size[0] > 2 * 28
        top = [e["value"] for e in u["examples"]["top"]]
        assert top == sorted(top, reverse=True) and top[-1] >= u["examples"]["bottom"][0]["value"]
        # the optimized objective per step of the positive render
        assert len(u["curve"]) == 3
        assert len(u["objective"]["diversity"]) == manifest["recipe"]["diversity"]
    page = (root / "conv1" / "0001.html").read_text()
    assert "<h2>Objective while optimizing</h2><figure><svg" in page
    links = ('href="0000.html"', 'href="0002.html"', 'href="page-1.html"', "0001/top-maps.png")
    for link in links:
        assert link in page
    assert 'loading="lazy"' in (root / "output" / "page-1.html").read_text()
    assert (root.parent / "index.html").read_text().count("page-1.html") == 2
    assert read(root.parent) == (root, manifest) == read(root)


def test_same_recipe_same_image_from_gallery_api_and_cli(reference, tmp_path):
    import fvis

    root, manifest = reference
    unit = manifest["units"][1]  # conv1[1]: item 1 of its batch's positive render
    ref = unit["renders"]["positive"]
    recipe = RenderRecipe.from_dict(manifest["recipes"][ref["recipe"]])
    gallery = Image.open(root / unit["images"]["positive"])
    with pinned_threads(1):
        api = recipe.run(fvis.load_model("fvis:mnist", device="cpu")).images[ref["items"][0]]
        (tmp_path / "r.json").write_text(recipe.to_json())
        out = tmp_path / "cli.png"
        assert (
            main(
                [
                    "render",
                    "--recipe",
                    str(tmp_path / "r.json"),
                    "--ncol",
                    "1",
                    "--scale",
                    "1",
                    "-q",
                    "-o",
                    str(out),
                ]
            )
            == 0
        )
    assert fvis.image.to_pil(api)[0].tobytes() == gallery.tobytes()
    # the recorded value is the unit's own on that image: conv1 channel 1's mean
    model = fvis.load_model("fvis:mnist", device="cpu")
    act = fvis.hooks.capture(model, model.fvis_info.normalize(api[None]), ["conv1"])["conv1"]
    assert unit["objective"]["positive"] == pytest.approx(float(act[0, 1].mean()), rel=1e-5)
    item = ref["items"][0]
    cli = Image.open(out).convert("L").crop((2, 2 + 30 * item, 30, 30 + 30 * item))
    assert cli.tobytes() == gallery.tobytes()


def test_rerun_renders_nothing_and_a_changed_recipe_gets_a_new_key(reference, tmp_path, capsys):
    root, _ = reference
    out = root.parent
    before = files(root)
    assert main(["gallery", *[a for a in ARGS if a != "-q"], "-o", str(out)]) == 0
    assert "0 to render" in capsys.readouterr().err
    assert files(root) == before
    assert main(["gallery", *ARGS, "--tv", "0.1", "--layers", "conv1", "-o", str(tmp_path)]) == 0
    (other,) = tmp_path.glob("*/manifest.json")
    assert other.parent.name != root.name


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    root, _ = reference
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "fvis.cli", "gallery", *ARGS, "-o", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = tmp_path / root.name / ".records"
    deadline = time.monotonic() + 120
    while not list(records.rglob("b*.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the build wrote no batch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = files(tmp_path / root.name)
    assert 0 < sum(k.startswith(".records") for k in partial) < 4  # killed mid-run
    # resume in a fresh process, which must not import Ray
    code = (
        "import sys; from fvis.cli import main; rc = main(sys.argv[1:]); "
        "sys.exit(rc or ('ray' in sys.modules) * 3)"
    )
    resumed = subprocess.run([sys.executable, "-c", code, *cmd[3:]], env=env)
    assert resumed.returncode == 0
    assert files(tmp_path / root.name) == files(root)


def test_ray_local_run_with_two_workers_equals_single_process(reference, tmp_path):
    import ray

    root, _ = reference
    try:
        assert main(["gallery", *ARGS, "--ray", "--workers", "2", "-o", str(tmp_path)]) == 0
    finally:
        ray.shutdown()
    assert files(tmp_path / root.name) == files(root)


def test_layer_names_never_escape_the_folder(tmp_path, capsys):
    for bad in ("../x", "/etc", ".hidden", "a/b"):
        assert main(["gallery", "--layers", f"conv1,{bad}", "-q", "-o", str(tmp_path)]) == 2
        assert f"layer name {bad!r} cannot name a gallery folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_shards_split_the_batches_and_index_only_joins_them(reference, tmp_path):
    root, _ = reference
    for k in range(2):
        assert main(["gallery", *ARGS, "--shard", f"{k}/2", "-o", str(tmp_path)]) == 0
    assert main(["gallery", *ARGS, "--index-only", "-o", str(tmp_path)]) == 0
    assert files(tmp_path / root.name) == files(root)
    manifest = json.loads((tmp_path / root.name / "manifest.json").read_text())
    assert [layer["done"] for layer in manifest["layers"]] == [3, 3]


def test_python_module_with_html_labels_and_a_code_space_prior(tmp_path):
    """build() from Python: names are escaped on every page; classes get code-space images."""
    from torch import nn

    import fvis
    from fvis.gallery import GalleryRecipe, build

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    labels = ("<i>x</i>", "b&c", '"q"')
    fvis.models.attach(net, fvis.models.ModelInfo((1, 28, 28), labels=labels, fixed_size=True))
    recipe = GalleryRecipe(render=RenderRecipe(steps=2), diversity=0, examples=2, batch=3,
                           codespace="generator:mnist")  # fmt: skip
    root = build(net, tmp_path, ["output"], recipe, device="cpu", log=io.StringIO())
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["model"]["spec"] == "python:Sequential"
    assert [u["label"] for u in manifest["units"]] == list(labels)
    for u in manifest["units"]:
        assert Image.open(root / u["images"]["codespace"]).size == (28, 28)
    pages = [p.read_text() for p in root.rglob("*.html")]
    assert any("&lt;i&gt;x&lt;/i&gt;" in p for p in pages) and any("b&amp;c" in p for p in pages)
    assert not any("<i>x</i>" in p for p in pages)


def test_gallery_recipe_round_trip():
    from fvis.gallery import GalleryRecipe

    recipe = GalleryRecipe(render=RenderRecipe(steps=7, tv=0.05), batch=3, rank="mean")
    assert GalleryRecipe.from_json(recipe.to_json()) == recipe
    assert GalleryRecipe.from_dict(recipe.to_dict()).hash() == recipe.hash()
    with pytest.raises(ValueError, match="rank must be 'max' or 'mean'"):
        GalleryRecipe(rank="median")


def test_all_layers_are_every_layer_but_the_input(mnist_model):
    from fvis.gallery.build import layer_units, plan

    units = layer_units(mnist_model, "all")
    assert list(units)[0] == "conv1" and list(units)[-1] == "output" and "input" not in units
    assert str(units["output"][3]) == "class[3]" and str(units["fc1"][127]) == "fc1[127]"
    batches = plan({"conv1": units["conv1"], "fc1": units["fc1"][:5]}, 4)
    assert [(layer, n, len(us)) for layer, n, us in batches] == [
        ("conv1", 0, 4), ("conv1", 1, 4), ("conv1", 2, 4), ("conv1", 3, 4),
        ("fc1", 0, 4), ("fc1", 1, 1),
    ]  # fmt: skip


def test_committed_gallery_is_complete_and_valid():
    import jsonschema

    root, manifest = read(ROOT / "gallery" / "mnist")
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text()))
    assert [(layer["name"], layer["done"]) for layer in manifest["layers"]] == [
        ("conv1", 16), ("conv2", 32), ("conv3", 64), ("fc1", 128), ("output", 10)
    ]  # fmt: skip
    for u in manifest["units"]:
        assert all((root / rel).is_file() for rel in u["images"].values()), u["unit"]
        assert (root / u["images"]["positive"].rsplit("/", 1)[0]).with_suffix(".html").is_file()
    assert "codespace" in manifest["units"][-1]["images"]


def test_a_flat_folder_dataset_is_read_once_and_gives_the_examples(tmp_path, monkeypatch):
    """``--dataset`` a folder of digit PNGs: the examples index its files (sorted), and a
    local build lists the folder once for all its batches (each batch listed it again)."""
    import fvis.image
    from fvis.data import mnist

    images = mnist("test")[0][:5]
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray((img[0] * 255).round().byte().numpy()).save(folder / f"{i}.png")
    scans = []
    listing = fvis.image.image_files
    monkeypatch.setattr(fvis.image, "image_files", lambda d: scans.append(d) or listing(d))
    args = [a for a in ARGS if a != "conv1,output"]
    args[args.index("--layers") + 1 :] = ["conv1", *args[args.index("--layers") + 1 :]]
    assert main(["gallery", *args, "--dataset", str(folder), "-o", str(tmp_path / "g")]) == 0
    assert scans == [str(folder)]  # 3 units in 2 batches
    (manifest,) = [json.loads(p.read_text()) for p in (tmp_path / "g").glob("*/manifest.json")]
    assert manifest["recipe"]["dataset"] == str(folder)
    for u in manifest["units"]:
        top = u["examples"]["top"]
        assert len(top) == 2 and all(0 <= e["index"] < 5 for e in top)
