"""Build a gallery: every unit of the chosen layers, rendered in batches, resumable.

For each unit: the positive visualization, the negative, a diversity set, the top-k
and bottom-k dataset examples with where the unit fires in each
(:func:`fvis.examples.dataset_examples`), and for class units with a generator prior
the code-space image. Units of one layer are rendered ``batch`` at a time (one
optimization for the positives and negatives of the batch, one for its diversity sets);
each item starts from its unit's own seed. A batch is the unit of work: its images are
written (atomically), then its record (``.records/LAYER/bNNNN.json``), which marks it
done. A run killed at any moment loses at most the batches in flight, and a re-run
renders exactly those, with the same batches and seeds, so it writes the same bits.

The bits also depend on the thread count, the device type and the torch version; the
run pins the thread count (``threads``) and all three go into the gallery's key and
its manifest, so a Ray build and a local build with the same settings write the same
files, and different settings never mix in one folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fvis.gallery import layout
from fvis.recipes import ModelSpec, RenderRecipe, Unit, fingerprint
from fvis.recipes.recipe import FORMAT, Recipe, _diversity_layer

__all__ = ["GalleryRecipe", "build", "gallery_key", "plan"]

SCHEMA = "fvis-gallery/1"
LOCK = ".fvis-gallery.lock"  # in the output folder, while the manifest and pages are written


@dataclass(frozen=True)
class GalleryRecipe(Recipe):
    """How a gallery renders each unit. ``render``: the render settings (its ``units``,
    ``seeds``, ``repeat`` and ``diversity`` are set per batch); the rest below, each
    default with its source in :attr:`SOURCES`."""

    kind = "gallery"

    render: RenderRecipe = field(default_factory=RenderRecipe)
    negative: bool = True
    diversity: int = 4
    diversity_weight: float = 100.0
    examples: int = 8
    rank: str = "max"
    heatmap: str = "gradient_x_input"
    dataset: str = "digits"
    codespace: str | None = None
    batch: int = 16

    SOURCES = {
        "render": "RenderRecipe's defaults (RenderRecipe.SOURCES)",
        "negative": "Microscope and Lucid show each unit minimized too",
        "diversity": "Microscope: a diversity set of 4",
        "diversity_weight": "Lucid's diversity notebook: 1e2",
        "examples": "fvis: 8 top and 8 bottom dataset examples",
        "rank": "Microscope: the maximum over positions (or 'mean')",
        "heatmap": "gradient × input of the unit's objective: cheap, zero on a black background",
        "dataset": "the bundled held-out MNIST digits (or a folder of images)",
        "codespace": "none (generator:NAME adds a code-space image to class units)",
        "batch": "fvis: 16 units per optimization",
    }

    def __post_init__(self):
        if isinstance(self.render, dict):
            object.__setattr__(self, "render", RenderRecipe.from_dict(self.render))
        if self.batch < 1:
            raise ValueError(f"gallery: batch must be at least 1, not {self.batch}")
        if self.diversity == 1 or self.diversity < 0:
            raise ValueError("gallery: a diversity set has 0 (none) or at least 2 images")
        if self.examples < 0:
            raise ValueError(f"gallery: examples must be ≥ 0, not {self.examples}")
        if self.rank not in ("max", "mean"):
            raise ValueError(f"gallery: rank must be 'max' or 'mean', not {self.rank!r}")
        from fvis.attribution import METHODS

        if self.heatmap not in METHODS:
            raise ValueError(
                f"gallery: unknown heatmap method {self.heatmap!r}; known: "
                f"{', '.join(sorted(METHODS))}"
            )

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["render"] = self.render.to_dict()
        return out


def _seed(base: int, text: str) -> int:
    """A unit's own seed: 31 bits of SHA-256 of the gallery seed and the unit spec."""
    digest = hashlib.sha256(f"{base}/{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def environment(threads: int, device) -> dict:
    """What determines the bits besides the recipe: thread count, device type, torch."""
    kind = torch.device(device).type
    return {"threads": int(threads), "device": kind, "torch": torch.__version__}


def gallery_key(recipe: GalleryRecipe, model: dict, build: dict) -> str:
    payload = json.dumps(
        {"recipe": recipe.to_dict(), "model": model, "build": build},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- planning


def layer_units(model: nn.Module, layers, max_channels: int | None = None) -> dict[str, list[Unit]]:
    """``{layer: units}``: every channel of each layer (``"all"``: every layer but the
    input), the classes for ``"output"``. Names are checked for the folder first."""
    from fvis.hooks import INPUT, OUTPUT, trace
    from fvis.hooks import layers as all_layers
    from fvis.models import info as model_info

    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    if list(layers) == ["all"]:
        layers = [li.name for li in all_layers(model) if li.name != INPUT]
    if not layers:
        raise ValueError("give at least one layer (--layers conv3,fc1 or --layers all)")
    for name in layers:
        layout.slug(name)
    info = model_info(model)
    tr = trace(model, info.input_size)
    out: dict[str, list[Unit]] = {}
    for name in dict.fromkeys(layers):
        n = tr.layout(name, info.layouts).features(tr.shape(name))  # features, any layout
        n = min(n, max_channels) if max_channels else n
        if name == OUTPUT:
            out[name] = [Unit("class", OUTPUT, k) for k in range(n)]
        else:
            out[name] = [Unit("channel", name, k) for k in range(n)]
    return out


def plan(units: dict[str, list[Unit]], batch: int) -> list[tuple[str, int, list[Unit]]]:
    """``(layer, batch number, units)`` for every batch: each layer's units in order,
    ``batch`` at a time (batches never mix layers)."""
    return [
        (layer, b, us[i : i + batch])
        for layer, us in units.items()
        for b, i in enumerate(range(0, len(us), batch))
    ]


# ---------------------------------------------------------------- one batch


@dataclass
class Job:
    """Everything a worker needs to render batches. ``dataset``: for Ray, what the user
    gave (a path or a picklable dataset; each task builds its own); for a local build,
    the dataset already built, shared by its batches (it need not pickle)."""

    recipe: GalleryRecipe
    threads: int
    device: str
    model_spec: ModelSpec | None = None
    module: nn.Module | None = None
    dataset: object = None
    labels: tuple | None = None


def _png(image_tensor) -> bytes:
    """One image or a strip of several, as PNG bytes."""
    import io

    from fvis.image import grid, to_pil

    t = image_tensor.detach().float().cpu()
    pil = to_pil(t)[0] if t.dim() == 3 or t.shape[0] == 1 else grid(t, ncol=t.shape[0], pad=1)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def render_batch(
    job: Job, model: nn.Module, layer: str, number: int, units: list[Unit], callback=None
):
    """Render one batch: ``(files, record)`` with ``files`` ``{path in the gallery: PNG
    bytes}`` and ``record`` the batch's JSON record (units, recipes, values). ``callback``
    goes to every render of the batch (:func:`fvis.render`)."""
    from fvis.examples import dataset_examples

    recipe = job.recipe
    start = time.perf_counter()
    out = _BatchOutput(layer, units)
    for name, r, groups in _renders(recipe, model, layer, units):
        result = r.run(model, callback=callback)
        out.add_render(name, r, result, groups, r.unit_values(model, result.images).tolist())
    if recipe.examples:
        out.add_examples(
            dataset_examples(
                model, job.dataset, units, k=recipe.examples, rank=recipe.rank,
                method=recipe.heatmap,
            )
        )  # fmt: skip
    seconds = (time.perf_counter() - start) / len(units)
    return out.files, out.record(number, recipe.render.seed, job.labels, seconds)


def _renders(recipe: GalleryRecipe, model: nn.Module, layer: str, units: list[Unit]):
    """The batch's renders ``(name, render recipe, items per unit)``: the positives, the
    negatives (``-unit``), the diversity sets and, for class units with a generator prior,
    the code-space images; each item from its own seed (:func:`_seed` of the unit spec,
    ``spec#j`` for diversity item ``j``)."""
    base = recipe.render.replace(units=(), seeds=(), repeat=1, diversity=0.0, diversity_layer=None)
    specs = tuple(str(u) for u in units)
    seeds = tuple(_seed(base.seed, s) for s in specs)
    out = [("positive", base.replace(units=specs, seeds=seeds), 1)]
    if recipe.negative:
        neg = tuple(str(-u) for u in units)
        neg_seeds = tuple(_seed(base.seed, s) for s in neg)
        out.append(("negative", base.replace(units=neg, seeds=neg_seeds), 1))
    if recipe.diversity:
        d = recipe.diversity
        div = base.replace(
            units=specs,
            repeat=d,
            diversity=recipe.diversity_weight,
            diversity_layer=_diversity_layer(model, layer),
            seeds=tuple(_seed(base.seed, f"{s}#{j}") for s in specs for j in range(d)),
        )
        out.append(("diversity", div, d))
    if recipe.codespace and units[0].kind == "class":
        out.append(("codespace", base.replace(units=specs, prior=recipe.codespace, seeds=seeds), 1))
    return out


@dataclass
class _BatchOutput:
    """A batch's files (``{path in the gallery: PNG bytes}``), render recipes (by hash)
    and per-unit records, filled render by render."""

    layer: str
    units: list[Unit]
    files: dict[str, bytes] = field(default_factory=dict, init=False)
    recipes: dict[str, dict] = field(default_factory=dict, init=False)
    per_unit: list[dict] = field(init=False)

    def __post_init__(self):
        self.per_unit = [{"objective": {}, "renders": {}, "images": {}} for _ in self.units]

    def folder(self, i: int) -> str:
        """Unit ``i``'s folder in the gallery: ``LAYER/NNNN``."""
        return f"{layout.slug(self.layer)}/{self.units[i].index:04d}"

    def add_render(self, name: str, r: RenderRecipe, result, groups: int, values) -> None:
        """File the render ``r``'s ``result``: ``groups`` consecutive items per unit (one
        image, or a strip of them), their ``values`` (each item's own unit objective on
        its final image: :meth:`RenderRecipe.unit_values`), and for the positive the
        optimized objective per step (the curve the unit page plots)."""
        h = r.hash()
        self.recipes[h] = r.to_dict()
        final = values
        for i, rec in enumerate(self.per_unit):
            items = list(range(i * groups, (i + 1) * groups))
            rec["renders"][name] = {"recipe": h, "items": items}
            rec["objective"][name] = final[items[0]] if groups == 1 else [final[j] for j in items]
            if name == "positive":
                rec["curve"] = [float(f"{v:.5g}") for v in result.history[:, i].tolist()]
            rel = f"{self.folder(i)}/{layout.IMAGES[name]}"
            self.files[rel] = _png(result.images[items[0]] if groups == 1 else result.images[items])
            rec["images"][name] = rel

    def add_examples(self, examples) -> None:
        """File each unit's top and bottom dataset examples (indices, values, a strip of
        the images and one of their heatmaps over them)."""
        from fvis.heatmap import overlay

        for i, ex in enumerate(examples):
            rec = self.per_unit[i]
            rec["examples"] = {
                side: [
                    {"index": int(j), "value": float(v)}
                    for j, v in zip(getattr(ex, f"{side}_index"), getattr(ex, f"{side}_value"))
                ]
                for side in ("top", "bottom")
            }
            for side in ("top", "bottom"):
                images, maps = getattr(ex, f"{side}_images"), getattr(ex, f"{side}_maps")
                folder = self.folder(i)
                self.files[f"{folder}/{layout.IMAGES[side]}"] = _png(images)
                heat = overlay(images, maps.unsqueeze(1))
                self.files[f"{folder}/{layout.IMAGES[side + '_maps']}"] = _png(heat)
                rec["images"][side] = f"{folder}/{layout.IMAGES[side]}"
                rec["images"][side + "_maps"] = f"{folder}/{layout.IMAGES[side + '_maps']}"

    def record(self, number: int, seed: int, labels, seconds: float) -> dict:
        """The batch's JSON record: its recipes and, per unit, its spec, label (class
        units, from the model's ``labels``), seed, renders, images and ``seconds``."""
        records = []
        for u, rec in zip(self.units, self.per_unit):
            label = None
            if u.kind == "class" and labels:
                label = str(labels[u.index])
            records.append(
                {
                    "unit": str(u),
                    "layer": self.layer,
                    "index": u.index,
                    "kind": u.kind,
                    "label": label,
                    "seed": _seed(seed, str(u)),
                    **rec,
                    "seconds": round(seconds, 4),
                }
            )
        return {"layer": self.layer, "batch": number, "recipes": self.recipes, "units": records}


# ---------------------------------------------------------------- running batches


@contextlib.contextmanager
def pinned_threads(n: int):
    """``torch.set_num_threads(n)`` for the duration (CPU results depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_MODELS: dict = {}


def _worker_model(job: Job) -> nn.Module:
    """The job's model, loaded once per process (Ray workers keep it between tasks)."""
    if job.module is not None:
        return job.module.to(job.device)
    key = (job.model_spec.spec, job.model_spec.weights, job.device)
    if key not in _MODELS:
        from fvis.recipes import load_model

        _MODELS[key] = load_model(job.model_spec.spec, job.model_spec.weights, job.device)
    return _MODELS[key]


def _task(job: Job, layer: str, number: int, specs: list[str]):
    """One batch in a Ray worker: the same :func:`render_batch` as a local run."""
    from fvis.recipes import parse_unit

    with pinned_threads(job.threads):
        return render_batch(job, _worker_model(job), layer, number, [parse_unit(s) for s in specs])


def _local(job: Job, model, batches) -> Iterator:
    with pinned_threads(job.threads):
        for layer, number, units in batches:
            yield render_batch(job, model, layer, number, units)


def _ray_start(address: str | None, workers: int | None, gpus: float | None) -> float:
    """Join the Ray cluster at ``address`` (or start one here with ``workers`` CPUs);
    returns the GPUs per task: ``gpus``, or 1 when the cluster has GPUs, else 0."""
    from fvis.models.optional import require

    ray = require("ray", "ray", "--ray")
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=workers if address is None else None,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return gpus


def _ray(job: Job, batches, gpus: float):
    """Each batch as a Ray task taking ``job.threads`` CPUs and ``gpus`` GPUs, retried
    (``max_retries=3``) when its worker dies; the results come back to this process,
    which writes them, so workers need no shared file system."""
    import ray

    task = ray.remote(num_cpus=job.threads, num_gpus=gpus, max_retries=3)(_task)
    ref = ray.put(job)
    pending = [task.remote(ref, layer, n, [str(u) for u in us]) for layer, n, us in batches]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def _record_complete(root: Path, layer: str, number: int) -> bool:
    path = layout.record_path(root, layer, number)
    if not path.exists():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return all((root / rel).exists() for u in data["units"] for rel in u["images"].values())


def _write(root: Path, files: dict[str, bytes], record: dict) -> None:
    """The batch's images, then its record (the commit point), each atomically."""
    from fvis.io import atomic_write_bytes, atomic_write_text

    for rel, data in sorted(files.items()):
        atomic_write_bytes(data, root / rel)
    path = layout.record_path(root, record["layer"], record["batch"])
    atomic_write_text(json.dumps(record, sort_keys=True, indent=1), path)


def _write_all(root: Path, results, total: int, log) -> None:
    """Write each batch's ``(files, record)`` as it comes (:func:`_write`), saying so."""
    for n, (files, record) in enumerate(results, 1):
        _write(root, files, record)
        print(
            f"  [{n}/{total}] {record['layer']} batch {record['batch']}: "
            f"{len(record['units'])} unit(s)",
            file=log,
        )


@contextlib.contextmanager
def folder_lock(path: Path):
    """An exclusive lock on ``path`` (a lock file) while the site is written, so two
    processes building into one folder never interleave their manifest and pages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # not on POSIX: atomic writes only
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(
    model: nn.Module | str,
    out,
    layers="all",
    recipe: GalleryRecipe | None = None,
    *,
    weights: str = "DEFAULT",
    dataset=None,
    threads: int = 1,
    device=None,
    max_channels: int | None = None,
    shard: tuple[int, int] = (0, 1),
    ray: bool | str | None = None,
    workers: int | None = None,
    gpus: float | None = None,
    index_only: bool = False,
    force: bool = False,
    log=sys.stderr,
) -> Path:
    """Build (or resume) the gallery of ``layers`` of ``model`` (a spec string, or a
    module) in the folder ``out``; returns the gallery's folder ``out/KEY``.

    ``dataset``: the dataset examples come from (``None``: the bundled held-out
    digits; a folder path; a torch ``Dataset``). ``threads``: the torch thread count
    every batch runs with. ``shard=(k, n)``: only batches ``k, k+n, …``. ``ray``:
    ``True`` (start or join a Ray cluster; ``workers`` CPUs when started here) or an
    address; ``gpus`` per task. ``index_only``: only (re)write the manifest and site
    from the finished batches. ``force``: render finished batches again.
    """
    from fvis.gallery import site
    from fvis.models import info as model_info

    layers = _check_build(layers, shard, threads)  # before anything is loaded or written
    device, task_device, gpus = _devices(device, ray, workers, gpus)
    spec, module = _load(model, weights, device)
    info = model_info(module)
    recipe = _for_dataset(recipe or GalleryRecipe(), dataset, info, log)
    if dataset is not None and recipe.examples:
        from fvis.examples import as_dataset

        built = as_dataset(dataset, module)  # a bad folder is refused before any work
        dataset = dataset if ray else built  # local batches share it; Ray tasks build their own
    model_record = _model_record(spec, module, info)
    env = environment(threads, task_device)
    key = gallery_key(recipe, model_record, env)
    root = Path(out) / key
    units = layer_units(module, layers, max_channels)
    batches = plan(units, recipe.batch)
    todo = [] if index_only else _todo(root, batches, shard, force)
    job = Job(recipe, threads, task_device, spec, None if spec else module, dataset, info.labels)
    print(
        f"gallery {key}: {sum(map(len, units.values()))} units in {len(batches)} batches, "
        f"{len(todo)} to render",
        file=log,
    )
    _write_all(root, _ray(job, todo, gpus) if ray else _local(job, module, todo), len(todo), log)
    with folder_lock(Path(out) / LOCK):
        manifest = assemble(root, units, batches, key, recipe, model_record, env, module)
        site.write(Path(out), root, manifest)
    return root


def _check_build(layers, shard: tuple[int, int], threads: int) -> list[str]:
    """The layer names (a comma list is split), checked for the folder, after checking
    ``shard`` (K/N, 0 ≤ K < N) and ``threads`` (≥ 1)."""
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    for name in layers:
        if name != "all":
            layout.slug(name)
    k_shard, n_shard = shard
    if not 0 <= k_shard < n_shard:
        raise ValueError(f"shard must be K/N with 0 <= K < N, not {k_shard}/{n_shard}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    return layers


def _devices(device, ray, workers: int | None, gpus: float | None):
    """``(device, task_device, gpus)``: where the model is loaded here, where batches
    run, and the GPUs per Ray task. With ``ray``, the cluster is joined (or started) and
    tasks run where Ray puts them: on a GPU when they get one; the model stays on the CPU
    here."""
    from fvis.models import default_device

    device = str(device or default_device())
    task_device = device
    if ray:
        gpus = _ray_start(None if ray is True else ray, workers, gpus)
        task_device, device = ("cuda" if gpus else "cpu"), "cpu"
    return device, task_device, gpus


def _load(model: nn.Module | str, weights: str, device: str):
    """``(spec, module)``: a spec string's :class:`ModelSpec` and its model loaded on
    ``device``, or ``None`` and the given module moved there."""
    if not isinstance(model, str):
        return None, model.to(device)
    from fvis.recipes import load_model

    spec = ModelSpec(model, str(weights))
    return spec, load_model(spec.spec, spec.weights, device)


def _for_dataset(recipe: GalleryRecipe, dataset, info, log) -> GalleryRecipe:
    """The recipe with the dataset's name, and without dataset examples when there is
    no dataset for a model that does not take the bundled digits (said on ``log``)."""
    if dataset is None and recipe.examples and tuple(info.input_size) != (1, 28, 28):
        print(f"no dataset for a {'×'.join(map(str, info.input_size))} model: dataset "
              "examples skipped (give one: --dataset FOLDER)", file=log)  # fmt: skip
        recipe = recipe.replace(examples=0)
    dataset_name = _dataset_name(dataset)
    if dataset_name != recipe.dataset:
        recipe = recipe.replace(dataset=dataset_name)
    return recipe


def _model_record(spec: ModelSpec | None, module: nn.Module, info) -> dict:
    """The model as the key and the manifest name it: spec (or Python class), weights,
    fingerprint of the parameters, input size."""
    return {
        "spec": spec.spec if spec else f"python:{type(module).__name__}",
        "weights": spec.weights if spec else None,
        "fingerprint": fingerprint(module),
        "input_size": list(info.input_size),
    }


def _todo(root: Path, batches, shard: tuple[int, int], force: bool) -> list:
    """The batches of shard ``k`` of ``n`` (every ``n``-th from the ``k``-th) that have
    no complete record in ``root`` (all of them with ``force``)."""
    k_shard, n_shard = shard
    return [
        b
        for i, b in enumerate(batches)
        if i % n_shard == k_shard and (force or not _record_complete(root, b[0], b[1]))
    ]


def _dataset_name(dataset) -> str:
    if dataset is None:
        return "digits"
    if isinstance(dataset, str | os.PathLike):
        return os.fspath(dataset)
    n = len(dataset) if hasattr(dataset, "__len__") else "?"
    return f"python:{type(dataset).__name__}[{n}]"


def assemble(root, units, batches, key, recipe, model_record, env, model) -> dict:
    """The manifest (see ``manifest.schema.json``) from every finished batch's record."""
    from fvis import __version__
    from fvis.hooks import layers as all_layers

    shapes = {li.name: li for li in all_layers(model)}
    recipes: dict[str, dict] = {}
    done: dict[str, dict] = {}
    for layer, number, _ in batches:
        path = layout.record_path(root, layer, number)
        if path.exists():
            record = json.loads(path.read_text())
            recipes.update(record["recipes"])
            for u in record["units"]:
                done[u["unit"]] = u
    layer_rows = []
    for layer, us in units.items():
        li = shapes.get(layer)
        layer_rows.append(
            {
                "name": layer,
                "folder": layout.slug(layer),
                "type": li.type if li else "",
                "shape": list(li.shape) if li else [],
                "units": [str(u) for u in us],
                "done": sum(str(u) in done for u in us),
            }
        )
    import platform

    return {
        "schema": SCHEMA,
        "key": key,
        "model": model_record,
        "recipe": recipe.to_dict(),
        "build": env,
        "versions": {
            "fvis": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "format": FORMAT,
        },
        "layers": layer_rows,
        "recipes": dict(sorted(recipes.items())),
        "units": [done[str(u)] for us in units.values() for u in us if str(u) in done],
    }
