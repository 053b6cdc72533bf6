"""What a run reports, as typed records: the console, W&B, ``metrics.jsonl`` and ``summary.json`` read these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import ClassVar

from superconverge.errors import ExitCode


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

    def monitored(self, metric: Metric | str) -> float | None:
        """The epoch's value of ``metric``; without a validation split the training metric of the same name decides."""
        validated = self.val_loss is not None
        if Metric(metric) is Metric.VAL_ACC:
            return self.val_acc if validated else self.train_acc
        return self.val_loss if validated else self.train_loss

    def numbers(self) -> dict[str, float]:
        """The numeric fields (for W&B charts)."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int | float) and not isinstance(v, bool)}

    @classmethod
    def from_dict(cls, values: dict) -> EpochRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class StopReason(str, Enum):
    """Why a run ended: one value, decided alike on every rank."""

    COMPLETED = "completed"  # every epoch trained
    EARLY_STOP = "early_stop"  # the monitored metric stopped improving (trainer.early_stopping)
    PREEMPTED = "preempted"  # a stop signal or a dead launcher: checkpoint saved (if training had begun), rerun to continue
    STOP_AFTER = "stop_after"  # trainer.stop_after_epochs / stop_after_steps reached: checkpoint saved, rerun to continue
    DIVERGED = "diverged"  # the training loss became NaN or infinite

    @property
    def completed(self) -> bool:
        """The run is over: a rerun has nothing left to train."""
        return self in (StopReason.COMPLETED, StopReason.EARLY_STOP)

    @property
    def exit_code(self) -> ExitCode:
        """PREEMPTED: the requeue code (StopSignals.exit_code tells Ctrl-C's own code apart); DIVERGED: bad input (max_lr)."""
        return {StopReason.PREEMPTED: ExitCode.REQUEUE, StopReason.DIVERGED: ExitCode.BAD_INPUT}.get(self, ExitCode.DONE)


@dataclass(kw_only=True)
class RunSummary:
    """``summary.json``, one schema for every way a run ends: a stop before training leaves the training fields None.

    ``completed``, ``preempted``, ``diverged`` and ``stopped_early`` follow from ``stop_reason`` (batch scripts read them).
    """

    WANDB_KEYS: ClassVar[tuple[str, ...]] = ("best_val_loss", "best_val_acc", "test_loss", "test_acc", "max_lr", "lr_policy",
                                             "optimizer_steps", "epochs_completed", "stopped_early")  # fmt: skip

    completed: bool = field(init=False)
    preempted: bool = field(init=False)
    diverged: bool = field(init=False)
    stop_reason: StopReason
    stopped_during: str | None = None  # the start-up stage a stop before training cut short
    world_size: int | None = None
    global_batch_size: int | None = None
    micro_batch_size: int | None = None  # per process and micro-step, in the last invocation
    grad_accum_steps: int | None = None  # in the last invocation
    batch_layouts: list[dict] | None = None  # each invocation's {micro, accum, world, from_step}: a resume on another world adds one
    max_lr: float | None = None
    max_lr_per_group: list[float] | None = None
    lr_policy: str | None = None
    lr_finder_seconds: float | None = None
    lr_suggestions: dict[str, float] | None = None
    optimizer_steps: int | None = None
    total_optimizer_steps: int | None = None
    final_lr: float | None = None
    budget: dict | None = None  # trainer.budget's plan (BudgetPlan.record): seconds, measured step time, steps, epochs
    epochs_completed: int | None = None
    best_epoch: int | None = None
    monitor: str | None = None  # the metric that chose `best` (and early stopping)
    best_val_loss: float | None = None
    best_val_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    stopped_early: bool = field(init=False)
    resumed: bool | None = None
    times_resumed: int | None = None
    mixed_precision: str | None = None
    compiled: bool | None = None
    channels_last: bool | None = None
    device: str | None = None
    wall_seconds: float | None = None  # the trainer's, from its construction
    process_seconds: float | None = None  # the whole run's, from each process's start (start-up, data and the range test included)
    train_images_per_second: float | None = None
    wandb_run_id: str | None = None
    wandb_mode: str | None = None
    run_dir: str

    def __post_init__(self) -> None:
        reason = self.stop_reason
        self.completed, self.preempted, self.diverged = reason.completed, reason is StopReason.PREEMPTED, reason is StopReason.DIVERGED
        self.stopped_early = reason is StopReason.EARLY_STOP

    @classmethod
    def before_training(cls, stage: str, run_dir: str) -> RunSummary:
        """A stop request during a start-up stage (data loading, W&B start, the range test): nothing trained or saved yet."""
        return cls(stop_reason=StopReason.PREEMPTED, stopped_during=stage, run_dir=run_dir)

    def wandb(self) -> dict:
        """The values W&B's run summary shows."""
        return {key: getattr(self, key) for key in self.WANDB_KEYS}
