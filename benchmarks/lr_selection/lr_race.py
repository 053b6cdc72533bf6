"""The race on the 20-task matrix (issue 32): real races on both halves, their cost, and the default beside them.

    .venv/bin/python -m benchmarks.lr_selection.lr_race           # ~1.5 h on 2 cores: every task x seed's race (cached)
    .venv/bin/python -m benchmarks.lr_selection.lr_race report    # seconds: results/lr_race.md from results/lr_race_runs.json

Every task x seed of the matrix runs the product with ``lr_finder.race=true`` once, as a user would: its own range test,
then every candidate trains the whole cycle and the validation split judges them. The races run the default factors
plus x0.4 (RACED): the candidates are independent runs from the same weights and data order, so the default race
(config.LRFinderConfig's ``race_factors``) is read off the same runs by leaving x0.4 out, and so is the wider set
race_factors.md could not choose on the tune half alone. Runs are cached under benchmarks/results/tmp/lr_policies/
(``s0-race``), their compact records committed in results/lr_race_runs.json.

Scored as lr_policies scores every pick (choosers.task_regret): regret = the task's best grid mean - the grid mean at
the winner's max_lr, averaged over seeds, in points. The race's own x1 candidate is the default rule's run (the same
pick, the same run), so the default is scored from the same races. Beside it, read off the runs alone: the winner's
test score against its x1 candidate's (what the race gained, real runs) and how often the validation judge picked
the candidate that tested best.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import time

from benchmarks.common import RESULTS, machine_header, read_json
from benchmarks.lr_selection.choosers import interpolated
from benchmarks.lr_selection.lr_tasks import TASKS, Task
from benchmarks.lr_selection.runs import Job, execute, grid_means, load_records, pretrain, run_all, seeds
from superconverge.config import LRFinderConfig

RACED = (0.4, 1.0, 1.6, 2.5, 6.0, 10.0)
DEFAULT_FACTORS = tuple(LRFinderConfig().race_factors)
SETS = {
    "the default alone (x1)": (1.0,),
    f"the race, default factors {DEFAULT_FACTORS}": DEFAULT_FACTORS,
    f"the race with x0.4 {RACED}": RACED,
}
RECORDS = RESULTS / "lr_race_runs.json"
WALL_FILE = "race_wall.json"  # the whole command's wall, written beside the race by this script


def race_job(task: Task, seed: int) -> Job:
    factors = ",".join(f"{f:g}" for f in RACED)
    return Job("race", task.name, seed, label="", extra=("lr_finder.race=true", f"lr_finder.race_factors=[{factors}]"))


def timed(job: Job) -> tuple[Job, dict]:
    """execute() with the command's wall kept beside the race (a cached race keeps the wall it was run with)."""
    wall = job.run_dir / WALL_FILE
    start = time.monotonic()
    job, summary = execute(job)
    if not wall.exists():
        wall.write_text(json.dumps({"wall_seconds": round(time.monotonic() - start, 2)}))
    return job, summary


def record(job: Job) -> dict:
    race = read_json(job.run_dir / "lr_race.json")
    candidates = []
    for entry in race["entries"]:
        summary = read_json(job.run_dir / entry["folder"] / "summary.json")
        candidates.append({k: entry[k] for k in ("factor", "max_lr", "score", "test_acc", "test_loss", "stop_reason")}
                          | {"wall_seconds": summary.get("wall_seconds")})  # fmt: skip
    wall = read_json(job.run_dir / WALL_FILE)["wall_seconds"]
    return {"task": job.task, "seed": job.seed, "pick": race["pick"], "monitor": race["monitor"], "wall_seconds": wall,
            "candidates": candidates}  # fmt: skip


def winner(race: dict, factors: tuple[float, ...]) -> dict:
    """As race.Race.decided: the best monitored score among the candidates that did not diverge (the first on a tie)."""
    scored = [c for c in race["candidates"] if c["factor"] in factors and c["stop_reason"] != "diverged" and c["score"] is not None]
    sign = 1 if race["monitor"] == "val_acc" else -1
    return max(scored, key=lambda c: (sign * c["score"], -c["factor"]))


def test_score(task: Task, candidate: dict) -> float:
    return task.score({"test_acc": candidate["test_acc"], "test_loss": candidate["test_loss"]})


def regrets(records: list[dict], grids: dict[str, dict[float, float]], factors: tuple[float, ...]) -> dict[str, float]:
    out = {}
    for task in TASKS:
        means = grids[task.name]
        picks = [winner(r, factors)["max_lr"] for r in records if r["task"] == task.name]
        out[task.name] = 100 * (max(means.values()) - statistics.mean(interpolated(means, lr) for lr in picks))
    return out


def real_gain(records: list[dict], factors: tuple[float, ...], task: Task) -> float:
    """Points the winner tested above the x1 candidate (the default's own run), averaged over the task's seeds."""
    rows = [r for r in records if r["task"] == task.name]
    x1 = [next(c for c in r["candidates"] if c["factor"] == 1.0) for r in rows]
    return 100 * statistics.mean(test_score(task, winner(r, factors)) - test_score(task, d) for r, d in zip(rows, x1, strict=True))


def judged_right(records: list[dict], factors: tuple[float, ...]) -> tuple[int, int]:
    """(races whose validation winner also tested best among the candidates, races)."""
    tasks = {t.name: t for t in TASKS}
    right = 0
    for r in records:
        pool = [c for c in r["candidates"] if c["factor"] in factors and c["stop_reason"] != "diverged"]
        best = max(test_score(tasks[r["task"]], c) for c in pool)
        right += test_score(tasks[r["task"]], winner(r, factors)) == best
    return right, len(records)


def halves(values: dict[str, float]) -> list[float]:
    cells = []
    for half in ("tune", "held_out"):
        part = [values[t.name] for t in TASKS if t.half == half]
        cells += [max(part), statistics.mean(part)]
    return cells


def report(records: list[dict]) -> None:
    grid, _, _ = load_records()
    grids = {task.name: grid_means(task, grid) for task in TASKS}
    table = {name: regrets(records, grids, factors) for name, factors in SETS.items()}
    x1_wall = [next(c for c in r["candidates"] if c["factor"] == 1.0)["wall_seconds"] for r in records]
    x04_wall = [next(c for c in r["candidates"] if c["factor"] == 0.4)["wall_seconds"] for r in records]
    race_wall = sum(r["wall_seconds"] for r in records)
    lines = [
        "# The race on the 20-task matrix: real races, both halves (issue 32)",
        "",
        f"Run {datetime.date.today().isoformat()} on this 2-core VM, two races at a time, each single-threaded "
        "(`benchmarks/lr_selection/lr_race.py`; records in `results/lr_race_runs.json`). " + machine_header(),
        "",
        f"Each of the {len(records)} task x seeds ran `lr_finder.race=true` with factors {RACED}: the default set plus "
        "x0.4, read off the same runs (every candidate is an independent run from the same weights and data order). "
        "The validation split judges; **regret** = the task's best grid mean - the grid mean at the winner's max_lr, "
        "averaged over seeds, in points, as `lr_policies.md` scores every pick. The x1 candidate is the default rule's "
        "run, so the default is scored from the same range tests.",
        "",
        "| max_lr from | K (whole runs) | tune: worst | tune: mean | held-out: worst | held-out: mean | real runs: winner - x1, "
        "tune mean | held-out mean | validation judge picked the best-testing candidate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, factors in SETS.items():
        gains = {t.name: real_gain(records, factors, t) for t in TASKS}
        right, total = judged_right(records, factors)
        cells = " | ".join(f"{v:.2f}" for v in halves(table[name]))
        real = [statistics.mean(gains[t.name] for t in TASKS if t.half == h) for h in ("tune", "held_out")]
        lines.append(f"| {name} | {len(factors)} | {cells} | {real[0]:+.2f} | {real[1]:+.2f} | {right} of {total} |")
    lines += [
        "",
        "## Cost",
        "",
        f"All {len(records)} races took {race_wall / 3600:.2f} h of wall, one process each ({len(RACED)} candidates and a "
        f"range test per race); their x1 candidates alone, the default's runs, {sum(x1_wall) / 3600:.2f} h. Without x0.4 "
        f"(the default race, {len(DEFAULT_FACTORS)} candidates) a race costs {(race_wall - sum(x04_wall)) / sum(x1_wall):.1f}x "
        f"the default's run; with it {race_wall / sum(x1_wall):.1f}x. Sequential in one process, as `lr_finder.race` runs by "
        "default.",
        "",
        "## Per task",
        "",
        "| half | task | best grid max_lr | " + " | ".join(f"{n}: regret" for n in SETS) + " | default race's winners (factor: seeds) |",
        "|---|---|---|" + "---|" * len(SETS) + "---|",
    ]
    for task in TASKS:
        means = grids[task.name]
        won: dict[float, int] = {}
        for r in (r for r in records if r["task"] == task.name):
            factor = winner(r, DEFAULT_FACTORS)["factor"]
            won[factor] = won.get(factor, 0) + 1
        cells = " | ".join(f"{table[n][task.name]:.2f}" for n in SETS)
        wins = ", ".join(f"x{f:g}: {n}" for f, n in sorted(won.items()))
        lines.append(f"| {task.half} | {task.name} | {10 ** max(means, key=means.get):.1e} | {cells} | {wins} |")
    out = RESULTS / "lr_race.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    if sys.argv[1:] != ["report"]:
        pretrain()
        jobs = [race_job(task, seed) for task in TASKS for seed in seeds(task)]
        print(f"{len(jobs)} races of {len(RACED)} candidates", flush=True)
        results = run_all(jobs, timed)
        RECORDS.write_text(json.dumps([record(job) for job in results], separators=(",", ":")) + "\n")
    records = json.loads(RECORDS.read_text())
    report(records)


if __name__ == "__main__":
    main()
