"""A user's own data sets and model for the LR-rule benchmark's matrix, reached through import paths
(``data.name=user_tasks:tabular``, ``model.name=user_tasks:MLP``), as a user's code would be.

They give the matrix shapes the built-ins lack: 1-D (tabular) inputs, a regression loss, and a
transfer split of Fashion-MNIST for fine-tuning a backbone pretrained on other classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

TEST_SEED = 1234  # the test rows are the same whatever the run's seed


def _split(x: np.ndarray, y: np.ndarray, test: int) -> tuple[TensorDataset, TensorDataset]:
    """Standardise the features on the training rows, hold out ``test`` rows."""
    order = np.random.default_rng(TEST_SEED).permutation(len(x))
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x[order[test:]].mean(0)) / x[order[test:]].std(0)
    y = torch.as_tensor(y)
    return TensorDataset(x[order[test:]], y[order[test:]]), TensorDataset(x[order[:test]], y[order[:test]])


def tabular(root: str, samples: int = 12000, features: int = 40, informative: int = 12, classes: int = 6, test: int = 4000,
            flip: float = 0.02, seed: int = 0) -> dict:  # fmt: skip
    """scikit-learn's ``make_classification``: Gaussian clusters on a hypercube's vertices, with redundant and noise features."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=samples, n_features=features, n_informative=informative, n_redundant=features // 4,
                               n_classes=classes, n_clusters_per_class=3, flip_y=flip, class_sep=1.0, random_state=seed)  # fmt: skip
    train, held = _split(x, y.astype(np.int64), test)
    return {"train": train, "test": held, "num_classes": classes, "in_channels": features}


def friedman(root: str, samples: int = 10000, noise: float = 1.0, test: int = 3000, seed: int = 0) -> dict:
    """Friedman #1 regression (``make_friedman1``, 10 inputs of which 5 matter, non-linear), targets standardised."""
    x, y = friedman_arrays(samples, noise, seed)
    train, held = _split(x, y, test)
    return {"train": train, "test": held, "num_classes": 1, "in_channels": x.shape[1]}


def friedman_arrays(samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=samples, n_features=10, noise=noise, random_state=seed)
    y = (y - y.mean()) / y.std()
    return x, y[:, None].astype(np.float32)


def friedman_test_variance(samples: int = 10000, noise: float = 1.0, test: int = 3000, seed: int = 0) -> float:
    """The test targets' variance: R^2 = 1 - test MSE / this."""
    _, y = friedman_arrays(samples, noise, seed)
    order = np.random.default_rng(TEST_SEED).permutation(len(y))
    return float(y[order[:test]].var())


def fashion_classes(root: str, classes: list[int], limit: int | None = None, seed: int = 0) -> dict:
    """Fashion-MNIST restricted to ``classes`` (relabelled 0..k-1), 28x28 floats; ``limit`` training images at most."""
    from torchvision.datasets import FashionMNIST

    from superconverge.data import install_fashion_mnist_from_system

    install_fashion_mnist_from_system(Path(root) / "FashionMNIST" / "raw")  # as the built-in does on a fresh machine
    out = {}
    for split in ("train", "test"):
        raw = FashionMNIST(str(root), train=split == "train", download=False)
        keep = torch.isin(raw.targets, torch.tensor(classes))
        images = raw.data[keep].float().div(255).sub(0.286).div(0.353).unsqueeze(1)
        labels = torch.searchsorted(torch.tensor(sorted(classes)), raw.targets[keep])
        if split == "train" and limit is not None:
            rows = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit]
            images, labels = images[rows], labels[rows]
        out[split] = TensorDataset(images, labels)
    return {**out, "num_classes": len(classes), "in_channels": 1}


class MLP(nn.Module):
    """Linear-BatchNorm-ReLU blocks and a linear head (``model.head=head``)."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_channels if i == 0 else width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))
