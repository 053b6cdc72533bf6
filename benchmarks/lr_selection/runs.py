"""The LR-selection benchmarks' runs: the task x seed jobs (grid runs, range tests with the probe, real runs
at picks), run two at a time and cached under benchmarks/results/tmp/lr_policies/, and their committed records
(results/lr_policies_runs.json), from which the choosers are scored without rerunning anything.

Shared by lr_policies (which runs and scores them), lr_horizon, lr_probe and decay_norm_bias.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import RESULTS, SCRATCH, read_json, run_forked
from benchmarks.lr_selection.lr_tasks import PRETRAIN_ARGV, PRETRAINED, TASKS, Task
from superconverge.config import RENAMED_KEYS

WORK = SCRATCH / "lr_policies"
TASK = {task.name: task for task in TASKS}


@dataclass(frozen=True)
class Job:
    kind: str  # grid | curve | verify
    task: str
    seed: int
    max_lr: float | None = None
    label: str = ""
    extra: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        lr = f"-lr{self.max_lr:.4g}" if self.max_lr is not None else ""
        return WORK / self.task / f"s{self.seed}-{self.kind}{self.label}{lr}"

    def argv(self) -> list[str]:
        # Tasks keep the key spelling their records were made with (the report shows it); the product gets a moved key's new name.
        task = [_renamed(arg) for arg in TASK[self.task].argv()]
        args = [*task, *self.extra, f"seed={self.seed}", f"output_dir={self.run_dir}"]
        return args + ([f"schedule.max_lr={self.max_lr!r}"] if self.max_lr is not None else [])


def _renamed(override: str) -> str:
    key, _, value = override.partition("=")
    return f"{RENAMED_KEYS.get(key, key)}={value}" if value else override


def finished(summary: dict) -> bool:
    """Ran to its end, or diverged (a result: Task.score counts it as 0); not stopped by a signal."""
    return summary["completed"] or summary.get("diverged", False)


def execute(job: Job) -> tuple[Job, dict]:
    """Run one job (or read its cached result): a range test's record, or a run's summary."""
    done = job.run_dir / ("lr_finder.json" if job.kind == "curve" else "summary.json")
    if done.exists() and job.kind != "curve" and not finished(read_json(done)):
        shutil.rmtree(job.run_dir)  # a run stopped by a signal (its summary says so): run it again from the start
    if not done.exists():
        code = run_forked("lr_find" if job.kind == "curve" else "train", job.argv())
        if code != 0 and job.kind != "curve" and not (done.exists() and finished(read_json(done))):
            raise RuntimeError(f"{job} exited {code}")
        if not done.exists():
            return job, {"error": f"exit {code}"}
    return job, read_json(done)


def pretrain() -> None:
    """The fine-tune tasks' backbone: a product run on other classes, its final weights saved as a state dict."""
    if PRETRAINED.exists():
        return
    from safetensors.torch import load_file

    run_dir = PRETRAINED.parent / "run"
    if run_forked("train", [*PRETRAIN_ARGV, f"output_dir={run_dir}"]) != 0:
        raise RuntimeError("the fine-tune tasks' pretraining run failed")
    summary = read_json(run_dir / "summary.json")
    print(f"pretrained the fine-tune backbone: test accuracy {summary['test_acc']:.4f} on its 6 classes", flush=True)
    torch.save(load_file(run_dir / "checkpoints" / "last" / "model.safetensors"), PRETRAINED)


def run_all(jobs: list[Job], work: Callable[[Job], tuple[Job, dict]] = execute) -> dict[Job, dict]:
    # Two single-threaded workers: both cores busy, no oversubscription.
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=20) as pool:
        results = {}
        for count, (job, result) in enumerate(pool.imap_unordered(work, jobs), 1):
            results[job] = result
            if count % 20 == 0 or count == len(jobs):
                print(f"  {count}/{len(jobs)} runs", flush=True)
        pool.close()  # not terminate(): the trainer's SIGTERM handler would turn that into a checkpoint request
        pool.join()
    return results


def accuracy(job: Job, summary: dict) -> float:
    """The run's score: test accuracy, or R^2 on a regression task (Task.score)."""
    return TASK[job.task].score(summary)


def seeds(task: Task) -> range:
    return range(task.seeds)


# --- the grid runs: one-cycle runs at fixed max_lr ----------------------------------------------


def grid_means(task: Task, results: dict[Job, dict], label: str = "", seeds: int | None = None) -> dict[float, float]:
    """Mean score over seeds at each grid exponent (log10 max_lr) that all ``seeds`` (else the task's) have run, of
    the grid runs labelled ``label`` (none: the task's own length)."""
    by_exponent: dict[float, list[float]] = {}
    for job, summary in results.items():
        if job.task == task.name and job.kind == "grid" and job.label == label:
            by_exponent.setdefault(round(math.log10(job.max_lr), 3), []).append(accuracy(job, summary))
    return {e: statistics.mean(v) for e, v in sorted(by_exponent.items()) if len(v) == (seeds or task.seeds)}


def grid_jobs(task: Task, exponents) -> list[Job]:
    return [Job("grid", task.name, seed, round(10**e, 10)) for e in exponents for seed in seeds(task)]


def cached_grid_jobs(task: Task) -> list[Job]:
    """Every grid run already on disk for a task (the grid as it grew)."""
    found = {float(path.name.split("-lr")[1]) for path in (WORK / task.name).glob("s0-grid-lr*") if (path / "summary.json").exists()}
    return [Job("grid", task.name, seed, lr) for lr in sorted(found) for seed in seeds(task)]


def edge_point(means: dict[float, float]) -> float | None:
    """Half a decade past the edge a grid's best point (log10 max_lr) lies on, or None if it lies inside (up to 10^1.5)."""
    best = max(means, key=means.get)
    if best == min(means):
        return best - 0.5
    return best + 0.5 if best == max(means) and best < 1.5 else None


# --- the curves: one range test per task x seed, then the probe over wide factors ---------------------

# One range test per task x seed in the product's setting (lr_finder.num_iter 100 at one cycle's peak
# momentum), followed by the probe over a wide set of factors of the default rule's pick, each
# candidate trained PROBE_STEPS optimizer steps from the same weights on the same batches. Candidates
# are independent, so any probe over a subset of these factors is read off this one record.
PROBE_FACTORS = (0.4, 0.63, 1, 1.6, 2.5, 4, 6, 10)
PROBE_STEPS = 30
CURVE_LABEL = f"-wide{PROBE_STEPS}-from{PROBE_FACTORS[0]:g}"  # the factors below 1 came in round 3
CURVE_EXTRA = ("lr_finder.probe=true", f"lr_finder.probe_factors=[{','.join(map(str, PROBE_FACTORS))}]",
               f"lr_finder.probe_steps={PROBE_STEPS}")  # fmt: skip
Curves = dict[tuple[str, int], dict]  # (task, seed) -> lr_finder.json


# --- the records: every run's result, committed, so candidates can be scored without rerunning ------

RECORDS = RESULTS / "lr_policies_runs.json"
SUMMARY_KEYS = ("test_acc", "test_loss", "wall_seconds", "completed")  # what accuracy() and the report read
CURVE_KEYS = ("lrs", "raw_losses", "sweeps", "max_lr", "lr_at_minimum", "tail_lr", "weak_curve", "probe_losses", "probe_accuracies",
              "error", "seconds", "probe_seconds", "suggestions")  # fmt: skip


def save_records(grid: dict[Job, dict], curves: Curves, runs: dict[Job, dict]) -> Path:
    def rows(results: dict[Job, dict]) -> list[dict]:
        return [{"task": j.task, "seed": j.seed, "max_lr": j.max_lr, **{k: s.get(k) for k in SUMMARY_KEYS}} for j, s in results.items()]

    curve_rows = [{"task": task, "seed": seed, **{k: found.get(k) for k in CURVE_KEYS}} for (task, seed), found in curves.items()]
    RECORDS.write_text(json.dumps({"grid": rows(grid), "verify": rows(runs), "curves": curve_rows}, separators=(",", ":")) + "\n")
    return RECORDS


def load_records() -> tuple[dict[Job, dict], Curves, dict[Job, dict]]:
    """(grid, curves, verify runs) as the phases return them, from the committed records."""
    found = json.loads(RECORDS.read_text())

    def results(kind: str) -> dict[Job, dict]:
        return {Job(kind, r["task"], r["seed"], r["max_lr"]): {k: r[k] for k in SUMMARY_KEYS} for r in found[kind]}

    curves = {(r["task"], r["seed"]): {k: v for k, v in r.items() if v is not None} for r in found["curves"]}
    return results("grid"), curves, results("verify")


def restore_cache() -> None:
    """Every recorded result written back where its run is missing from the cache, so a new checkout runs only
    what the records lack. A curve the product refused is left out: it is run again by the product as it is now."""
    grid, curves, runs = load_records()
    restored = 0
    for job, result in [*grid.items(), *runs.items()]:
        restored += _restore(job.run_dir / "summary.json", result)
    for (task, seed), found in curves.items():
        if not found.get("error") and "probe_accuracies" in found and len(found["probe_losses"]) == len(PROBE_FACTORS):  # else: run again
            restored += _restore(Job("curve", task, seed, label=CURVE_LABEL, extra=CURVE_EXTRA).run_dir / "lr_finder.json", found)
    print(f"restored {restored} results from {RECORDS} into {WORK}", flush=True)


def _restore(path: Path, result: dict) -> bool:
    if path.parent.exists():
        return False
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result))
    return True
