"""A user's data set whose reader blocks forever on rank 1, as one on a hung network file system (tests/test_stall.py).

scikit-learn's 8x8 digits as 64 features; with STALL_AFTER_READS set, rank 1's training split stops answering
after that many samples. An environment variable, not a data.kwargs key: the rerun that resumes has the same config.
"""

import os
import threading

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, TensorDataset


class StallingReads(Dataset):
    def __init__(self, base: Dataset, stall_after: int | None) -> None:
        self.base, self.stall_after, self.reads = base, stall_after, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        self.reads += 1
        if self.stall_after is not None and self.reads > self.stall_after:
            threading.Event().wait()  # forever, alive: the process neither dies nor progresses
        return self.base[index]


def digits(root: str) -> dict:
    assert int(os.environ["WORLD_SIZE"]) == 2, "tests/test_stall.py runs this task on 2 processes"
    features, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(features, dtype=torch.float32) / 16, torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val, test = order[:1258], order[1258:1528], order[1528:]  # 629 training samples a rank an epoch at 2 ranks
    stall = os.environ.get("STALL_AFTER_READS") if os.environ["RANK"] == "1" else None
    return {"train": StallingReads(TensorDataset(x[train], y[train]), int(stall) if stall else None),
            "val": TensorDataset(x[val], y[val]), "test": TensorDataset(x[test], y[test]), "num_classes": 10}  # fmt: skip


def mlp(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_channels, 64), nn.ReLU(), nn.Linear(64, num_classes))
