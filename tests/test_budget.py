"""trainer.budget: the duration and squeue parsers, the plan's arithmetic, and budgeted digits runs (resumed too)."""

from __future__ import annotations

import pytest
from conftest import DIGITS, ROOT, history, lr_trace, run, summary

from superconverge.budget import END_MARGIN_SECONDS, SAVE_FIXED_SECONDS, Costs, make_plan, parse_duration, parse_squeue_left, planned_steps
from superconverge.config import ConfigError, load_config


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


def budgeted(run_dir, *overrides: str) -> list[str]:
    return DIGITS + [f"output_dir={run_dir}", "trainer.budget=25s", "trainer.epochs=50", *overrides]


def assert_annealed(run_dir, result: dict) -> None:
    plan = result["budget"]
    assert result["stop_reason"] == "completed" and result["test_acc"] is not None
    assert result["optimizer_steps"] == result["total_optimizer_steps"] == plan["steps"]
    assert plan["budget_seconds"] == 25 and 0 < plan["spent_seconds"] < 25 and plan["step_seconds"] > 0
    assert plan["used_seconds"] > 0 and plan["overrun_seconds"] == max(0.0, round(plan["used_seconds"] - 25, 3))
    trace = lr_trace(run_dir)["lr"]
    assert len(trace) == plan["steps"]
    final = result["max_lr"] / (25 * 1e4)  # digits.yaml: default div_factor and final_div_factor
    assert trace[-1] == pytest.approx(final, rel=1e-3) and result["final_lr"] == pytest.approx(final, rel=1e-3)


def test_a_budgeted_run_ends_annealed_with_its_plan(tmp_path):
    run_dir = tmp_path / "run"
    proc = run(budgeted(run_dir))
    result = summary(run_dir)
    assert_annealed(run_dir, result)
    assert result["epochs_completed"] == -(-result["budget"]["steps"] // 20) <= 50  # the last epoch maybe partial
    assert "optimizer steps =" in proc.stdout and f"-> {result['budget']['steps']} optimizer steps" in proc.stdout


def test_a_fixed_max_lr_is_timed_before_the_plan(tmp_path):
    run_dir = tmp_path / "run"
    run(budgeted(run_dir, "schedule.max_lr=0.005", "trainer.budget=20s"))
    result = summary(run_dir)
    assert result["stop_reason"] == "completed" and result["budget"]["step_seconds"] > 0
    assert result["optimizer_steps"] == result["budget"]["steps"]


def test_a_resumed_budgeted_run_keeps_its_plan_on_another_process_count(tmp_path):
    run_dir = tmp_path / "run"
    run(budgeted(run_dir, "trainer.stop_after_steps=30"))
    first = summary(run_dir)
    assert first["stop_reason"] == "stop_after" and first["optimizer_steps"] == 30
    run(budgeted(run_dir), nproc=2)
    result = summary(run_dir)
    kept = ("budget_seconds", "spent_seconds", "step_seconds", "steps", "epochs")  # the plan; used_seconds grows
    assert [result["budget"][k] for k in kept] == [first["budget"][k] for k in kept] and result["times_resumed"] == 1
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
