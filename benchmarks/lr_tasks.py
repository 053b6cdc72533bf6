"""The task matrix of the LR-rule benchmark: 12 small image-classification tasks in two halves.

A rule (and any constant in it) is chosen on the ``tune`` half only; the ``held_out`` half is
what its quality is reported on. Each half mixes both data sets, several training-set sizes,
batch sizes from 32 to 512, budgets from 2 to 20 epochs, AdamW/Adam/SGD/SGD-Nesterov, weight
decay and label smoothing, and two models (small_cnn, torchvision's shufflenet_v2_x0_5).
"""

from __future__ import annotations

from dataclasses import dataclass

from common import ROOT

FASHION = ("configs/fashion_mnist.yaml", f"data.root={ROOT / 'data'}")
DIGITS = ("configs/digits.yaml",)
SGD = ("optimizer.name=sgd", "optimizer.momentum=0.9")
NESTEROV = (*SGD, "optimizer.nesterov=true")
ADAM_GRID = tuple(-3.5 + i / 2 for i in range(7))  # max_lr exponents: half-decade steps, 3.2e-4 .. 0.32
SGD_GRID = tuple(-2.5 + i / 2 for i in range(7))  # 3.2e-3 .. 3.2


@dataclass(frozen=True)
class Task:
    name: str
    half: str  # "tune" or "held_out"
    config: str
    overrides: tuple[str, ...]
    seeds: int
    grid: tuple[float, ...]

    def argv(self) -> list[str]:
        return ["--config", str(ROOT / self.config), *self.overrides]


def fashion(name, half, limit, batch, epochs, *extra, grid=ADAM_GRID, model="small_cnn") -> Task:
    overrides = (FASHION[1], f"data.limit_train={limit}", f"data.batch_size={batch}", f"trainer.epochs={epochs}", f"model.name={model}")
    # A model trained on 2k images varies more between seeds (its grid read 84.5, 83.5, 84.9 % at
    # neighbouring LRs over 3 seeds): six seeds, like digits' five, for a mean worth a regret.
    return Task(name, half, FASHION[0], overrides + extra, 6 if limit < 5000 else 3, grid)


def digits(name, half, batch, epochs, *extra, grid=ADAM_GRID) -> Task:
    # digits' test split is 359 images (0.28 points each): five seeds instead of three.
    return Task(name, half, DIGITS[0], (f"data.batch_size={batch}", f"trainer.epochs={epochs}", *extra), 5, grid)


TASKS = [
    fashion("fmnist10k-adamw-b128-e3", "tune", 10000, 128, 3, "optimizer.weight_decay=0.05"),
    digits("digits-sgd-b32-e8", "tune", 32, 8, *SGD, "optimizer.weight_decay=5e-4", grid=SGD_GRID),
    fashion(
        "fmnist5k-adam-ls0.1-b256-e6",
        "tune",
        5000,
        256,
        6,
        "optimizer.name=adam",
        "optimizer.weight_decay=0",
        "optimizer.label_smoothing=0.1",
    ),  # fmt: skip
    fashion("fmnist20k-nesterov-b512-e4", "tune", 20000, 512, 4, *NESTEROV, "optimizer.weight_decay=5e-4", grid=SGD_GRID),
    digits("digits-adamw-wd0.1-b64-e20", "tune", 64, 20, "optimizer.weight_decay=0.1"),
    fashion("fmnist5k-shufflenet-adamw-b64-e3", "tune", 5000, 64, 3, "optimizer.weight_decay=0.01", model="shufflenet_v2_x0_5"),
    fashion(
        "fmnist10k-sgd-ls0.1-b64-e3",
        "held_out",
        10000,
        64,
        3,
        *SGD,
        "optimizer.weight_decay=1e-4",
        "optimizer.label_smoothing=0.1",
        grid=SGD_GRID,
    ),  # fmt: skip
    digits("digits-adam-b128-e15", "held_out", 128, 15, "optimizer.name=adam", "optimizer.weight_decay=0"),
    fashion("fmnist20k-adamw-ls0.05-b256-e3", "held_out", 20000, 256, 3, "optimizer.weight_decay=0.01", "optimizer.label_smoothing=0.05"),
    fashion("fmnist2k-nesterov-b32-e10", "held_out", 2000, 32, 10, *NESTEROV, "optimizer.weight_decay=5e-4", grid=SGD_GRID),
    fashion("fmnist10k-adamw-b512-e8", "held_out", 10000, 512, 8, "optimizer.weight_decay=0.05"),
    fashion(
        "fmnist5k-shufflenet-sgd-b128-e4",
        "held_out",
        5000,
        128,
        4,
        *SGD,
        "optimizer.weight_decay=5e-4",
        grid=SGD_GRID,
        model="shufflenet_v2_x0_5",
    ),  # fmt: skip
]
