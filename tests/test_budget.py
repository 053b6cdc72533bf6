"""trainer.budget: the duration and squeue parsers, the plan's and re-plan's arithmetic, the resizable one cycle, and
budgeted digits runs (resumed, and slowed down mid-run)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import DIGITS, ROOT, history, lr_trace, run, summary

from superconverge.budget import (
    END_MARGIN_SECONDS,
    REPLAN_TOLERANCE,
    SAVE_FIXED_SECONDS,
    Costs,
    make_plan,
    parse_duration,
    parse_squeue_left,
    planned_steps,
    replan,
)
from superconverge.config import ConfigError, load_config
from superconverge.schedule import ResizableOneCycle


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("2h30m", 9000), ("1h", 3600), ("1h2m3s", 3723)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "m", "2m30h", "1.5h", "-5s", "0s", "20 min", "slurmy"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("value", ["20x", "0s", "slurm"])  # slurm: outside a SLURM job
def test_a_bad_budget_is_a_config_error_naming_the_key(value, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "digits.yaml", [f"trainer.budget={value}"])
    assert "trainer.budget:" in str(info.value)


def test_slurm_budget_inside_a_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert load_config(ROOT / "configs" / "digits.yaml", ["trainer.budget=slurm"]).trainer.budget == "slurm"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1-02:03:04", 93784), ("02:03:04", 7384), ("03:04", 184), ("0:59", 59), ("UNLIMITED", None), ("INVALID", None)],
)
def test_squeue_time_left(text, seconds):
    assert parse_squeue_left(text + "\n") == seconds


def test_a_plan_that_ends_mid_epoch_charges_each_epoch_its_validation_and_save():
    costs = Costs(step=0.1, per_epoch=1.0, end=2.0)
    # 100 s - 10 spent - 2 end = 88 s; an epoch of 50 steps costs 5 + 1 = 6 s: 14 epochs (84 s), then 4 - 1 = 3 s: 30 steps.
    plan = make_plan(100.0, 10.0, costs, batches_per_epoch=50, max_epochs=100)
    assert plan.steps == 14 * 50 + 30 and plan.epochs == pytest.approx(14.6)
    # Without the per-epoch charge the same time pays for more steps.
    assert planned_steps(88.0, Costs(0.1, 0.0, 2.0), 50, 100) == 880


def test_epochs_are_the_ceiling_and_one_step_the_floor():
    costs = Costs(step=0.1, per_epoch=1.0, end=2.0)
    assert planned_steps(1000.0, costs, 50, max_epochs=3) == 150
    assert planned_steps(-5.0, costs, 50, max_epochs=3) == 1


def test_costs_bound_evaluation_by_the_step_rate():
    costs = Costs.estimate(step=0.3, global_batch=100, val_samples=1000, test_samples=2000, state_bytes=0)
    assert costs.per_epoch == pytest.approx(1.0 + SAVE_FIXED_SECONDS) and costs.end == pytest.approx(2.0 + END_MARGIN_SECONDS)


def test_a_replan_keeps_a_plan_that_still_fits_and_resizes_one_that_does_not():
    plan = make_plan(100.0, 10.0, Costs(step=0.1, per_epoch=1.0, end=2.0), batches_per_epoch=50, max_epochs=100).record()
    assert plan["steps"] == 730
    # After 2 epochs (12 s) at 22 s used, the costs as planned: 76 s left pay for the 630 steps left (63 + 13 s).
    assert replan(100.0, 730, 22.0, Costs(0.1, 1.0, 2.0), 100, 50, 100) is None
    # Within the tolerance: the end moves by less than 1 % of the budget.
    assert replan(100.0, 730, 22.0 + REPLAN_TOLERANCE * 100 * 0.9, Costs(0.1, 1.0, 2.0), 100, 50, 100) is None
    # Twice as slow: an epoch costs 10 + 1 s; 76 s pay for 6 epochs (66 s), then (10 - 1) / 0.2 = 45 steps.
    slower = replan(100.0, 730, 22.0, Costs(0.2, 1.0, 2.0), 100, 50, 100)
    assert slower.steps == 100 + 6 * 50 + 45 and slower.at_step == 100 and slower.spent_seconds == 22.0
    # Faster, up to the epochs' ceiling.
    faster = replan(100.0, 730, 22.0, Costs(0.01, 1.0, 2.0), 100, 50, max_epochs=20)
    assert faster.steps == 20 * 50
    # A later re-plan compares with the cycle as the last one left it.
    assert replan(100.0, slower.steps, 22.0, Costs(0.2, 1.0, 2.0), 100, 50, 100) is None


def cycle(total: int, resize_at: int | None = None, new_total: int | None = None, state: dict | None = None) -> list[float]:
    """The LRs a ResizableOneCycle gives its optimizer steps (resized after ``resize_at`` steps; from ``state``'s point)."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = ResizableOneCycle(optimizer, max_lr=0.1, total_steps=total, pct_start=0.25)
    if state is not None:
        schedule.load_state_dict(state)
        optimizer.param_groups[0]["lr"] = schedule.get_last_lr()[0]
    lrs = []
    while schedule.last_epoch < (new_total or total):
        if schedule.last_epoch == resize_at:
            schedule.resize(new_total)
            cycle.saved = schedule.state_dict()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


@pytest.mark.parametrize(("resize_at", "new_total"), [(10, 60), (60, 70), (60, 200), (60, 62), (10, 12)])
def test_a_resized_cycle_stays_continuous_and_ends_annealed(resize_at, new_total):
    plain, resized = cycle(100), cycle(100, resize_at, new_total)
    assert len(resized) == new_total and resized[: resize_at + 1] == plain[: resize_at + 1]
    assert resized[-1] == pytest.approx(0.1 / 25 / 1e4)
    assert max(resized) <= 0.1 + 1e-12
    # The rest is the old cycle's rest, sampled at new_total - resize_at evenly spaced positions: never a jump
    # bigger than the old cycle's steepest step times the squeeze.
    steepest = max(abs(a - b) for a, b in itertools.pairwise(plain))
    squeeze = max(1.0, (99 - resize_at) / max(new_total - 1 - resize_at, 1))
    assert max(abs(a - b) for a, b in itertools.pairwise(resized)) <= steepest * squeeze * 1.01 + 1e-12
    if resize_at >= 25:  # past the peak: the annealing only goes down
        assert all(a >= b for a, b in itertools.pairwise(resized[resize_at:]))


def test_a_cycle_resized_to_less_than_two_more_steps_is_refused():
    with pytest.raises(ValueError, match="at least 62"):
        cycle(100, 60, 61)


def test_a_resized_cycle_resumes_from_its_state():
    whole = cycle(100, 40, 150)
    assert cycle(100, state=cycle.saved, new_total=150) == whole[40:]


def budgeted(run_dir, *overrides: str) -> list[str]:
    return DIGITS + [f"output_dir={run_dir}", "trainer.budget=25s", "trainer.epochs=50", *overrides]


def assert_annealed(run_dir, result: dict) -> None:
    plan = result["budget"]
    assert result["stop_reason"] == "completed" and result["test_acc"] is not None
    assert result["optimizer_steps"] == result["total_optimizer_steps"] == (plan.get("replans") or [plan])[-1]["steps"]
    assert plan["budget_seconds"] == 25 and 0 < plan["spent_seconds"] < 25 and plan["step_seconds"] > 0
    assert plan["used_seconds"] > 0 and plan["overrun_seconds"] == max(0.0, round(plan["used_seconds"] - 25, 3))
    trace = lr_trace(run_dir)["lr"]
    assert len(trace) == result["total_optimizer_steps"]
    final = result["max_lr"] / (25 * 1e4)  # digits.yaml: default div_factor and final_div_factor
    assert trace[-1] == pytest.approx(final, rel=1e-3) and result["final_lr"] == pytest.approx(final, rel=1e-3)


def test_a_budgeted_run_ends_annealed_with_its_plan(tmp_path):
    run_dir = tmp_path / "run"
    proc = run(budgeted(run_dir))
    result = summary(run_dir)
    assert_annealed(run_dir, result)
    assert result["epochs_completed"] == -(-result["total_optimizer_steps"] // 20) <= 50  # the last epoch maybe partial
    assert "optimizer steps =" in proc.stdout and f"-> {result['budget']['steps']} optimizer steps" in proc.stdout
    for again in result["budget"].get("replans", []):
        assert f"re-plan after step {again['at_step']} " in proc.stdout and again["at_step"] % 20 == 0  # at epoch ends


def test_a_fixed_max_lr_is_timed_before_the_plan(tmp_path):
    run_dir = tmp_path / "run"
    run(budgeted(run_dir, "schedule.max_lr=0.005", "trainer.budget=20s"))
    result = summary(run_dir)
    assert result["stop_reason"] == "completed" and result["budget"]["step_seconds"] > 0
    assert result["optimizer_steps"] == result["total_optimizer_steps"]


def test_a_resumed_budgeted_run_keeps_its_plan_on_another_process_count(tmp_path):
    run_dir = tmp_path / "run"
    run(budgeted(run_dir, "trainer.stop_after_steps=30"))
    first = summary(run_dir)
    assert first["stop_reason"] == "stop_after" and first["optimizer_steps"] == 30
    run(budgeted(run_dir), nproc=2)
    result = summary(run_dir)
    kept = ("budget_seconds", "spent_seconds", "step_seconds", "steps", "epochs")  # the first plan; used_seconds grows
    assert [result["budget"][k] for k in kept] == [first["budget"][k] for k in kept] and result["times_resumed"] == 1
    assert result["budget"].get("replans", [])[: len(first["budget"].get("replans", []))] == first["budget"].get("replans", [])
    assert_annealed(run_dir, result)


# The entry point with the plan fixed at 2.5 epochs whatever the clock says: a partial last epoch, deterministically.
PARTIAL = """
import sys
import superconverge.trainer
from superconverge.budget import BudgetPlan
from superconverge.cli import main

def fixed(spec, costs, batches, max_epochs):
    steps = 2 * batches + batches // 2
    return BudgetPlan(25.0, 1.0, costs.step, costs.per_epoch, costs.end, steps, steps / batches)

superconverge.trainer.plan_now = fixed
superconverge.trainer.replan = lambda *args: None
sys.exit(main())
"""


def test_a_partial_last_epoch_validates_tests_and_resumes_inside_it_on_two_processes(tmp_path):
    script, run_dir = tmp_path / "partial.py", tmp_path / "run"
    script.write_text(PARTIAL)
    run(budgeted(run_dir, "trainer.stop_after_steps=45"), script=script)
    first = summary(run_dir)
    assert first["stop_reason"] == "stop_after" and first["budget"]["steps"] == 50 and first["epochs_completed"] == 2
    run(budgeted(run_dir), script=script, nproc=2)
    result = summary(run_dir)
    assert result["budget"]["steps"] == 50 and result["epochs_completed"] == 3
    assert_annealed(run_dir, result)
    records = history(run_dir)
    assert [r["optimizer_steps"] for r in records] == [20, 40, 50] and records[-1]["val_acc"] is not None


# A user's model that turns slow after its 60th training forward on each rank, as on a node another job starts sharing.
SLOWING = """
import time

import torch


class Slowing(torch.nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.fc = torch.nn.Linear(in_channels * 64, num_classes)
        self.forwards = 0

    def forward(self, x):
        if self.training:
            self.forwards += 1
            if self.forwards > 60:
                time.sleep(0.05)
        return self.fc(x.flatten(1))


def net(num_classes, in_channels):
    return Slowing(num_classes, in_channels)
"""


def test_a_run_that_slows_down_is_replanned_shorter_and_still_ends_annealed_on_two_processes(tmp_path):
    (tmp_path / "slowing.py").write_text(SLOWING)
    run_dir = tmp_path / "run"
    run(budgeted(run_dir, "model.name=slowing:net", "model.head=null", "trainer.budget=30s", "trainer.channels_last=false"),
        nproc=2, env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    result = summary(run_dir)
    plan = result["budget"]
    slowed = [again for again in plan.get("replans", []) if again["step_seconds"] >= 0.05]
    # A forward of 50 ms more per step: the first re-plan that measured it cut the cycle short of what was planned before.
    assert slowed, plan
    before = ([plan] + plan["replans"])[plan["replans"].index(slowed[0])]["steps"]
    assert slowed[0]["steps"] < before and slowed[0]["at_step"] % 10 == 0  # 10 global batches per epoch on 2 processes
    trace = lr_trace(run_dir)["lr"]
    assert len(trace) == result["optimizer_steps"] == result["total_optimizer_steps"] == plan["replans"][-1]["steps"]
    assert trace[-1] == pytest.approx(result["max_lr"] / (25 * 1e4), rel=1e-3) and result["stop_reason"] == "completed"
    assert max(trace) <= result["max_lr"] * (1 + 1e-6)


def test_a_budget_that_leaves_no_time_to_train_is_refused_on_every_rank(tmp_path):
    run_dir = tmp_path / "run"
    proc = run(budgeted(run_dir, "trainer.budget=2s"), nproc=2, check=False)
    said = "superconverge: error: trainer.budget=2s leaves no time to train"
    lines = [line for line in proc.stderr.splitlines() if line.startswith((said, f"[rank 1] {said}"))]
    assert proc.returncode != 0 and len(lines) == 2, proc.stderr[-3000:]  # one line from each rank (torchelastic repeats them)
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
