"""The LR range test: torch-lr-finder at the global batch, spread over every rank.

Each iteration is one global batch: every rank pushes its own micro-batches through the prepared
(DDP) model, DDP averages the gradients, and the loss is averaged across ranks, so the curve is
the same on 1 or N processes and each rank does 1/N of the work; model and optimizer state are
restored exactly. Choosing max_lr is a pipeline of stages, each returning its own frozen record:
the sweeps' curve (``RangeTestCurve``, every rank), the rule's decision (``RuleDecision``: rank 0
applies ``lr_rules`` and broadcasts it, its error included), the LR probe (``lr_probe.ProbeResult``,
every rank) and a weak curve's check (``LearningCheck``); ``MaxLRChoice`` composes them, and the
main process writes ``lr_finder.json`` and ``lr_finder.png`` once, at the end.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, send_to_device
from torch import nn
from torch.utils.data import DataLoader
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from superconverge import jsonfile, lr_probe, lr_rules
from superconverge.batches import BatchLayout, EpochPlan, RankSampler
from superconverge.config import Config, LRFinderConfig, OptimizerConfig
from superconverge.console import RunConsole
from superconverge.errors import say
from superconverge.lr_probe import ProbeResult
from superconverge.lr_rules import RangeTestError
from superconverge.schedule import build_optimizer, follow_head_lr
from superconverge.signals import PROGRESS
from superconverge.step import TrainStep, unprepared_step
from superconverge.task import Task


@dataclass(frozen=True)
class RangeTestCurve:
    """The sweeps' curve: what the range test measured, before any rule reads it (the same on every rank but its seconds)."""

    lrs: tuple[float, ...]
    raw_losses: tuple[float, ...]  # the global batch's loss at each iteration, all sweeps merged in LR order
    smoothed_losses: tuple[float, ...]  # centred smoothing
    effective_batch_size: int
    world_size: int
    sweeps: int
    accumulation_steps: int  # micro-batches per iteration on each rank
    batches_per_rank: tuple[int, ...]
    stopped_on_divergence: bool
    seconds: float
    iterations_run: int  # every global batch trained on, a scout's included (``iterations``: points on the curve)

    @property
    def iterations(self) -> int:
        return len(self.lrs)


@dataclass(frozen=True)
class RuleDecision:
    """The policy's reading of the curve (rank 0's, broadcast): its max_lr, or why the curve gives none (and the fallback)."""

    policy: str
    suggestions: dict[str, float] = field(default_factory=dict)
    lr_at_minimum: float | None = None
    tail_lr: float | None = None
    max_lr: float = math.nan  # the policy's suggestion, or lr_finder.fallback_max_lr
    fallback_used: bool = False
    weak_curve: bool = False  # its loss got no lower than chance level (lr_rules.Curve.weak): the probe decides
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.fallback_used


@dataclass(frozen=True)
class LearningCheck:
    """A weak curve's check: did the probe's training get below chance level? (Else the curve's error, or the fallback.)"""

    best_loss: float  # the probe's lowest validation loss
    max_lr: float  # the probe's pick, or lr_finder.fallback_max_lr
    fallback_used: bool = False
    error: str | None = None


@dataclass(frozen=True)
class MaxLRChoice:
    """max_lr and what chose it: the stages' records for a range test, none for a fixed or a resumed max_lr."""

    max_lr: float
    policy: str  # "fixed" for a number in the config, else the policy (+probe where the probe chose), or "fallback"
    seconds: float = 0.0
    reused: bool = False
    range_test: RangeTestCurve | None = None
    suggestions: dict[str, float] = field(default_factory=dict)
    rule: RuleDecision | None = None
    probe: ProbeResult | None = None
    check: LearningCheck | None = None

    @classmethod
    def compose(cls, curve: RangeTestCurve, rule: RuleDecision, probe: ProbeResult | None = None,
                check: LearningCheck | None = None) -> MaxLRChoice:  # fmt: skip
        """The last stage that ran has the last word on max_lr."""
        last = next(stage for stage in (check, probe, rule) if stage is not None)
        fallback = rule.fallback_used or (check is not None and check.fallback_used)
        policy = "fallback" if fallback else rule.policy + ("+probe" if probe is not None else "")
        seconds = curve.seconds + (probe.seconds if probe is not None else 0.0)
        return cls(last.max_lr, policy, seconds, range_test=curve, suggestions=rule.suggestions, rule=rule, probe=probe, check=check)

    @property
    def error(self) -> str | None:
        """Why the range test gave no max_lr: the weak curve's check's, else the rule's."""
        return next((stage.error for stage in (self.check, self.rule) if stage is not None and stage.error is not None), None)

    @property
    def fallback_used(self) -> bool:
        return any(stage is not None and stage.fallback_used for stage in (self.rule, self.check))

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.fallback_used


class _GlobalBatches(TrainDataLoaderIter):
    """This rank's micro-batches on the training device, each with its place in its global batch.

    The training loop's data order (``batches``), full global batches only, epoch after epoch: one
    iteration of the test is one global batch whatever the process count.
    """

    def __init__(self, loader: DataLoader, sampler: RankSampler, accelerator: Accelerator,
                 progress: Callable[[int], None] | None = None) -> None:  # fmt: skip
        super().__init__(loader)
        self.micro_batches = sampler.micro_batches()  # in step with the loader's own pass over the sampler
        self.device, self.progress = accelerator.device, progress
        self.batches_seen = 0

    def inputs_labels_from_batch(self, batch):
        inputs, targets = send_to_device(batch, self.device)
        self.batches_seen += 1
        if self.progress is not None:
            self.progress(self.batches_seen)
        return (inputs, next(self.micro_batches)), targets


class _GlobalBatchFinder(LRFinder):
    """torch-lr-finder whose iteration is the training loop's own step over one global batch.

    torch-lr-finder has no public hook for its training step, so ``_train_batch`` is overridden
    (the one private override): each micro-batch runs ``TrainStep`` (augmentation, layout, autocast
    and Accelerate's scaler, the task's loss, ``accumulate``, clipping), every group follows the
    head's LR at its ratio, and the loss is averaged across ranks so all ranks stop together. Its
    LR schedules, state cache and restore, and divergence stop are used as they are; its history
    keeps only a smoothed loss, so the raw one is kept here for lr_rules.
    """

    def __init__(self, model: nn.Module, step: TrainStep, accelerator: Accelerator) -> None:
        super().__init__(model, step.optimizer, criterion=None, device=accelerator.device)
        self.step, self.accelerator, self.raw_losses = step, accelerator, []

    def _train_batch(self, train_iter, accumulation_steps, non_blocking_transfer=True) -> float:
        self.model.train()
        follow_head_lr(self.optimizer)
        local = torch.zeros((), device=self.accelerator.device)
        for _ in range(accumulation_steps):
            (inputs, micro), targets = next(train_iter)
            local += self.step(inputs, targets, micro).loss
        loss = self.accelerator.reduce(local / accumulation_steps, reduction="mean").item()
        self.raw_losses.append(loss)
        return loss


# A sweep whose budget cannot visit every step of its grid (num_iter < sweep_iter) first scouts:
# LEAD_STEPS steps an iteration until the loss has fallen LEAD_DROP below where it started (or the
# rest of the budget reaches the grid's end step by step). Then the weights go back and the sweep
# runs every step from a decade below where the loss moved. Training in a sweep is dominated by its
# last decade of LRs (their sum is geometric), so the steps it then visits meet nearly the model a
# whole sweep would, where a coarser grid would train less per decade and move the curve right.
LEAD_STEPS = 4
LEAD_DROP = 0.1  # well above the noise of a two-batch mean (a false start spends the budget too low)
LEAD_BACKOFF_DECADES = 1.0


@dataclass(frozen=True)
class SweepGrid:
    """The LRs of one sweep: step ``i`` of ``steps`` from start to end, shifted by ``offset`` of a step."""

    start: float
    end: float
    steps: int
    offset: float
    step_mode: str

    @property
    def steps_per_decade(self) -> float | None:
        return (self.steps - 1) / math.log10(self.end / self.start) if self.step_mode == "exp" else None

    def lr(self, i: int) -> float:
        position = (i + self.offset) / (self.steps - 1)
        if self.step_mode == "exp":
            return self.start * (self.end / self.start) ** position
        return self.start + (self.end - self.start) * position


def sweep_grid(cfg: LRFinderConfig, sweep: int) -> SweepGrid:
    """Sweep ``sweep``'s grid, shifted by the golden ratio's multiples of a step (mod 1): however many
    sweeps the budget holds, their LRs interleave evenly (the first one is the plain grid)."""
    offset = (sweep * (math.sqrt(5) - 1) / 2) % 1.0
    return SweepGrid(cfg.start_lr, cfg.end_lr, cfg.sweep_iter, offset, cfg.step_mode)


@dataclass(frozen=True)
class Sweep:
    points: list[tuple[float, float]]  # (lr, global-batch loss) that make the curve
    iterations: int  # run, the scout's included
    diverged: bool


class _Sweeper:
    """Sweeps through torch-lr-finder's range_test, each from the weights and optimizer state it started with."""

    def __init__(self, finder: _GlobalBatchFinder, batches: _GlobalBatches, cfg: Config) -> None:
        self.finder, self.batches, self.cfg = finder, batches, cfg
        # torch-lr-finder's reset() loads its cached optimizer state without copying, so after one reset
        # the live state aliases the cache and the next sweep would corrupt it: reload a private copy.
        self.pristine_optimizer = copy.deepcopy(finder.optimizer.state_dict())

    def restore(self) -> None:
        self.finder.reset()
        self.finder.optimizer.load_state_dict(copy.deepcopy(self.pristine_optimizer))

    def _run(self, grid: SweepGrid, first: int, last: int, iterations: int) -> list[tuple[float, float]]:
        finder_cfg = self.cfg.lr_finder
        self.finder.raw_losses = []
        for group in self.finder.optimizer.param_groups:
            group.pop("initial_lr", None)  # the last call's LR schedule, which range_test would take for a user's scheduler
        # torch-lr-finder prints and draws a tqdm bar of its own; the console belongs to the trainer.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self.finder.range_test(self.batches, start_lr=grid.lr(first), end_lr=grid.lr(last), num_iter=iterations,
                                   step_mode=grid.step_mode, smooth_f=finder_cfg.smooth_f, diverge_th=finder_cfg.diverge_th,
                                   accumulation_steps=self.cfg.trainer.grad_accum_steps)  # fmt: skip
        return list(zip(self.finder.history["lr"], self.finder.raw_losses, strict=True))

    def _scout(self, grid: SweepGrid, budget: int) -> tuple[list[tuple[float, float]], int]:
        """Strides through the grid until the loss moves; its points, and the step where it stopped."""
        points: list[tuple[float, float]] = []
        step, baseline = 0, None
        while budget - len(points) > 2 and step + budget - len(points) < grid.steps:
            chunk = self._run(grid, step, step + LEAD_STEPS, 2)
            points += chunk
            level = sum(loss for _, loss in chunk) / len(chunk)  # nan if it blew up: the comparison below fails, stop
            baseline = level if baseline is None else baseline
            if not level >= (1 - LEAD_DROP) * baseline:
                break
            step += 2 * LEAD_STEPS
        return points, step

    def sweep(self, grid: SweepGrid, budget: int) -> Sweep:
        """At most ``budget`` iterations over ``grid``; the model and optimizer are restored after."""
        scouted, start = [], 0
        if grid.steps_per_decade is not None and budget < grid.steps:
            scouted, moved = self._scout(grid, budget)
            self.restore()
            start = max(0, moved - round(LEAD_BACKOFF_DECADES * grid.steps_per_decade))
        iterations = min(budget - len(scouted), grid.steps - start)
        fine = self._run(grid, start, start + iterations - 1, iterations) if iterations >= 2 else []
        self.restore()
        below = [point for point in scouted if point[0] < grid.lr(start)]  # where the scout's loss had not moved
        return Sweep(below + fine, len(scouted) + len(fine), len(fine) < iterations)


def run_range_test(cfg: Config, task: Task, step: TrainStep, accelerator: Accelerator,
                   progress: Callable[[int], None] | None = None) -> RangeTestCurve:  # fmt: skip
    """torch-lr-finder over global batches on every rank; model and optimizer are restored after.

    ``num_iter`` iterations in all, spent on sweeps over a grid of ``sweep_iter`` steps, each from
    the same starting weights and each ending where its loss diverges: the model trains during a
    sweep, so a sweep with more steps per decade reaches each LR more trained and its curve moves to
    lower LRs. The step therefore never changes with num_iter: more iterations add sweeps, staggered
    in LR (resolution and averaging), and fewer than ``sweep_iter`` run one sweep that scouts through
    the LRs that train nothing first (``LEAD_STEPS``).
    """
    finder_cfg, world, data = cfg.lr_finder, accelerator.num_processes, task.data
    plan = EpochPlan(len(data.train), BatchLayout.configured(cfg, world), cfg.seed, drop_last=True)
    sampler = RankSampler(plan, accelerator.process_index, endless=True)
    loader = DataLoader(data.train, batch_sampler=sampler, num_workers=data.workers)
    batches = _GlobalBatches(loader, sampler, accelerator, progress)
    sweeper = _Sweeper(_GlobalBatchFinder(step.model, step, accelerator), batches, cfg)
    points: list[tuple[float, float]] = []
    sweeps, spent, stopped = 0, 0, False
    started = time.perf_counter()
    while sweeps == 0 or finder_cfg.num_iter - spent >= finder_cfg.sweep_iter // 4:  # a sweep that can reach the curve's bend
        found = sweeper.sweep(sweep_grid(finder_cfg, sweeps), min(finder_cfg.num_iter - spent, finder_cfg.sweep_iter))
        sweeps, spent, stopped = sweeps + 1, spent + found.iterations, stopped or found.diverged
        points += _finite_prefix(found.points)
    seconds = time.perf_counter() - started
    points.sort()
    lrs, raw = tuple(lr for lr, _ in points), tuple(loss for _, loss in points)
    return RangeTestCurve(
        lrs=lrs, raw_losses=raw, smoothed_losses=tuple(lr_rules.smooth(np.asarray(lrs), np.asarray(raw)).tolist()) if raw else (),
        effective_batch_size=plan.layout.global_batch, world_size=world, sweeps=sweeps,
        accumulation_steps=cfg.trainer.grad_accum_steps, batches_per_rank=tuple(gather_object([batches.batches_seen])),
        stopped_on_divergence=stopped, seconds=seconds, iterations_run=spent,
    )  # fmt: skip


def _finite_prefix(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A sweep's points up to its first non-finite loss (where it blew up)."""
    kept = []
    for lr, loss in points:
        if not math.isfinite(loss):
            break
        kept.append((lr, loss))
    return kept


def range_test_optimizer(cfg: Config) -> OptimizerConfig:
    """The optimizer as training has it at max_lr: one cycle's momentum (beta1) is base_momentum at the peak.

    SGD's step grows as 1 / (1 - momentum), so a test at 0.9 where training peaks at 0.85 measures an
    LR ceiling 1.5x lower than the one training meets.
    """
    if not (cfg.lr_finder.peak_momentum and cfg.schedule.cycle_momentum):
        return cfg.optimizer
    momentum = cfg.schedule.base_momentum
    return cfg.optimizer.model_copy(update={"momentum": momentum, "betas": (momentum, cfg.optimizer.betas[1])})


def find_max_lr(cfg: Config, accelerator: Accelerator, task: Task, model: nn.Module, console: RunConsole) -> MaxLRChoice:
    """The pipeline: the curve (every rank), rank 0's rule (broadcast), the LR probe and a weak curve's check (every rank)."""
    if cfg.schedule.max_lr != "auto":
        return MaxLRChoice(float(cfg.schedule.max_lr), "fixed")
    curve = measure_curve(cfg, accelerator, task, model, console)
    chance_loss = math.log(task.data.num_classes) if task.classifies else None
    rule = _rule_of_rank_zero(curve, cfg.lr_finder, chance_loss, accelerator, console)
    probe = check = None
    if rule.error is None and (cfg.lr_finder.probe or rule.weak_curve):
        probe = lr_probe.run_probe(cfg, accelerator, task, model, rule.max_lr, console)
        _say_probe(probe, task.classifies, console)
        if rule.weak_curve:  # every rank holds the same probe losses (reduced across ranks): every rank decides the same
            check = check_learning(probe, chance_loss, cfg.lr_finder.fallback_max_lr)
    return conclude(MaxLRChoice.compose(curve, rule, probe, check), Path(cfg.output_dir), accelerator.is_main_process)


def measure_curve(cfg: Config, accelerator: Accelerator, task: Task, model: nn.Module, console: RunConsole) -> RangeTestCurve:
    """The range test with an optimizer of its own; the scaler comes back as it was."""
    optimizer = build_optimizer(range_test_optimizer(cfg), model, cfg.lr_finder.start_lr, task.head)  # the trainer builds its own
    step = unprepared_step(cfg, accelerator, task, model, optimizer)
    scaler_state = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    console.start_phase("LR test", cfg.lr_finder.num_iter * cfg.trainer.grad_accum_steps)  # at most: sweeps stop on divergence
    PROGRESS.enter("the LR range test", "micro-batch")
    curve = run_range_test(cfg, task, step, accelerator, lambda done: (PROGRESS.bump(done), console.advance(done)))
    PROGRESS.leave()
    if scaler_state is not None:
        accelerator.scaler.load_state_dict(scaler_state)  # training starts from the scale it would have had without the test
    return curve


def apply_rule(curve: RangeTestCurve, cfg: LRFinderConfig, chance_loss: float | None) -> RuleDecision:
    """The configured policy's max_lr, or the curve's error with the configured fallback (none: the decision failed).

    ``chance_loss``: the loss of a model that knows nothing (ln of the class count under cross-entropy), else None.
    """
    skip_start, skip_end = cfg.skip_start * curve.sweeps, cfg.skip_end * curve.sweeps  # skips are per sweep
    try:
        found = lr_rules.analyze(curve.lrs, curve.raw_losses, skip_start, skip_end, chance_loss)
    except RangeTestError as exc:
        fallback = cfg.fallback_max_lr
        return RuleDecision(cfg.policy, max_lr=math.nan if fallback is None else fallback, fallback_used=fallback is not None,
                            error=str(exc))  # fmt: skip
    suggestions = lr_rules.suggestions(found)
    return RuleDecision(cfg.policy, suggestions, found.lr_at_minimum, found.tail_lr, suggestions[cfg.policy], weak_curve=found.weak)


def _rule_of_rank_zero(curve: RangeTestCurve, cfg: LRFinderConfig, chance_loss: float | None, accelerator: Accelerator,
                       console: RunConsole) -> RuleDecision:  # fmt: skip
    """Rank 0 applies the rule; its decision, a failed one included, is the one broadcast."""
    rule = None
    if accelerator.is_main_process:
        rule = apply_rule(curve, cfg, chance_loss)
        if not rule.failed:
            _say_rule(curve, rule, chance_loss, console)
    return broadcast_object_list([rule], from_process=0)[0]


def _say_rule(curve: RangeTestCurve, rule: RuleDecision, chance_loss: float | None, console: RunConsole) -> None:
    found = " ".join(f"{name}={lr:.3g}" for name, lr in rule.suggestions.items())
    chosen = "fallback" if rule.fallback_used else rule.policy
    console.line(f"LR range test {found} chosen={chosen} max_lr={rule.max_lr:.4g} seconds={curve.seconds:.1f}")
    if rule.weak_curve:
        console.line(f"The range test's loss got no lower than chance level ({chance_loss:.3g}): the LR probe checks that training learns")


def _say_probe(probe: ProbeResult, classifies: bool, console: RunConsole) -> None:
    found = " ".join(f"{lr:.3g}:{score.loss:.4g}" + (f"/{score.accuracy:.4f}" if classifies else "") for lr, score in probe.scores.items())
    console.line(f"LR probe (validation loss{'/accuracy' if classifies else ''}) {found} chosen by {probe.metric.value} "
                 f"max_lr={probe.max_lr:.4g} seconds={probe.seconds:.1f}")  # fmt: skip


def check_learning(probe: ProbeResult, chance_loss: float, fallback_max_lr: float | None) -> LearningCheck:
    """A weak curve stands if the probe's training got below chance level; else the curve's error (and the fallback, if any)."""
    best = min(loss for _, loss in probe.losses)
    if lr_rules.below_chance(best, chance_loss):
        return LearningCheck(best, probe.max_lr)
    tried = ", ".join(f"{lr:.3g}" for lr, _ in probe.losses)
    error = lr_rules.not_learning(
        f"no lower than chance level {chance_loss:.3g}, nor did the validation loss of short one-cycle runs at max_lr {tried}: "
        f"{best:.3g} at best"
    )
    if fallback_max_lr is None:
        return LearningCheck(best, probe.max_lr, error=error)
    return LearningCheck(best, fallback_max_lr, fallback_used=True, error=error)


def conclude(choice: MaxLRChoice, run_dir: Path, is_main_process: bool) -> MaxLRChoice:
    """The artifacts, once (main process), then on every rank the error, or the fallback's warning (main process)."""
    if is_main_process:
        write_artifacts(choice, run_dir)  # a failed curve too: it shows what went wrong
    if choice.failed:
        raise RangeTestError(choice.error)
    if choice.fallback_used:
        say(f"WARNING: {choice.error}. Using lr_finder.fallback_max_lr={choice.max_lr:g} instead.")
    return choice


def artifact_record(choice: MaxLRChoice) -> dict:
    """lr_finder.json's content: the curve, the rule's decision, the probe's candidates, and the final pick."""
    probe = choice.probe
    return {
        **asdict(choice.range_test),
        **asdict(choice.rule),
        "max_lr": choice.max_lr,
        "fallback_used": choice.fallback_used,
        "error": choice.error,
        "probe_losses": probe.losses if probe is not None else [],  # (candidate max_lr, validation loss)
        "probe_accuracies": probe.accuracies if probe is not None else [],  # ... and its validation accuracy, for a classifier
        "probe_metric": probe.metric.value if probe is not None else None,  # what chose among them
        "probe_seconds": probe.seconds if probe is not None else 0.0,
        "iterations": choice.range_test.iterations,
        "chosen": choice.policy,
    }


def write_artifacts(choice: MaxLRChoice, run_dir: Path) -> None:
    """lr_finder.json and lr_finder.png: for people; the run itself passes the records on."""
    (run_dir / "lr_finder.json").write_text(jsonfile.dumps(artifact_record(choice), indent=1))
    plot(choice, run_dir / "lr_finder.png")


# In the registry's order; a policy added past the palette's end cycles through it.
PALETTE = ("tab:red", "tab:brown", "tab:orange", "tab:green", "tab:purple", "tab:pink", "tab:olive", "tab:cyan")


def policy_colors() -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(lr_rules.POLICIES)}


def plot(choice: MaxLRChoice, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, rule = choice.range_test, choice.rule
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(curve.lrs, curve.raw_losses, color="0.75", linewidth=0.8, label="loss (global batch)")
    ax.plot(curve.lrs, curve.smoothed_losses, color="tab:blue", label="smoothed loss (centred)")
    colors = policy_colors()
    for name, lr in rule.suggestions.items():
        chosen = name == rule.policy and not choice.fallback_used
        ax.axvline(lr, color=colors.get(name, "black"), linewidth=3 if chosen else 1.2, linestyle="-" if chosen else "--",
                   label=f"{name}: {lr:.2e}" + (" (chosen)" if chosen else ""))  # fmt: skip
    if rule.lr_at_minimum:
        ax.axvline(rule.lr_at_minimum, color="0.4", linestyle=":", label=f"minimum of the curve: {rule.lr_at_minimum:.2e}")
    if choice.fallback_used:
        ax.axvline(choice.max_lr, color="black", linewidth=3, label=f"fallback: {choice.max_lr:.2e} (chosen)")
    finite = [v for v in curve.smoothed_losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), finite[0] * 2.5) * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"LR range test, global batch {curve.effective_batch_size} on {curve.world_size} process(es), {curve.iterations} iterations"
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
