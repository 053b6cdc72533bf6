"""Exact split-wide loss/accuracy across ranks, and early stopping."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator


class SplitTotals:
    """Loss sum, correct predictions and sample count, kept on the device (no host sync per batch).

    Only the loader's last batch can hold padding duplicates (Accelerate's ``even_batches``), so
    that batch alone goes through ``gather_for_metrics``; the rest is summed locally and reduced once.
    """

    def __init__(self, device: torch.device, already_global: list[float] | None = None, remainder: int | None = None) -> None:
        self.local = torch.zeros(3, dtype=torch.float64, device=device)
        self.shared = torch.tensor(already_global or [0.0, 0.0, 0.0], dtype=torch.float64, device=device)
        # Accelerate's loader from skip_first_batches (mid-epoch resume) does not know its remainder,
        # so gather_for_metrics would keep the padding; the training split passes it explicitly.
        self.remainder = remainder

    def add(self, accelerator: Accelerator, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        per_sample = torch.stack([losses.detach().double(), (logits.detach().argmax(1) == labels).double()], 1)
        if accelerator.gradient_state.end_of_dataloader:
            per_sample = self._gather_last_batch(accelerator, per_sample)
            target = self.shared
        else:
            target = self.local
        target[:2] += per_sample.sum(0)
        target[2] += per_sample.shape[0]

    def _gather_last_batch(self, accelerator: Accelerator, per_sample: torch.Tensor) -> torch.Tensor:
        if self.remainder is None:
            return accelerator.gather_for_metrics(per_sample)
        gathered = accelerator.gather(per_sample)
        return gathered[: self.remainder] if self.remainder else gathered

    def fold(self, accelerator: Accelerator) -> list[float]:
        """Reduce the local part into the shared part (a collective); return the global totals."""
        self.shared += accelerator.reduce(self.local.clone(), reduction="sum")
        self.local.zero_()
        return self.shared.tolist()

    @staticmethod
    def summarize(totals: list[float]) -> tuple[float, float]:
        loss_sum, correct, count = totals
        return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))


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
        return self.metric.endswith("acc")

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
