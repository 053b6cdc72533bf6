"""``trainer.budget``: a one cycle sized to the wall-clock time the run has.

The budget counts from the start of the command the user typed. What is left of it once the
model is ready (start-up, data and the range test are spent) pays, epoch by epoch, for the
training steps at the measured step time plus each epoch's validation and checkpoint; the end
(the test split and a fixed margin) is set aside first. The cycle is as many optimizer steps as
that pays for, at most ``trainer.epochs`` epochs; the last epoch may be partial.

The first plan estimates validation and save costs; after every epoch the costs that epoch
measured re-plan the rest (``replan``), so a wrong estimate or a machine that slows down or speeds
up moves the cycle's end back to the budget. The schedule's remaining positions are then spread
over the new remaining steps (``schedule.ResizableOneCycle``): still one cycle, ending annealed.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass

import psutil

from superconverge.errors import UserError

# The batch script's preemption signal (e.g. ``--signal=B:USR1@120``) must still find time to act:
# a `slurm` budget ends this long before the job's time limit.
SLURM_SIGNAL_MARGIN_SECONDS = 180.0
# Set aside for the end beyond the measured costs: the summary, the plots and the processes' exit (2.3-2.9 s measured on a
# loaded 2-core machine after summary.json is written).
END_MARGIN_SECONDS = 3.5
# Evaluation has no backward pass and no optimizer step: about a third of a training step per sample.
EVAL_FRACTION_OF_STEP = 1 / 3
# A checkpoint writes the weights and about twice as much optimizer state (Adam's moments), at a
# conservative disk speed, plus a fixed cost per save and epoch record (metrics, plots).
SAVE_BYTES_PER_SECOND = 200e6
SAVE_FIXED_SECONDS = 0.3
# Set by `superconverge launch` for the one process it starts itself (torchelastic's workers find their launcher).
LAUNCHER_PID = "SUPERCONVERGE_LAUNCHER_PID"
# A re-plan changes the cycle only when the measured costs move its end by more than this share of
# the budget: small noise leaves the plan alone, a real drift (or a wrong first estimate) does not.
REPLAN_TOLERANCE = 0.01
# Fewer optimizer steps than this are not a training run: a budget that pays for less is refused.
MIN_STEPS = 10
# Global batches a fixed max_lr times before the cycle is planned (there is no range test to time):
# the range test's smallest, as one sweep.
WARMUP_STEPS = 10

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_SQUEUE_LEFT = re.compile(r"(?:(?:(\d+)-)?(\d+):)?(\d+):(\d+)")


class BudgetError(UserError):
    """The SLURM job's remaining time cannot be read, or the budget leaves no time to train."""


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"20m"``, ``"2h30m"`` (hours, minutes, seconds in that order, each at most once)."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 20m, 2h30m, or slurm")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"{text!r}: a budget must be longer than 0 seconds")
    return float(total)


def check_budget(value: str | None) -> str | None:
    """The config's check: a duration, or `slurm` inside a SLURM job."""
    if value is None:
        return None
    if value == "slurm":
        if "SLURM_JOB_ID" not in os.environ:
            raise ValueError("slurm: not inside a SLURM job (SLURM_JOB_ID is not set); give a duration such as 20m")
        return value
    parse_duration(value)
    return value


def parse_squeue_left(text: str) -> float | None:
    """``squeue -o %L``'s time left (``[D-]HH:MM:SS`` or ``MM:SS``) in seconds; None for ``UNLIMITED`` or ``INVALID``."""
    text = text.strip()
    if text in ("UNLIMITED", "INVALID", "NOT_SET"):
        return None
    match = _SQUEUE_LEFT.fullmatch(text)
    if match is None:
        raise BudgetError(f"squeue gave a time left of {text!r}, which is not [D-]HH:MM:SS")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def slurm_end_time(now: float) -> float:
    """Epoch seconds at which the SLURM job's time limit ends."""
    end = os.environ.get("SLURM_JOB_END_TIME")
    if end:
        return float(end)
    job = os.environ.get("SLURM_JOB_ID", "")
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BudgetError(f"trainer.budget=slurm: cannot read job {job}'s time left with squeue ({e})") from e
    left = parse_squeue_left(out.splitlines()[0] if out.strip() else "INVALID")
    if left is None:
        raise BudgetError(f"trainer.budget=slurm: job {job} has no time limit (squeue says {out.strip()!r}); give a duration")
    return now + left


def command_start() -> float:
    """Epoch seconds at which the user's command started: the launcher's (``superconverge launch``'s, torchelastic's), else
    this process's (a bare ``accelerate launch`` of one process: its own few seconds before the worker go uncounted)."""
    if os.environ.get(LAUNCHER_PID):
        return psutil.Process(int(os.environ[LAUNCHER_PID])).create_time()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        from superconverge.orphan import launcher_pid

        return psutil.Process(launcher_pid() or os.getppid()).create_time()
    return psutil.Process().create_time()


def deadline(spec: str, start: float, now: float) -> float:
    """Epoch seconds by which the whole command should have ended."""
    if spec == "slurm":
        return slurm_end_time(now) - SLURM_SIGNAL_MARGIN_SECONDS
    return start + parse_duration(spec)


@dataclass(frozen=True)
class Costs:
    """What the plan charges, in seconds: one optimizer step, each epoch's validation and save, the end."""

    step: float
    per_epoch: float  # validation split + one checkpoint save
    end: float  # test split + END_MARGIN_SECONDS (the last epoch's save is in its per_epoch)

    @classmethod
    def estimate(cls, step: float, global_batch: int, val_samples: int, test_samples: int, state_bytes: int) -> Costs:
        per_sample = step / global_batch * EVAL_FRACTION_OF_STEP
        save = SAVE_FIXED_SECONDS + 3 * state_bytes / SAVE_BYTES_PER_SECOND
        return cls(step, val_samples * per_sample + save, test_samples * per_sample + END_MARGIN_SECONDS)


@dataclass(frozen=True)
class BudgetPlan:
    budget_seconds: float
    spent_seconds: float
    step_seconds: float
    epoch_extra_seconds: float
    end_seconds: float
    steps: int  # the cycle's optimizer steps in all
    epochs: float  # steps / batches per epoch: a fraction where the last epoch is partial
    at_step: int = 0  # made after this many optimizer steps (a re-plan's)

    def record(self) -> dict:
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}

    def describe(self) -> str:
        what = f"re-plan after step {self.at_step}" if self.at_step else "budget"
        return (f"{what} {self.budget_seconds:.1f}s: spent {self.spent_seconds:.1f}s, step {self.step_seconds:.4f}s, "
                f"per epoch +{self.epoch_extra_seconds:.2f}s (validation, save), end {self.end_seconds:.1f}s "
                f"-> {self.steps} optimizer steps = {self.epochs:.2f} epochs")  # fmt: skip


def planned_steps(left: float, costs: Costs, batches_per_epoch: int, max_epochs: int) -> int:
    """Optimizer steps that ``left`` seconds pay for: whole epochs while they fit, then a partial one; at least one."""
    steps = 0
    for _ in range(max_epochs):
        full = batches_per_epoch * costs.step + costs.per_epoch
        if left < full:
            steps += max(0, min(batches_per_epoch, math.floor((left - costs.per_epoch) / costs.step)))
            break
        steps, left = steps + batches_per_epoch, left - full
    return max(steps, 1)


def cycle_seconds(steps: int, costs: Costs, batches_per_epoch: int) -> float:
    """What ``steps`` more optimizer steps from an epoch boundary cost, each epoch begun with its validation and save."""
    return steps * costs.step + math.ceil(steps / batches_per_epoch) * costs.per_epoch


def make_plan(budget: float, spent: float, costs: Costs, batches_per_epoch: int, max_epochs: int) -> BudgetPlan:
    left = budget - spent - costs.end
    if left < MIN_STEPS * costs.step + costs.per_epoch:
        raise BudgetError(
            f"trainer.budget={budget:.0f}s leaves no time to train: {spent:.1f}s went before training (start-up, data, "
            f"the range test) and the end needs {costs.end:.1f}s (test split, exit), but {MIN_STEPS} steps and a validation "
            f"cost {MIN_STEPS * costs.step + costs.per_epoch:.1f}s more. Give a longer budget, or trainer.epochs without one"
        )
    steps = planned_steps(left, costs, batches_per_epoch, max_epochs)
    return BudgetPlan(budget, spent, costs.step, costs.per_epoch, costs.end, steps, steps / batches_per_epoch)


def plan_now(spec: str, costs: Costs, batches_per_epoch: int, max_epochs: int) -> BudgetPlan:
    """The plan from this moment's clock (rank 0's; the caller broadcasts it)."""
    start, now = command_start(), time.time()
    end = deadline(spec, start, now)
    return make_plan(end - start, now - start, costs, batches_per_epoch, max_epochs)


def replan(budget: float, total: int, used: float, costs: Costs, done: int, batches_per_epoch: int, max_epochs: int) -> BudgetPlan | None:
    """The cycle of ``total`` steps re-sized at an epoch boundary (after ``done`` optimizer steps, ``used`` seconds of the
    budget) to the costs measured so far; None while it ends within REPLAN_TOLERANCE of the budget."""
    left = budget - used - costs.end
    if abs(cycle_seconds(total - done, costs, batches_per_epoch) - left) <= REPLAN_TOLERANCE * budget:
        return None
    # At least 2 more steps: the next one's LR is set already, the one after it ends the cycle annealed.
    steps = done + max(2, planned_steps(left, costs, batches_per_epoch, max_epochs - done // batches_per_epoch))
    if steps == total:
        return None
    return BudgetPlan(budget, used, costs.step, costs.per_epoch, costs.end, steps, steps / batches_per_epoch, done)
