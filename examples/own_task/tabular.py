"""A user's own task in one file: a model factory, a data set factory and a loss.

scikit-learn's bundled diabetes table (442 patients, 10 features, no download): predict disease
progression a year on, as a number (regression, MSE) or as low/middle/high (classification,
the launcher's default cross-entropy). Nothing here imports superconverge: the config names
these callables (`tabular:mlp`, `tabular:diabetes`, `tabular:mse`).
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_diabetes
from torch import nn
from torch.utils.data import TensorDataset


def mlp(num_classes: int, in_channels: int, width: int = 64) -> nn.Module:
    """The launcher passes the output width (num_classes) and the input width (in_channels)."""
    return nn.Sequential(
        nn.Linear(in_channels, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, num_classes),
    )  # fmt: skip


def diabetes(root: str, target: str = "value", test_fraction: float = 0.2, seed: int = 0) -> dict:
    """``target``: ``value`` (standardised progression, a float) or ``label`` (its tercile, a class index).

    ``root`` is data.root; this data set ships with scikit-learn, so it is not used.
    """
    features, progression = load_diabetes(return_X_y=True)
    x, y = torch.tensor(features, dtype=torch.float32), torch.tensor(progression, dtype=torch.float32)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)  # the training rows' statistics only
    x = (x - mean) / std
    if target == "value":
        targets, width = ((y - y[train].mean()) / y[train].std()).unsqueeze(1), 1
    elif target == "label":
        cuts = torch.quantile(y[train], torch.tensor([1 / 3, 2 / 3]))
        targets, width = torch.bucketize(y, cuts), 3
    else:
        raise ValueError(f"target must be 'value' or 'label', not {target!r}")
    return {"train": TensorDataset(x[train], targets[train]), "test": TensorDataset(x[test], targets[test]), "num_classes": width}


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs, targets)
