"""The LR probe: short one-cycle runs at a few multiples of the range test's pick, kept by validation loss.

A rule reads the range test's curve, and never answers past its minimum; yet one cycle often trains
best well above the curve's bend (SGD, large batches: issue 18). The probe trains instead: from the
same weights, each candidate runs ``lr_finder.probe_steps`` optimizer steps of the training step
under a one-cycle schedule of that length, then its loss (or accuracy: ``lr_finder.probe_metric``)
on part of the validation split (the training split without one) decides. Every rank trains its
share of each global batch, the metrics are reduced across ranks, so every rank makes the same
choice; weights, buffers and the scaler come back as they were. Opt-in (and run on a weak curve):
its cost is ``len(probe_factors) * probe_steps`` optimizer steps.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch import nn
from torch.utils.data import DataLoader, Subset

from superconverge.batches import BatchLayout, EpochPlan, RankSampler
from superconverge.config import Config
from superconverge.console import RunConsole
from superconverge.metrics import SplitTotals
from superconverge.records import Metric
from superconverge.schedule import build_one_cycle, build_optimizer
from superconverge.step import TrainStep, unprepared_step
from superconverge.task import Task


@dataclass(frozen=True)
class ProbeScore:
    """A candidate's validation metrics after its short cycle."""

    loss: float  # inf if it blew up
    accuracy: float | None  # None where the task has no accuracy


@dataclass(frozen=True)
class ProbeResult:
    """The LR probe's candidates (in factor order) with their scores, and the one its metric chose."""

    scores: dict[float, ProbeScore]
    metric: Metric
    max_lr: float
    seconds: float

    @property
    def losses(self) -> list[tuple[float, float]]:
        return [(lr, score.loss) for lr, score in self.scores.items()]

    @property
    def accuracies(self) -> list[tuple[float, float]]:
        return [(lr, score.accuracy) for lr, score in self.scores.items() if score.accuracy is not None]


def run_probe(cfg: Config, accelerator: Accelerator, task: Task, model: nn.Module, pick: float, console: RunConsole) -> ProbeResult:
    """Each candidate max_lr (``pick`` x each factor) after its short cycle, and the best by the task's probe metric."""
    started = time.perf_counter()
    scores = _score_candidates(cfg, accelerator, task, model, pick, console)
    metric = Metric(task.probe_metric)
    return ProbeResult(scores, metric, best(scores, metric), time.perf_counter() - started)


def _score_candidates(cfg: Config, accelerator: Accelerator, task: Task, model: nn.Module, pick: float,
                      console: RunConsole) -> dict[float, ProbeScore]:  # fmt: skip
    """Each candidate max_lr (``pick`` x each factor) and its validation metrics after its short cycle."""
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    plan = EpochPlan(len(task.data.train), BatchLayout.configured(cfg, accelerator.num_processes), cfg.seed, drop_last=True)
    scores = {}
    for factor in cfg.lr_finder.probe_factors:
        console.start_phase(f"LR probe x{factor:g}", cfg.lr_finder.probe_steps * plan.layout.accum)
        scores[pick * factor] = _candidate(cfg, accelerator, task, model, plan, pick * factor, console)
        model.load_state_dict(weights)
        if scaler is not None:
            accelerator.scaler.load_state_dict(scaler)
    return scores


def best(scores: dict[float, ProbeScore], metric: Metric | str) -> float:
    """The candidate best by ``metric`` (the highest accuracy or the lowest loss), the loss breaking ties; never one that blew up."""
    maximize = Metric(metric).maximize

    def rank(lr: float) -> tuple[float, float]:
        score = scores[lr]
        if not math.isfinite(score.loss):
            return math.inf, math.inf
        return (-score.accuracy if maximize else score.loss), score.loss

    return min(scores, key=rank)


def _candidate(cfg: Config, accelerator: Accelerator, task: Task, model: nn.Module, plan: EpochPlan, max_lr: float,
               console: RunConsole) -> ProbeScore:  # fmt: skip
    optimizer = build_optimizer(cfg.optimizer, model, max_lr / cfg.schedule.div_factor, task.head)
    step = unprepared_step(cfg, accelerator, task, model, optimizer)
    schedule = build_one_cycle(cfg.schedule, optimizer, max_lr, cfg.lr_finder.probe_steps)
    sampler = RankSampler(plan, accelerator.process_index, endless=True)
    loader = DataLoader(task.data.train, batch_sampler=sampler, num_workers=task.data.workers)
    micro_batches = itertools.islice(sampler.micro_batches(), cfg.lr_finder.probe_steps * plan.layout.accum)
    accelerator.step = 0  # Accelerate's micro-step count: a cycle starts at a global batch's first micro-batch
    model.train()
    for done, (micro, batch) in enumerate(zip(micro_batches, loader, strict=False), 1):  # the loader is endless
        inputs, targets = send_to_device(batch, accelerator.device)
        step(inputs, targets, micro)
        if accelerator.sync_gradients:
            schedule.step()
        console.advance(done)
    return _validation(cfg, accelerator, task, step)


def _validation(cfg: Config, accelerator: Accelerator, task: Task, step: TrainStep) -> ProbeScore:
    """Mean loss (and accuracy) over the first ``probe_val_samples`` of the validation split, each rank a strided share of it."""
    split = task.data.val if task.data.val is not None else task.data.train
    rows = range(accelerator.process_index, min(len(split), cfg.lr_finder.probe_val_samples), accelerator.num_processes)
    loader = DataLoader(Subset(split, rows), batch_size=cfg.data.batch_size, num_workers=task.data.workers)
    # The module inside DDP: ranks may hold one batch more or fewer, and DDP's forward can be a collective.
    inner = accelerator.unwrap_model(step.model)
    totals = SplitTotals(accelerator.device, task.loss, task.classifies, padded=False)  # strided rows: no padding
    inner.eval()
    with torch.no_grad():
        for batch in loader:
            inputs, targets = send_to_device(batch, accelerator.device)
            outputs = inner(step.eval_inputs(inputs)).float()
            totals.add(accelerator, task.loss(outputs, targets).detach(), outputs, targets)
    loss, accuracy = SplitTotals.summarize(totals.fold(accelerator), task.classifies)
    return ProbeScore(loss if math.isfinite(loss) else math.inf, accuracy)
