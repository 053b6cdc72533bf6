"""What a run reports, as typed records: the console, W&B, ``metrics.jsonl`` and ``summary.json`` read these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum


class Metric(str, Enum):
    """The metrics a run can monitor (early stopping, the `best` checkpoint, the LR probe), each with its direction."""

    VAL_ACC = "val_acc"
    VAL_LOSS = "val_loss"

    @property
    def maximize(self) -> bool:
        return self is Metric.VAL_ACC

    def better(self, a: float, b: float) -> bool:
        """``a`` is strictly better than ``b``."""
        return a > b if self.maximize else a < b


METRIC_NAMES = tuple(metric.value for metric in Metric)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float | None  # None where the task has no accuracy (the loss is the metric)
    val_loss: float | None
    val_acc: float | None
    train_samples: int
    val_samples: int
    lr: float | None
    optimizer_steps: int
    best: bool = False
    seconds: float = 0.0
    train_images_per_second: float | None = None

    def numbers(self) -> dict[str, float]:
        """The numeric fields (for W&B charts)."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int | float) and not isinstance(v, bool)}

    @classmethod
    def from_dict(cls, values: dict) -> EpochRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class RunSummary:
    completed: bool
    preempted: bool
    diverged: bool
    world_size: int
    global_batch_size: int
    micro_batch_size: int  # per process and micro-step, in the last invocation
    grad_accum_steps: int  # in the last invocation
    batch_layouts: list[dict]  # every invocation's {micro, accum, world, from_step}: a resume on another process count adds one
    max_lr: float
    max_lr_per_group: list[float]
    lr_policy: str
    lr_finder_seconds: float
    lr_suggestions: dict[str, float]
    optimizer_steps: int
    total_optimizer_steps: int
    final_lr: float | None
    epochs_completed: int
    best_epoch: int | None
    monitor: str  # the metric that chose `best` (and early stopping)
    best_val_loss: float | None
    best_val_acc: float | None
    test_loss: float | None
    test_acc: float | None
    stopped_early: bool
    resumed: bool
    times_resumed: int
    mixed_precision: str
    compiled: bool
    channels_last: bool
    device: str
    wall_seconds: float  # the trainer's, from its construction
    process_seconds: float  # the whole run's, from each process's start (start-up, data and the range test included)
    train_images_per_second: float | None
    wandb_run_id: str | None
    wandb_mode: str
    run_dir: str
