"""Which range-test rule picks max_lr best, chosen on half of a task matrix and judged on the other half.

    .venv/bin/python benchmarks/lr_policies.py            # every phase; ~45 min on 2 cores (80 min of runs, 2 at a time)
    .venv/bin/python benchmarks/lr_policies.py grid       # one phase: grid | curves | verify | report

1. grid: one-cycle runs at fixed max_lr over a half-decade grid for every task x seed
   (a grid whose best point is at an edge grows by one step on that side until it is not).
2. curves: range tests per task x seed, at the optimizer's own momentum and at one cycle's peak momentum.
3. select: every candidate (range-test setting x way of reading the curve x rule x constant) is
   scored on the tune half only, by accuracy interpolated on the grid at the LR it picks; the
   lowest worst-case regret wins (mean regret breaks ties).
4. verify: real one-cycle runs at the winner's pick and at the old default's pick (steepest descent
   of torch-lr-finder's EMA curve) on every task x seed; the held-out half's regrets are the ones
   the README reports.

Runs are cached under benchmarks/results/tmp/lr_policies/ (a rerun continues where it stopped).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SCRATCH, machine_header, read_json, run_in_process  # noqa: E402
from lr_tasks import TASKS, Task  # noqa: E402

from superconverge import lr_rules  # noqa: E402
from superconverge.lr_rules import Curve  # noqa: E402

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
        args = [*TASK[self.task].argv(), *self.extra, f"seed={self.seed}", f"output_dir={self.run_dir}"]
        return args + ([f"schedule.max_lr={self.max_lr!r}"] if self.max_lr is not None else [])


def execute(job: Job) -> tuple[Job, dict]:
    """Run one job (or read its cached result): a range test's record, or a run's summary."""
    done = job.run_dir / ("lr_finder.json" if job.kind == "curve" else "summary.json")
    if not done.exists():
        code = run_in_process("lr_find" if job.kind == "curve" else "train", job.argv())
        if code != 0 and job.kind != "curve":
            raise RuntimeError(f"{job} exited {code}")
        if not done.exists():
            return job, {"error": f"exit {code}"}
    return job, read_json(done)


def run_all(jobs: list[Job]) -> dict[Job, dict]:
    # Two single-threaded workers: both cores busy, no oversubscription.
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=20) as pool:
        results = {}
        for count, (job, result) in enumerate(pool.imap_unordered(execute, jobs), 1):
            results[job] = result
            if count % 20 == 0 or count == len(jobs):
                print(f"  {count}/{len(jobs)} runs", flush=True)
        pool.close()  # not terminate(): the trainer's SIGTERM handler would turn that into a checkpoint request
        pool.join()
    return results


def accuracy(summary: dict) -> float:
    acc = summary.get("test_acc")
    return acc if acc is not None and acc == acc else 0.0  # a diverged run (NaN) counts as 0


def seeds(task: Task) -> range:
    return range(task.seeds)


# --- phase 1: the grid -------------------------------------------------------------------------


def grid_means(task: Task, results: dict[Job, dict]) -> dict[float, float]:
    """Mean test accuracy over seeds at each grid exponent (log10 max_lr)."""
    by_exponent: dict[float, list[float]] = {}
    for job, summary in results.items():
        if job.task == task.name and job.kind == "grid":
            by_exponent.setdefault(round(math.log10(job.max_lr), 3), []).append(accuracy(summary))
    return {e: statistics.mean(v) for e, v in sorted(by_exponent.items()) if len(v) == task.seeds}


def grid_jobs(task: Task, exponents) -> list[Job]:
    return [Job("grid", task.name, seed, round(10**e, 10)) for e in exponents for seed in seeds(task)]


def cached_grid_jobs(task: Task) -> list[Job]:
    """Every grid run already on disk for a task (the grid as it grew)."""
    found = {float(path.name.split("-lr")[1]) for path in (WORK / task.name).glob("s0-grid-lr*") if (path / "summary.json").exists()}
    return [Job("grid", task.name, seed, lr) for lr in sorted(found) for seed in seeds(task)]


def run_grid() -> dict[Job, dict]:
    exponents = {task.name: list(task.grid) for task in TASKS}
    results = run_all([job for task in TASKS for job in grid_jobs(task, exponents[task.name])])
    while True:  # grow any grid whose best point is at an edge
        extra = []
        for task in TASKS:
            means = grid_means(task, results)
            best = max(means, key=means.get)
            if best == min(means):
                exponents[task.name].insert(0, best - 0.5)
                extra += grid_jobs(task, [best - 0.5])
            elif best == max(means) and best < 1.5:
                exponents[task.name].append(best + 0.5)
                extra += grid_jobs(task, [best + 0.5])
        if not extra:
            return results
        print(f"growing grids by {len(extra)} runs", flush=True)
        results |= run_all(extra)


# --- phase 2: the curves and the candidate rules -------------------------------------------------


# Range-test settings tried, lr_finder.num_iter 100 (one sweep of 100 steps over 1e-6..10) each
# (label: the run directories' suffix): at the optimizer's own momentum, and at one cycle's momentum
# at max_lr (lr_finder.peak_momentum, schedule.base_momentum 0.85).
SETTINGS = {
    "own momentum": ("-sweep100", ("lr_finder.peak_momentum=false",)),
    "peak momentum": ("-peak100", ()),
}
Curves = dict[tuple[str, str, int], dict]  # (setting, task, seed) -> lr_finder.json


def run_curves() -> Curves:
    jobs = {Job("curve", task.name, seed, label=label, extra=extra): (setting, task.name, seed)
            for setting, (label, extra) in SETTINGS.items() for task in TASKS for seed in seeds(task)}  # fmt: skip
    return {jobs[job]: found for job, found in run_all(list(jobs)).items()}


def _capped(rule: Callable[[Curve], float]) -> Callable[[Curve], float]:
    """A rule's answer, never at or past the curve's minimum (what the product guarantees)."""

    def capped(curve: Curve) -> float:
        return min(rule(curve), curve.lr_at_minimum / 1.25)

    return capped


# How the raw curve is read: centred smoothing width (decades) and the rise that starts the tail.
VARIANTS = {
    " [w0.2 half]": (0.2, 0.5, 0.1),
    " [w0.4 half]": (0.4, 0.5, 0.1),
    " [w0.2 bump]": (0.2, 0.05, 0.3),
    " [w0.4 bump]": (0.4, 0.05, 0.3),
}


def rule_families() -> dict[str, Callable[[Curve], float]]:
    rules: dict[str, Callable[[Curve], float]] = {"steepest": lr_rules.steepest, "valley": lr_rules.valley}
    for k in (1.25, 1.5, 2, 2.5, 3, 4, 6, 10):
        rules[f"minimum/{k:g}"] = lr_rules.minimum_div(k)
    for k in (2, 3, 5, 10):
        rules[f"tail/{k:g}"] = _capped(lambda c, k=k: (c.tail_lr or c.lr_at_minimum) / k)
    for k in (2, 3, 5):
        rules[f"steepest*{k:g}"] = _capped(lambda c, k=k: lr_rules.steepest(c) * k)
    rules["geomean(steepest, minimum/1.5)"] = _capped(lambda c: math.sqrt(lr_rules.steepest(c) * c.lr_at_minimum / 1.5))
    for k in (0.02, 0.05, 0.1, 0.2):
        rules[f"floor_edge({k:g})"] = lr_rules.floor_edge(k)
        rules[f"geomean(floor_edge({k:g}), minimum/1.25)"] = lambda c, k=k: math.sqrt(lr_rules.floor_edge(k)(c) * c.lr_at_minimum / 1.25)
    return rules


def old_default(found: dict) -> float | None:
    """The rule this benchmark replaces: steepest descent of torch-lr-finder's EMA curve (smooth_f 0.05), unrestricted."""
    raw = np.asarray(found["raw_losses"], dtype=float)
    cut = len(raw) if np.isfinite(raw).all() else int(np.argmin(np.isfinite(raw)))
    ema = [raw[0]]
    for value in raw[1:cut]:
        ema.append(0.05 * value + 0.95 * ema[-1])
    lrs, losses = np.asarray(found["lrs"][10 : cut - 5]), np.asarray(ema[10 : cut - 5])
    return float(lrs[int(np.argmin(np.gradient(losses, np.log10(lrs))))]) if len(lrs) > 5 else None


Candidate = tuple[str, str, Callable[[Curve], float] | None]  # (setting, curve reading, rule); rule None: the old default


def candidate_rules() -> dict[str, Candidate]:
    """Every range-test setting x way of reading the curve x rule family x constant."""
    return {
        f"{name}{variant} ({setting})": (setting, variant, rule)
        for setting in SETTINGS
        for variant in VARIANTS
        for name, rule in rule_families().items()
    }


def analyze(found: dict, variant: str) -> Curve | None:
    width, rise, rise_of_min = VARIANTS[variant]
    sweeps = found.get("sweeps", 1)  # skips are per sweep, as in the product
    try:
        return lr_rules.analyze(found["lrs"], found["raw_losses"], 10 * sweeps, 5 * sweeps, chance_loss=math.log(10),
                                smooth_decades=width, tail_rise=rise, tail_rise_of_min=rise_of_min)  # fmt: skip
    except lr_rules.RangeTestError:
        return None


def pick(candidate: Candidate, curves: Curves, task: str, seed: int) -> float | None:
    setting, variant, rule = candidate
    found = curves[setting, task, seed]
    if rule is None:
        return old_default(found)
    curve = analyze(found, variant)
    return rule(curve) if curve is not None else None


def interpolated(means: dict[float, float], lr: float) -> float:
    """Mean accuracy at ``lr`` read off the grid, linear in log-LR (constant past its ends)."""
    exponents = sorted(means)
    return float(np.interp(math.log10(lr), exponents, [means[e] for e in exponents]))


def rule_regrets(candidate: Candidate, curves: Curves, grid: dict[Job, dict]) -> dict[str, float]:
    """Points below the best grid mean, per task, averaged over seeds (accuracy read off the grid)."""
    regrets = {}
    for task in TASKS:
        means = grid_means(task, grid)
        picks = [pick(candidate, curves, task.name, seed) for seed in seeds(task)]
        accs = [interpolated(means, lr) if lr is not None else 0.0 for lr in picks]
        regrets[task.name] = 100 * (max(means.values()) - statistics.mean(accs))
    return regrets


def select(curves: Curves, grid: dict[Job, dict]) -> tuple[str, dict[str, dict[str, float]]]:
    """Every candidate's regrets; the winner by worst-case regret on the tune half (mean regret breaks ties)."""
    table = {name: rule_regrets(candidate, curves, grid) for name, candidate in candidate_rules().items()}
    tune = [task.name for task in TASKS if task.half == "tune"]
    winner = min(table, key=lambda n: (max(table[n][t] for t in tune), statistics.mean(table[n][t] for t in tune)))
    return winner, table


# --- phase 3: real runs at the picks ----------------------------------------------------------------

OLD_DEFAULT = "steepest (old default)"


def run_verify(curves: Curves, winner: str) -> dict[Job, dict]:
    candidates = candidate_rules() | {OLD_DEFAULT: ("own momentum", "", None)}
    jobs = []
    for task in TASKS:
        for seed in seeds(task):
            for name in (winner, OLD_DEFAULT):
                lr = pick(candidates[name], curves, task.name, seed)
                if lr is not None:
                    jobs.append(Job("verify", task.name, seed, round(lr, 8), label=label(name)))
    return run_all(jobs)


def label(name: str) -> str:
    return "-" + "".join(ch if ch.isalnum() or ch in ".*" else "_" for ch in name.replace("/", "div"))


def verified(task: Task, runs: dict[Job, dict], name: str) -> tuple[float, list[float]]:
    found = [(job.max_lr, accuracy(s)) for job, s in runs.items() if job.task == task.name and job.label == label(name)]
    accs = [a for _, a in found] + [0.0] * (task.seeds - len(found))  # an unusable curve counts as a failed run
    return statistics.mean(accs), [lr for lr, _ in found]


# --- report ------------------------------------------------------------------------------------------


def describe(task: Task) -> str:
    return " ".join(o for o in task.overrides if "root=" not in o)


def plot(grid, runs, winner: str) -> Path:
    """Each task's grid (mean accuracy against max_lr) with every seed's real run at the two rules' picks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 4, figsize=(16, 10))
    for ax, task in zip(axes.flat, TASKS, strict=True):
        means = grid_means(task, grid)
        lrs, accs = [10**e for e in means], [100 * a for a in means.values()]
        ax.plot(lrs, accs, color="black", marker=".", label="fixed max_lr (mean over seeds)")
        for name, style in ((winner, dict(color="tab:red", marker="o")), (OLD_DEFAULT, dict(color="0.5", marker="x"))):
            found = [(job.max_lr, 100 * accuracy(s)) for job, s in runs.items() if job.task == task.name and job.label == label(name)]
            ax.scatter([lr for lr, _ in found], [a for _, a in found], label=name, **style)
        top = max(accs)
        ax.set_ylim(top - 12, top + 2)
        ax.set_xscale("log")
        ax.set_title(f"{task.name} ({task.half})", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    figure.supxlabel("max_lr")
    figure.supylabel("test accuracy %")
    figure.tight_layout()
    out = RESULTS / "lr_policies.png"
    figure.savefig(out, dpi=90)
    return out


def write_report(grid, curves, table, winner: str, runs) -> Path:
    tune = [t for t in TASKS if t.half == "tune"]
    held = [t for t in TASKS if t.half == "held_out"]
    seconds = sum(read_json(p)["wall_seconds"] for p in WORK.glob("*/*/summary.json"))
    lines = [
        "# Choosing the max_lr rule: tuned on half the tasks, judged on the other half",
        "",
        machine_header(),
        "",
        f"{len(TASKS)} tasks (`benchmarks/lr_tasks.py`), each a one-cycle run. "
        "For every task x seed: a grid of fixed max_lr in half-decade steps (grown at an edge until its best point is inside), "
        "range tests in two settings, and real runs at the picks of the winning rule and of the old default (steepest descent of "
        "torch-lr-finder's EMA curve). Accuracy is on the test split "
        "(Fashion-MNIST: 10k images; digits: 359 images, 0.28 points each, hence 5 seeds; 6 seeds for the 2k-image task, "
        "whose runs vary most). Regret = best grid mean - the "
        f"rule's mean, in points. {sum(len(seeds(t)) for t in TASKS)} task-seeds; {seconds / 60:.0f} min of run time (2 at a time).",
        "",
        "## The rule, chosen on the tune half only",
        "",
        "Candidates are scored by accuracy read off each task's grid (linear in log-LR) at each seed's pick; the winner has the "
        "lowest worst-case regret on the tune half (mean regret breaks ties). Every rule answers strictly below the LR of the "
        "curve's minimum. Range-test settings: lr_finder.num_iter 100 (one sweep of 100 steps over 1e-6..10), at the "
        "optimizer's own momentum, or at the momentum one cycle has at max_lr (lr_finder.peak_momentum: schedule.base_momentum, 0.85). "
        "Curve readings: [wW ...] = centred smoothing window of W decades; [... half] = the diverging tail starts where the loss "
        "regains half its descent (and rises 10 % above its lowest value so far); "
        "[... bump] = where it rises 30 % above its lowest value so far (and 5 % of its descent), "
        "so a first bump counts as the tail.",
        "",
        "| rule [how the curve is read] (range-test setting) | tune: worst | tune: mean | held-out: worst | held-out: mean |",
        "|---|---|---|---|---|",
    ]
    for name, regrets in sorted(table.items(), key=lambda item: max(item[1][t.name] for t in tune)):
        cells = [f"{f([regrets[t.name] for t in half]):.2f}" for half in (tune, held) for f in (max, statistics.mean)]
        lines.append(f"| {'**' + name + '**' if name == winner else name} | " + " | ".join(cells) + " |")
    lines += ["", f"Winner: **{winner}**.", "", "## Real runs at the picks", "", "![accuracy against max_lr](lr_policies.png)", ""]
    lines += ["| half | task | best grid max_lr | best grid acc % | " + f"{winner}: max_lr (geo-mean) | acc % | regret | "
              "old default: max_lr | acc % | regret |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    worst = {}
    for task in TASKS:
        means = grid_means(task, grid)
        best = max(means, key=means.get)
        row = [task.half, task.name, f"{10**best:.1e}", f"{100 * means[best]:.2f}"]
        for name in (winner, OLD_DEFAULT):
            acc, lrs = verified(task, runs, name)
            regret = 100 * (means[best] - acc)
            worst.setdefault((task.half, name), []).append(regret)
            row += [f"{statistics.geometric_mean(lrs):.2e}" if lrs else "-", f"{100 * acc:.2f}", f"{regret:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [""]
    for half in ("tune", "held_out"):
        for name in (winner, OLD_DEFAULT):
            regrets = worst[half, name]
            lines.append(f"- {half}, {name}: worst regret {max(regrets):.2f}, mean {statistics.mean(regrets):.2f} points")
    lines += ["", "## Tasks", "", "| half | task | seeds | grid max_lr (mean acc %) | settings |", "|---|---|---|---|---|"]
    for task in TASKS:
        means = grid_means(task, grid)
        cells = ", ".join(f"{10**e:.1e} ({100 * a:.1f})" for e, a in means.items())
        lines.append(f"| {task.half} | {task.name} | {task.seeds} | {cells} | `{describe(task)}` |")
    out = RESULTS / "lr_policies.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    phases = sys.argv[1:] or ["grid", "curves", "verify", "report"]
    if "grid" in phases:
        results = run_grid()
        for task in TASKS:
            means = grid_means(task, results)
            print(task.name, " ".join(f"{10**e:.1e}:{100 * a:.2f}" for e, a in means.items()), flush=True)
    if "curves" in phases or "verify" in phases or "report" in phases:
        grid = run_all([job for task in TASKS for job in cached_grid_jobs(task)])
        curves = run_curves()
        winner, table = select(curves, grid)
        tune = [t.name for t in TASKS if t.half == "tune"]
        for name, regrets in sorted(table.items(), key=lambda item: max(item[1][t] for t in tune)):
            worst_tune = max(regrets[t] for t in tune)
            worst_held = max(regrets[t.name] for t in TASKS if t.name not in tune)
            print(f"{name:56s} tune worst {worst_tune:6.2f}  held-out worst {worst_held:6.2f}", flush=True)
        print("winner:", winner, flush=True)
    if "verify" in phases or "report" in phases:
        runs = run_verify(curves, winner)
        print(f"wrote {write_report(grid, curves, table, winner, runs)} and {plot(grid, runs, winner)}")


if __name__ == "__main__":
    main()
