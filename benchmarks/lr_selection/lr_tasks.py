"""The task matrix of the LR-rule benchmark: 20 small tasks in two halves of 10.

A rule (and any constant in it) is chosen on the ``tune`` half only; the ``held_out`` half is
what its quality is reported on. Each half mixes image classification (Fashion-MNIST, digits),
tabular classification at batch 1024-2048, a regression (MSE, scored by R^2), fine-tuning a
pretrained backbone with optimizer.backbone_lr_ratio, several training-set sizes, batch sizes from
32 to 2048, budgets from 3 to 20 epochs, AdamW/Adam/SGD/SGD-Nesterov, weight decay and label
smoothing, and models built in (small_cnn), from torchvision (shufflenet_v2_x0_5), from timm
(mobilenetv3_small_050) and the user's own (user_tasks.py beside this file, by import path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.common import ROOT, SCRATCH
from benchmarks.lr_selection.user_tasks import friedman_test_variance

FASHION = ("configs/fashion_mnist.yaml", f"data.root={ROOT / 'data'}")
DIGITS = ("configs/digits.yaml",)
SGD = ("optimizer.name=sgd", "optimizer.momentum=0.9")
NESTEROV = (*SGD, "optimizer.nesterov=true")
# max_lr exponents in half-decade steps: 3.2e-4 .. 0.1 (Adam family), 3.2e-3 .. 0.32 (SGD); a grid whose
# best point is at an edge grows there (lr_policies.run_grid). The first round's grids reached 0.32 and 3.2:
# no task's best was within a decade of those ends, and SGD had diverged (10-20 %) from 1.0 up.
ADAM_GRID = tuple(-3.5 + i / 2 for i in range(6))
SGD_GRID = tuple(-2.5 + i / 2 for i in range(5))


@dataclass(frozen=True)
class Task:
    name: str
    half: str  # "tune" or "held_out"
    config: str
    overrides: tuple[str, ...]
    seeds: int
    grid: tuple[float, ...]
    target_variance: float | None = None  # a regression task: scored by R^2 = 1 - test MSE / this, else by accuracy
    classes: int = 10

    @property
    def sgd(self) -> bool:
        return "optimizer.name=sgd" in self.overrides

    @property
    def chance_loss(self) -> float | None:
        """What the product passes its curve reader: ln(classes) under cross-entropy, None for a regression."""
        return None if self.target_variance is not None else math.log(self.classes)

    def argv(self) -> list[str]:
        return ["--config", str(ROOT / self.config), *self.overrides]

    def score(self, summary: dict) -> float:
        """Test accuracy, or R^2 for a regression; a diverged run (NaN) or a worse-than-constant fit counts as 0."""
        if self.target_variance is None:
            value = summary.get("test_acc")
        else:
            loss = summary.get("test_loss")
            value = None if loss is None else 1 - loss / self.target_variance
        return max(0.0, value) if value is not None and value == value else 0.0


def fashion(name, half, limit, batch, epochs, *extra, grid=ADAM_GRID, model="small_cnn") -> Task:
    overrides = (FASHION[1], f"data.limit_train={limit}", f"data.batch_size={batch}", f"trainer.epochs={epochs}", f"model.name={model}")
    # Five seeds everywhere (with three, a task's regret noise was the size of the target); a model
    # trained on 2k images varies most (84.5, 83.5, 84.9 % at neighbouring LRs over 3 seeds): six.
    return Task(name, half, FASHION[0], overrides + extra, 6 if limit < 5000 else 5, grid)


def digits(name, half, batch, epochs, *extra, grid=ADAM_GRID) -> Task:
    # digits' test split is 359 images (0.28 points each): five seeds instead of three.
    return Task(name, half, DIGITS[0], (f"data.batch_size={batch}", f"trainer.epochs={epochs}", *extra), 5, grid)


def user(name, half, data, batch, epochs, *extra, grid=ADAM_GRID, model="user_tasks:MLP", variance=None, classes=10) -> Task:
    """A task on a user's data set and model (user_tasks.py), named by import path; digits.yaml gives the rest."""
    overrides = (f"data.name=user_tasks:{data}", f"model.name={model}", f"data.batch_size={batch}", f"trainer.epochs={epochs}")
    return Task(name, half, DIGITS[0], overrides + extra, 5, grid, variance, classes)


# The fine-tune tasks' backbone: small_cnn trained on Fashion-MNIST's first six classes (lr_policies.pretrain,
# a product run), fine-tuned on the other four, whose head (4 outputs, not 6) starts fresh.
PRETRAINED = SCRATCH / "pretrained" / "small_cnn-fashion-classes0-5.pt"
PRETRAIN_ARGV = (
    "--config", str(ROOT / DIGITS[0]), "data.name=user_tasks:fashion_classes", f"data.root={ROOT / 'data'}",
    "data.kwargs.classes=[0,1,2,3,4,5]", "data.kwargs.limit=18000", "data.batch_size=128", "trainer.epochs=3",
    "model.name=small_cnn", "optimizer.weight_decay=0.05", "schedule.max_lr=0.01", "seed=0",
)  # fmt: skip
FINE_TUNE = (f"data.root={ROOT / 'data'}", "data.kwargs.classes=[6,7,8,9]", f"model.weights_file={PRETRAINED}")
FRIEDMAN = ("loss.name=torch.nn:MSELoss", "model.head=head")

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
    ),
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
    ),
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
    ),
    # Shapes the first round lacked: tabular (1-D) input at batch 1024+, a regression loss, a timm model,
    # and fine-tuning a pretrained backbone with optimizer.backbone_lr_ratio (weights from a local file).
    user("tab6-adamw-b1024-e20", "tune", "tabular", 1024, 20, "model.head=head", "optimizer.weight_decay=0.01", classes=6),
    user(
        "friedman-adam-b128-e8",
        "tune",
        "friedman",
        128,
        8,
        *FRIEDMAN,
        "optimizer.name=adam",
        "optimizer.weight_decay=0",
        variance=friedman_test_variance(),
    ),
    fashion("fmnist5k-timm-mnv3-adamw-b128-e3", "tune", 5000, 128, 3, "optimizer.weight_decay=0.01", model="timm/mobilenetv3_small_050"),
    user(
        "finetune2k-adamw-r0.3-b64-e4",
        "tune",
        "fashion_classes",
        64,
        4,
        *FINE_TUNE,
        "data.kwargs.limit=2000",
        "optimizer.weight_decay=0.01",
        "optimizer.backbone_lr_ratio=0.3",
        model="small_cnn",
        classes=4,
    ),
    user(
        "tab10-nesterov-b2048-e20",
        "held_out",
        "tabular",
        2048,
        20,
        *NESTEROV,
        "model.head=head",
        "optimizer.weight_decay=5e-4",
        "data.kwargs.samples=18000",
        "data.kwargs.features=60",
        "data.kwargs.informative=20",
        "data.kwargs.classes=10",
        "data.kwargs.seed=1",
        grid=SGD_GRID,
    ),
    user(
        "friedman-sgd-b64-e6",
        "held_out",
        "friedman",
        64,
        6,
        *FRIEDMAN,
        *SGD,
        "optimizer.weight_decay=1e-4",
        "data.kwargs.noise=0.5",
        "model.kwargs.width=128",
        grid=SGD_GRID,
        variance=friedman_test_variance(noise=0.5),
    ),
    user(
        "finetune1k-nesterov-r0.1-b32-e6",
        "held_out",
        "fashion_classes",
        32,
        6,
        *FINE_TUNE,
        *NESTEROV,
        "data.kwargs.limit=1000",
        "optimizer.weight_decay=5e-4",
        "optimizer.backbone_lr_ratio=0.1",
        grid=SGD_GRID,
        model="small_cnn",
        classes=4,
    ),
    fashion(
        "fmnist5k-timm-mnv3-nesterov-b128-e3",
        "held_out",
        5000,
        128,
        3,
        *NESTEROV,
        "optimizer.weight_decay=5e-4",
        model="timm/mobilenetv3_small_050",
        grid=SGD_GRID,
    ),
]
