"""Train the two bundled MNIST classifiers, deterministically, and save their weights.

    python scripts/train_mnist.py                 # both: fvis:mnist, then fvis:mnist-mlp
    python scripts/train_mnist.py --only mlp --epochs 10

Trains on ``fvis.data.mnist("train")`` (4,000 digits) only; the 1,000 held-out digits
are used once, after training, to report the accuracy stored in the checkpoint's meta.
Inputs are normalized with ``MNIST_INFO`` exactly as the loaded models expect. Each
training digit is lightly augmented: a random affine map with a shift of up to ±2 px,
a rotation of up to ±10° and a scale in [0.9, 1.1].

A seed reproduces the weights bit for bit on the same machine and torch version
(one CPU thread, deterministic algorithms). Weights are written atomically to
``fvis/models/weights/`` as ``{"state_dict": ..., "meta": {...}}``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from fvis.data import mnist
from fvis.io import atomic_save
from fvis.models import BUNDLED, MNIST_INFO, WEIGHTS_DIR


@dataclass(frozen=True)
class Run:
    spec: str  # key of fvis.models.BUNDLED: the architecture and the weight file
    seed: int
    epochs: int
    lr: float  # peak learning rate of the one-cycle schedule
    weight_decay: float


RUNS = {
    "cnn": Run(spec="mnist", seed=0, epochs=30, lr=2e-3, weight_decay=5e-4),
    "mlp": Run(spec="mnist-mlp", seed=1, epochs=40, lr=1e-3, weight_decay=1e-4),
}
BATCH = 64
MAX_SHIFT = 2.0  # pixels
MAX_ROTATION = 10.0  # degrees
MAX_SCALE = 0.1  # relative


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shift (±``MAX_SHIFT`` px), rotation (±``MAX_ROTATION``°) and scale
    (1 ± ``MAX_SCALE``) of images in [0, 1], (N, 1, H, W) → (N, 1, H, W); the background
    that moves in is 0, like the digits' own background."""
    n, _, h, w = images.shape

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * bound

    angle = uniform(math.radians(MAX_ROTATION))
    scale = 1 + uniform(MAX_SCALE)
    # affine_grid works in [-1, 1] coordinates, so one pixel is 2 / size.
    tx, ty = uniform(MAX_SHIFT) * 2 / w, uniform(MAX_SHIFT) * 2 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
    )  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """Accuracy and mean probability of the true class over ``images`` in [0, 1]."""
    model.eval()
    probs = torch.cat([model(MNIST_INFO.normalize(x)).softmax(1) for x in images.split(500)])
    accuracy = (probs.argmax(1) == labels).float().mean().item()
    confidence = probs.gather(1, labels[:, None]).mean().item()
    return accuracy, confidence


def train(name: str, run: Run) -> None:
    make, fname, _ = BUNDLED[run.spec]
    images, labels = mnist("train")
    test_images, test_labels = mnist("test")

    torch.manual_seed(run.seed)  # the weight initialization
    gen = torch.Generator().manual_seed(run.seed)  # batch order and augmentation
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    steps_per_epoch = math.ceil(len(images) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=run.lr, epochs=run.epochs, steps_per_epoch=steps_per_epoch
    )

    start = time.perf_counter()
    for epoch in range(1, run.epochs + 1):
        model.train()
        total_loss, correct = 0.0, 0
        for index in torch.randperm(len(images), generator=gen).split(BATCH):
            x, y = augment(images[index], gen), labels[index]
            logits = model(MNIST_INFO.normalize(x))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
        print(
            f"[{name}] epoch {epoch:3d}/{run.epochs}  loss {total_loss / len(images):.4f}  "
            f"train acc (augmented) {correct / len(images):.4f}  "
            f"{time.perf_counter() - start:6.1f}s",
            flush=True,
        )

    accuracy, confidence = evaluate(model, test_images, test_labels)
    train_accuracy, _ = evaluate(model, images, labels)
    print(
        f"[{name}] held-out accuracy {accuracy:.4f} ({len(test_images)} digits), "
        f"mean p(true class) {confidence:.4f}, train accuracy {train_accuracy:.4f}",
        flush=True,
    )
    state = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "seed": run.seed,
        "epochs": run.epochs,
        "test_accuracy": round(accuracy, 4),
        "script": "scripts/train_mnist.py",
    }
    path = WEIGHTS_DIR / fname
    atomic_save({"state_dict": state, "meta": meta}, path)
    print(f"[{name}] saved {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(RUNS), help="train just this model")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    args = parser.parse_args(argv)

    # One thread and deterministic kernels: the same seed gives the same weights.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for name in [args.only] if args.only else list(RUNS):
        run = RUNS[name]
        if args.epochs is not None:
            run = replace(run, epochs=args.epochs)
        train(name, run)


if __name__ == "__main__":
    main()
