"""Does the LR probe (lr_finder.probe) pick a better max_lr than the rule it starts from? Paired real runs.

    .venv/bin/python -m benchmarks.lr_selection.lr_probe     # ~25 min on 2 cores; cached under benchmarks/results/tmp/lr_policies/

For every task x seed of ``lr_tasks.py``: one range test with the probe (its record holds both the
rule's pick and the probe's), then one-cycle runs at each pick. The probe's constants (factors 1,
2.5, 6; 50 steps) were set before any run, so every task is held out for it. The difference in test
accuracy is paired (same task, seed and data order), which cancels most of the seed noise a regret
against a grid carries; the probe's cost is reported against the run's own trainer time.
"""

from __future__ import annotations

import os
import statistics

from benchmarks.common import machine_header, write_paired_report
from benchmarks.lr_selection.lr_tasks import TASKS
from benchmarks.lr_selection.runs import Job, accuracy, run_all, seeds

# The probe's first constants (round 1, 12 tasks); lr_policies.py chose the defaults since, on 20 tasks.
PROBE = ("lr_finder.probe=true", "lr_finder.probe_factors=[1,2.5,6]", "lr_finder.probe_steps=50")


def picks() -> dict[tuple[str, int], dict]:
    jobs = [Job("curve", task.name, seed, label="-probe", extra=PROBE) for task in TASKS for seed in seeds(task)]
    return {(job.task, job.seed): found for job, found in run_all(jobs).items()}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    found = picks()
    runs = {}
    for (task, seed), record in found.items():
        if record.get("error"):
            continue
        rule = record["suggestions"][record["policy"]]
        runs[task, seed] = {"rule": Job("verify", task, seed, round(rule, 8), label="-rule"),
                            "probe": Job("verify", task, seed, round(record["max_lr"], 8), label="-probe")}  # fmt: skip
    done = run_all([job for pair in runs.values() for job in pair.values()])
    lines = [
        "# The LR probe against the rule it starts from (paired real runs)",
        "",
        machine_header(),
        "",
        "For every task x seed of `benchmarks/lr_selection/lr_tasks.py`: the range test with `lr_finder.probe=true` (candidates: the "
        "`floor_edge` pick x 1, 2.5 and 6, each trained 50 optimizer steps of one cycle from the same weights, kept by "
        "validation loss), then a full one-cycle run at the rule's pick and one at the probe's. Accuracy on the test split, "
        "mean over seeds; difference = probe - rule in points (positive: the probe helps). The probe's constants were fixed "
        "before any run (no task was used to tune them). Cost: the probe's seconds over the run's trainer seconds.",
        "",
        "| half | task | rule max_lr (geo-mean) | probe max_lr (geo-mean) | probe's factor per seed | rule acc % | probe acc % | "
        "difference | probe cost % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    diffs: dict[str, list[float]] = {"tune": [], "held_out": []}
    for task in TASKS:
        pairs = [(runs[task.name, s], found[task.name, s]) for s in seeds(task) if (task.name, s) in runs]
        if not pairs:
            lines.append(f"| {task.half} | {task.name} | no curve | | | | | | |")
            continue
        rule_acc = statistics.mean(accuracy(p["rule"], done[p["rule"]]) for p, _ in pairs)
        probe_acc = statistics.mean(accuracy(p["probe"], done[p["probe"]]) for p, _ in pairs)
        factors = ", ".join(f"{p['probe'].max_lr / p['rule'].max_lr:.2g}" for p, _ in pairs)
        cost = statistics.mean(r["probe_seconds"] / done[p["probe"]]["wall_seconds"] for p, r in pairs)
        diff = 100 * (probe_acc - rule_acc)
        diffs[task.half].append(diff)
        lines.append(
            f"| {task.half} | {task.name} | {statistics.geometric_mean([p['rule'].max_lr for p, _ in pairs]):.2e} | "
            f"{statistics.geometric_mean([p['probe'].max_lr for p, _ in pairs]):.2e} | {factors} | {100 * rule_acc:.2f} | "
            f"{100 * probe_acc:.2f} | {diff:+.2f} | {100 * cost:.1f} |"
        )
    write_paired_report("lr_probe", lines, diffs)


if __name__ == "__main__":
    main()
