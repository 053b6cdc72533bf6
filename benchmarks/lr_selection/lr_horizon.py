"""Does the best max_lr move with the run's length? Why a short probe misses (issue 18).

    .venv/bin/python -m benchmarks.lr_selection.lr_horizon   # ~2 h 25 min on 2 cores (sections 2: ~1 h 30 min, 4: ~50 min)

It needs lr_policies' records (results/lr_policies_runs.json); sections 1 and 3 are computed from them alone.

lr_finder.probe compares candidate max_lrs by short one-cycle runs (30 optimizer steps) and keeps
the best. That stands for a whole run only if the best max_lr of a short cycle is the best of a long
one. Four measurements:

1. From lr_policies' records (no runs): per task, log10 of (the grid's best max_lr at the run's own
   length / the 30-step probe's best candidate), against the run's length in optimizer steps.
2. Real runs: six tasks of the matrix, the grid's max_lrs at other lengths (1/4 and 1/2 of their epochs
   on three; 4x on four cheap ones, to 480-2,230 optimizer steps, the default job's order; their own length
   is the lr_policies grid), 2 seeds: where does the best max_lr lie at each length, and what do the
   default rule's and the probe's picks (which do not depend on the length) lose there?
3. From the records again: the default rule's pick scaled by (run steps / 100)^beta, a length
   correction (the range test is 100 steps), scored on the grids like lr_policies' candidates.
4. A probe at two lengths: every task x seed's range test again with a 15-step probe (factors from
   x0.4 to x10), next to the records' 30-step probe; each task's best candidate is extrapolated from
   15 to 30 steps on to the run's own length (a growth of g per doubling: x g^(log2(steps / 30) * damping)).
"""

from __future__ import annotations

import math
import statistics

from benchmarks.common import RESULTS, machine_header
from benchmarks.lr_selection import choosers
from benchmarks.lr_selection.choosers import best_candidate, halves, probe_pick, rule_regrets
from benchmarks.lr_selection.lr_tasks import TASKS, Task
from benchmarks.lr_selection.runs import PROBE_FACTORS, TASK, Job, edge_point, grid_means, load_records, pretrain, run_all, seeds

LENGTHS = {  # task -> other epoch counts to run (its grid at its own epochs is in the records)
    "tab10-nesterov-b2048-e20": (5, 10, 80),
    "fmnist20k-nesterov-b512-e4": (1, 2),
    "fmnist10k-adamw-b512-e8": (2, 4),
    # Longer runs of cheap tasks: every task of the matrix is 108-570 optimizer steps long, the default job 2,110.
    # (The MLPs on tabular data run at ~6k samples/s here: 180 epochs of tab10 would be 6 min a run.)
    "tab6-adamw-b1024-e20": (80,),
    "digits-sgd-b32-e8": (32,),
    "friedman-sgd-b64-e6": (24,),
}
SEEDS = 2


def option(task: Task, key: str) -> str:
    """The value a task's overrides give ``key`` (its epochs, batch size, data set)."""
    return dict(o.split("=", 1) for o in task.overrides)[key]


def peak(means: dict[float, float]) -> float:
    """log10 of the best max_lr: the vertex of a parabola through the best grid point and its neighbours."""
    exponents = sorted(means)
    best = max(means, key=means.get)
    i = exponents.index(best)
    if 0 < i < len(exponents) - 1:
        low, mid, high = means[exponents[i - 1]], means[best], means[exponents[i + 1]]
        curvature = low - 2 * mid + high
        if curvature < 0:
            return best + 0.5 * (exponents[i + 1] - best) * (low - high) / curvature
    return best


def offline_table(grid: dict[Job, dict], curves: dict) -> list[str]:
    lines = ["| task | half | optimizer | epochs | log10(grid best / probe's best) | log10(grid best / curve minimum) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    rows = []
    for task in TASKS:
        best = peak(grid_means(task, grid))
        probe, minimum = [], []
        for seed in seeds(task):
            found = curves[task.name, seed]
            chosen = best_candidate(found, task)
            if chosen is not None:
                probe.append(best - math.log10(chosen))
                minimum.append(best - math.log10(found["lr_at_minimum"]))
        rows.append((task, option(task, "trainer.epochs"), statistics.mean(probe), statistics.mean(minimum)))
    for task, epochs, probe, minimum in sorted(rows, key=lambda r: r[2]):
        lines.append(f"| {task.name} | {task.half} | {'SGD' if task.sgd else 'Adam'} | {epochs} | {probe:+.2f} | {minimum:+.2f} |")
    spread = [r[2] for r in rows]
    lines.append(f"\nThe probe's best is off the grid's by {statistics.mean(spread):+.2f} decades on average, {min(spread):+.2f} "
                 f"to {max(spread):+.2f} over the tasks (standard deviation {statistics.stdev(spread):.2f}).")  # fmt: skip
    return lines


def length_jobs(name: str, epochs: int, exponents) -> list[Job]:
    extra = (f"trainer.epochs={epochs}",)
    return [Job("grid", name, seed, round(10**e, 10), f"-e{epochs}", extra) for e in exponents for seed in range(SEEDS)]


def other_lengths(grid: dict[Job, dict]) -> dict[tuple[str, int], dict[float, float]]:
    """Each task's grid at its other lengths, grown at an edge as lr_policies' grids are, until its best point is inside."""
    lengths = [(name, e) for name, epochs in LENGTHS.items() for e in epochs]
    runs = run_all([job for name, e in lengths for job in length_jobs(name, e, grid_means(TASK[name], grid))])
    while True:
        extra = []
        for name, epochs in lengths:
            if (point := edge_point(grid_means(TASK[name], runs, f"-e{epochs}", SEEDS))) is not None:
                extra += length_jobs(name, epochs, [point])
        if not extra:
            return {(name, e): grid_means(TASK[name], runs, f"-e{e}", SEEDS) for name, e in lengths}
        runs |= run_all(extra)


def horizon_table(grid: dict[Job, dict], curves: dict) -> list[str]:
    rules, _ = choosers.candidates()
    picking = [rules[choosers.DEFAULT + choosers.DEFAULT_VARIANT], rules[choosers.PRODUCT_PROBE]]
    other = other_lengths(grid)
    lines = ["| task | epochs | optimizer steps | score at max_lr (mean of 2 seeds; the task's own length: its grid's) | best max_lr "
             "| regret: floor_edge | regret: lr_finder.probe |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    growth = []
    for name, lengths in LENGTHS.items():
        task = TASK[name]
        own = int(option(task, "trainer.epochs"))
        by_length = {epochs: other[name, epochs] for epochs in lengths} | {own: grid_means(task, grid)}
        for epochs, means in sorted(by_length.items()):
            cells = ", ".join(f"{10**e:.2g}: {100 * v:.1f}" for e, v in means.items())
            # the picks come from the task's own range tests and probes, which do not depend on the run's length
            regrets = " | ".join(f"{choosers.task_regret(chooser, task, curves, means):.2f}" for chooser in picking)
            steps = optimizer_steps(task) * epochs // own
            label = f"{epochs} (own)" if epochs == own else f"{epochs}"
            lines.append(f"| {name} | {label} | {steps} | {cells} | {10 ** peak(means):.2g} | {regrets} |")
        ends = [by_length[min(by_length)], by_length[max(by_length)]]
        growth.append(f"{name} x{10 ** (peak(ends[1]) - peak(ends[0])):.1f} for x{max(by_length) // min(by_length)} the steps")
    return [*lines, "", f"The best max_lr from the shortest length to the longest: {'; '.join(growth)}."]


def optimizer_steps(task: Task) -> int:
    """The run's optimizer steps: epochs x batches of its training split, as the configs split the data
    (Fashion-MNIST's val_fraction 0.1 of data.limit_train; digits 1,222 after its test and val splits; the
    user data sets' test rows, then 0.15 for val). Checked against the summaries of section 2's runs."""
    options = dict(o.split("=", 1) for o in task.overrides)
    data = options.get("data.name", "")
    if "data.limit_train" in options:
        train = int(options["data.limit_train"]) * 0.9
    elif not data:
        train = 1222
    elif data.endswith(":tabular"):
        train = (int(options.get("data.kwargs.samples", 12000)) - 4000) * 0.85
    elif data.endswith(":friedman"):
        train = (10000 - 3000) * 0.85
    else:  # a fine-tune: data.kwargs.limit images of the other classes
        train = int(options["data.kwargs.limit"]) * 0.85
    return int(options["trainer.epochs"]) * math.ceil(train / int(options["data.batch_size"]))


def length_corrected(grid: dict[Job, dict], curves: dict) -> list[str]:
    rules, _ = choosers.candidates()
    default = rules[choosers.DEFAULT + choosers.DEFAULT_VARIANT]
    grids = {task.name: grid_means(task, grid) for task in TASKS}
    steps = [optimizer_steps(task) for task in TASKS]
    lines = [f"Runs of {min(steps)}-{max(steps)} optimizer steps. Regret in points (grid-scored, as lr_policies' select phase).", "",
             "| beta | tune worst | tune mean | held-out worst | held-out mean |", "|---|---|---|---|---|"]  # fmt: skip
    for beta in (0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5):

        def scaled(found: dict, task: Task, beta: float = beta) -> float | None:
            lr = default(found, task)
            return None if lr is None else lr * (optimizer_steps(task) / 100) ** beta

        cells = halves(rule_regrets(scaled, curves, grids))
        lines.append(f"| {beta:g} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    return lines


SHORT_STEPS = 15
SHORT_FACTORS = (0.4, 0.63, 1, 1.6, 2.5, 4, 6, 10)
SHORT_SEEDS = 2  # of each task's seeds (its first two): the 15-step probes cost about an hour for all 101 task x seeds here
SHORT_EXTRA = ("lr_finder.probe=true", f"lr_finder.probe_factors=[{','.join(map(str, SHORT_FACTORS))}]",
               f"lr_finder.probe_steps={SHORT_STEPS}")  # fmt: skip


def best_factor(found: dict, task: Task) -> float | None:
    """The probe's best candidate over the range test's pick, as the product judges."""
    chosen = best_candidate(found, task)
    return None if chosen is None else chosen / probe_pick(found)


def two_lengths(grid: dict[Job, dict], curves: dict) -> list[str]:
    pretrain()  # the fine-tune tasks' backbone, if this checkout has not made it yet
    jobs = [Job("curve", t.name, seed, label=f"-wide{SHORT_STEPS}", extra=SHORT_EXTRA) for t in TASKS for seed in range(SHORT_SEEDS)]
    short = {(job.task, job.seed): found for job, found in run_all(jobs).items()}
    factors = {key: (best_factor(found, TASK[key[0]]), best_factor(curves[key], TASK[key[0]])) for key, found in short.items()}
    grids = {task.name: grid_means(task, grid) for task in TASKS}
    lines = [f"Each task's first {SHORT_SEEDS} seeds (picks), its grid's mean over all of them (regret in points).", "",
             "| damping | tune worst | tune mean | held-out worst | held-out mean |", "|---|---|---|---|---|"]  # fmt: skip
    for damping in (0, 0.25, 0.5, 0.75, 1.0):

        def extrapolated(found: dict, task: Task, damping: float = damping) -> float | None:
            if (task.name, found["seed"]) not in factors:
                return None  # a seed left out of this section: left out of the regret's mean for every damping alike
            at15, at30 = factors[task.name, found["seed"]]
            if at15 is None or at30 is None:
                return found.get("max_lr")
            doublings = math.log2(optimizer_steps(task) / 30)
            return probe_pick(found) * at30 * (at30 / at15) ** (doublings * damping)

        cells = halves(rule_regrets(extrapolated, curves, grids))
        lines.append(f"| {damping:g} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    growth = [at30 / at15 for at15, at30 in factors.values() if at15 and at30]
    counts = {g: sum(1 for x in growth if round(x, 2) == g) for g in sorted({round(x, 2) for x in growth})}
    return [
        *lines,
        "",
        f"Damping 0 is the 30-step probe alone. The best candidate's growth from 15 to 30 steps (task x seeds): {counts}.",
    ]


def main() -> None:
    grid, curves, _ = load_records()
    lines = [
        "# The best max_lr against the run's length (issue 18)",
        "",
        machine_header(),
        "",
        "## 1. The 30-step probe's best candidate against the grid's best at the run's own length (from lr_policies' records)",
        "",
        "Means over each task's seeds; the grid's best is the vertex of a parabola through its best point and neighbours "
        f"(in log10 max_lr); the probe's candidates are x{{{', '.join(f'{f:g}' for f in PROBE_FACTORS)}}} of "
        f"{choosers.PRODUCT.policy}'s pick, judged as lr_finder.probe_metric {choosers.PRODUCT.probe_metric} judges. Positive: the "
        "whole run wants more than the probe chose.",
        "",
        *offline_table(grid, curves),
        "",
        "## 2. Real runs at other lengths (the same task, fewer or more epochs)",
        "",
        *horizon_table(grid, curves),
        "",
        "## 3. The default rule's pick scaled by (run steps / 100)^beta (from the records)",
        "",
        *length_corrected(grid, curves),
        "",
        f"## 4. A probe at {SHORT_STEPS} and 30 steps, extrapolated to the run's length (grid-scored)",
        "",
        *two_lengths(grid, curves),
    ]
    out = RESULTS / "lr_horizon.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
