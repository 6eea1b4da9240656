"""The bundled MNIST classifiers (trained by ``scripts/train_mnist.py``).

Inputs are normalized digits, (N, 1, 28, 28); outputs are logits (N, 10).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class MnistCNN(nn.Sequential):
    """Three conv layers, a hidden fully connected layer and the logits.

    ======  ===============  ===========
    layer   op               output
    ======  ===============  ===========
    conv1   3x3, 1→16        16×28×28
    conv2   3x3, 16→32       32×28×28
    pool1   max 2×2          32×14×14
    conv3   3x3, 32→64       64×14×14
    pool2   max 2×2          64×7×7
    fc1     3136→128         128
    logits  128→10           10
    ======  ===============  ===========

    each conv and ``fc1`` is followed by its own ReLU (``relu1`` … ``relu4``).
    """

    def __init__(self) -> None:
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(1, 16, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(16, 32, 3, padding=1),
                relu2=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv3=nn.Conv2d(32, 64, 3, padding=1),
                relu3=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
                fc1=nn.Linear(64 * 7 * 7, 128),
                relu4=nn.ReLU(),
                logits=nn.Linear(128, 10),
            )
        )


class MnistMLP(nn.Sequential):
    """An independent second classifier (different architecture, seed and training run),
    used to check that visualizations transfer: 784 → 512 → 256 → 10 with ReLUs."""

    def __init__(self) -> None:
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(784, 512),
                relu1=nn.ReLU(),
                fc2=nn.Linear(512, 256),
                relu2=nn.ReLU(),
                logits=nn.Linear(256, 10),
            )
        )
