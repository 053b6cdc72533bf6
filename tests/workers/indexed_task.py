"""A user's task whose model writes down which training samples it trains on (tests/test_elastic.py).

scikit-learn's 8x8 digits as 64 features plus each row's index as a 65th column, which the model
strips before its layers and, while it trains, appends to a file of its process.
"""

import os
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset


def digits(root: str, test_fraction: float = 0.2) -> dict:
    features, labels = load_digits(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32) / 16
    rows = torch.cat([x, torch.arange(len(x), dtype=torch.float32)[:, None]], dim=1)
    y = torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = order[: int(len(y) * test_fraction)], order[int(len(y) * test_fraction) :]
    return {"train": TensorDataset(rows[train], y[train]), "test": TensorDataset(rows[test], y[test]), "num_classes": 10}


class LoggingMLP(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, log_dir: str) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels - 1, 64), nn.ReLU(), nn.Linear(64, num_classes))
        self.log = Path(log_dir) / f"seen-{os.getpid()}-rank{os.environ.get('RANK', '0')}.txt"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():  # a training step (the launcher's probe runs in eval mode)
            with self.log.open("a") as handle:
                handle.write(" ".join(str(int(i)) for i in x[:, -1].tolist()) + "\n")
        return self.net(x[:, :-1])
