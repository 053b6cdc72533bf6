"""Exact split-wide loss/accuracy across ranks, and early stopping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator

from superconverge.records import Metric


class SplitTotals:
    """Loss sum, correct predictions and sample count, kept on the device (no host sync per batch).

    Only the last batch of a loader Accelerate sharded can hold padding duplicates (``even_batches``),
    so that batch's outputs and targets alone go through ``gather_for_metrics`` and its loss is
    recomputed on the real samples; the rest is summed locally and reduced once. Exact for any
    mean-reduced loss. The training loader (``batches``) pads nothing: ``padded=False``.
    """

    def __init__(self, device: torch.device, loss: Callable, classifies: bool, already_global: list[float] | None = None,
                 padded: bool = True) -> None:  # fmt: skip
        self.loss, self.classifies, self.padded = loss, classifies, padded
        self.local = torch.zeros(3, dtype=torch.float64, device=device)
        self.shared = torch.tensor(already_global or [0.0, 0.0, 0.0], dtype=torch.float64, device=device)

    def add(self, accelerator: Accelerator, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        target = self.local
        if self.padded and accelerator.gradient_state.end_of_dataloader:
            outputs, targets = accelerator.gather_for_metrics((outputs, targets))
            loss, target = self.loss(outputs, targets).detach(), self.shared
        count = targets.shape[0]
        target[0] += loss.double() * count
        if self.classifies:
            target[1] += (outputs.argmax(1) == targets).sum()
        target[2] += count

    def fold(self, accelerator: Accelerator) -> list[float]:
        """Reduce the local part into the shared part (a collective); return the global totals."""
        self.shared += accelerator.reduce(self.local.clone(), reduction="sum")
        self.local.zero_()
        return self.shared.tolist()

    def running_loss(self) -> float:
        loss_sum, _, count = (self.local + self.shared).tolist()
        return loss_sum / max(count, 1)

    @staticmethod
    def summarize(totals: list[float], classifies: bool) -> tuple[float, float | None]:
        """Mean loss and accuracy (None where the task has no accuracy)."""
        loss_sum, correct, count = totals
        if not count:
            return float("nan"), float("nan") if classifies else None
        return loss_sum / count, correct / count if classifies else None


@dataclass
class EarlyStopping:
    """Same inputs on every rank (reduced metrics), so every rank takes the same decision."""

    metric: str
    patience: int | None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    @property
    def maximize(self) -> bool:
        return Metric(self.metric).maximize

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        delta = value - self.best if self.maximize else self.best - value
        return delta > self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's metric; return True if it is a new best."""
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)
