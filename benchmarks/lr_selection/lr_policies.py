"""How max_lr is best chosen (a rule reading the range test's curve, or a probe that trains), tuned on
half of a task matrix and judged on the other half.

    .venv/bin/python -m benchmarks.lr_selection.lr_policies         # every phase; ~1 h 45 min on 2 cores (about 205 min of runs)
    .venv/bin/python -m benchmarks.lr_selection.lr_policies grid    # one phase: grid | curves | verify | report

1. grid: one-cycle runs at fixed max_lr over a half-decade grid for every task x seed
   (a grid whose best point is at an edge grows by one step on that side until it is not).
2. curves: per task x seed, the range test in the product's setting, then the probe over wide
   factors of the default rule's pick (every candidate cycle recorded).
3. select: every candidate (curve rule x curve reading x constant; the same per optimizer family;
   a probe over a subset of the factors, with a cap and a margin) is scored on the tune half only,
   by the grid's mean interpolated at each pick; the lowest worst-case regret wins.
4. verify: real one-cycle runs at each winner's picks on every task x seed; the held-out half's
   regrets are the ones the README reports.

The runs and their records are in runs.py, the candidates (choosers) in choosers.py, the tasks in lr_tasks.py.

Runs are cached under benchmarks/results/tmp/lr_policies/ (a rerun continues where it stopped). The
report phase also writes what every run gave (results/lr_policies_runs.json: the scores the benchmark
reads, and every range test's curve and probe), so a new candidate can be scored without the cache:

    .venv/bin/python -m benchmarks.lr_selection.lr_policies score     # ~30 s: every candidate off the records (printed)
    .venv/bin/python -m benchmarks.lr_selection.lr_policies rebuild   # ~30 s: results/lr_policies.md and .png off the records

and a new checkout can continue from them, running only what they lack (a new task or seed, a new
winner's picks, a curve the product refused or recorded without what the benchmark now reads):

    .venv/bin/python -m benchmarks.lr_selection.lr_policies restore verify   # restore the cache from the records, then verify
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine_header, read_json
from benchmarks.lr_selection.choosers import (
    DEFAULT,
    DEFAULT_VARIANT,
    PRODUCT,
    PRODUCT_PROBE,
    Candidate,
    GridMeans,
    Regrets,
    by_tune,
    candidates,
    halves,
    interpolated,
    per_optimizer,
    probe_name,
    rule_regrets,
)
from benchmarks.lr_selection.lr_tasks import TASKS, Task
from benchmarks.lr_selection.runs import (
    CURVE_EXTRA,
    CURVE_LABEL,
    PROBE_FACTORS,
    PROBE_STEPS,
    WORK,
    Curves,
    Job,
    accuracy,
    cached_grid_jobs,
    edge_point,
    grid_jobs,
    grid_means,
    load_records,
    pretrain,
    restore_cache,
    run_all,
    save_records,
    seeds,
)

# --- phase 1: the grid -------------------------------------------------------------------------


def run_grid() -> dict[Job, dict]:
    results = run_all([job for task in TASKS for job in grid_jobs(task, task.grid)])
    while True:  # grow any grid whose best point is at an edge
        extra = []
        for task in TASKS:
            if (point := edge_point(grid_means(task, results))) is not None:
                extra += grid_jobs(task, [point])
        if not extra:
            return results
        print(f"growing grids by {len(extra)} runs", flush=True)
        results |= run_all(extra)


# --- phase 2: the curves (the choosers they are read by: choosers.py) --------------------------


def run_curves() -> Curves:
    jobs = [Job("curve", task.name, seed, label=CURVE_LABEL, extra=CURVE_EXTRA) for task in TASKS for seed in seeds(task)]
    return {(job.task, job.seed): found for job, found in run_all(jobs).items()}


# --- phase 3: select: every candidate scored on the grid, winners chosen on the tune half -------------


@dataclass
class Selection:
    rules: dict[str, Candidate]
    cycles: dict[str, int]
    table: dict[str, Regrets]  # every candidate's regrets read off the grid
    winners: dict[str, str]  # kind -> candidate name
    judged_by_grid: Regrets  # the probe's candidates with a perfect judge: the best of them by the grid (not a candidate)


def select(curves: Curves, grid: dict[Job, dict]) -> Selection:
    """Every candidate's regrets and the winners, each chosen on the tune half only: the best curve rule,
    the best pair of curve rules per optimizer family, the best probe of 2 cycles, of 3, and of 4 or more."""
    rules, cycles = candidates()
    grids = {task.name: grid_means(task, grid) for task in TASKS}
    table = {name: rule_regrets(rule, curves, grids) for name, rule in rules.items()}
    curve_only = [n for n in table if cycles[n] == 0 and "round 0" not in n]
    adam_tasks, sgd_tasks = [t for t in TASKS if not t.sgd], [t for t in TASKS if t.sgd]
    adam, sgd = by_tune(table, curve_only, adam_tasks), by_tune(table, curve_only, sgd_tasks)
    pair = f"per optimizer: Adam {adam}, SGD {sgd}"
    rules[pair], cycles[pair] = per_optimizer(rules[adam], rules[sgd]), 0
    table[pair] = rule_regrets(rules[pair], curves, grids)
    winners = {
        "default": f"{DEFAULT}{DEFAULT_VARIANT}",
        "curve rule": by_tune(table, curve_only),
        "per optimizer": pair,
        "probe, 2 cycles": by_tune(table, [n for n in table if cycles[n] == 2]),
        "probe, 3 cycles": by_tune(table, [n for n in table if cycles[n] == 3]),
        "probe, 4 or more cycles": by_tune(table, [n for n in table if cycles[n] >= 4]),
        "product probe": PRODUCT_PROBE,
        "probe by loss": probe_name(tuple(PRODUCT.probe_factors), "none", "val_loss"),  # the same, judged as before this round
    }
    return Selection(rules, cycles, table, winners, rule_regrets(best_by_grid(grids), curves, grids))


def best_by_grid(grids: GridMeans) -> Candidate:
    """The probe's candidate the grid scores best: what the probe would reach if its short cycles judged as whole runs do."""

    def candidate(found: dict, task: Task) -> float | None:
        if not found.get("probe_losses"):
            return found.get("max_lr")
        return max((lr for lr, _ in found["probe_losses"]), key=lambda lr: interpolated(grids[task.name], lr))

    return candidate


# --- phase 4: verify: real runs at the winners' picks ----------------------------------------------


Picks = dict[tuple[str, str, int], Job]  # (winner kind, task, seed) -> the run at its pick


def verify_jobs(curves: Curves, selection: Selection) -> Picks:
    """Runs at the same LR are one run (the directory has no label), so winners that agree share them."""
    jobs = {}
    for kind, name in selection.winners.items():
        for task in TASKS:
            for seed in seeds(task):
                lr = selection.rules[name](curves[task.name, seed], task)
                if lr is not None:
                    jobs[kind, task.name, seed] = Job("verify", task.name, seed, round(lr, 8))
    return jobs


def verified(task: Task, runs: dict[Job, dict], jobs: Picks, kind: str) -> tuple[float, list[float]]:
    """A winner's mean real score on a task (a seed without a usable curve counts as 0) and its picks."""
    found = [jobs[kind, task.name, seed] for seed in seeds(task) if (kind, task.name, seed) in jobs]
    scores = [accuracy(job, runs[job]) for job in found] + [0.0] * (task.seeds - len(found))
    return statistics.mean(scores), [job.max_lr for job in found]


def seed_scores(task: Task, grid: dict[Job, dict]) -> tuple[list[float], np.ndarray]:
    """grid_means' exponents, and every seed's score at each of them (rows: exponents, columns: seeds)."""
    exponents = list(grid_means(task, grid))
    scores = np.full((len(exponents), task.seeds), np.nan)
    for job, summary in grid.items():
        exponent = round(math.log10(job.max_lr), 3)
        if job.task == task.name and job.kind == "grid" and not job.label and exponent in exponents:
            scores[exponents.index(exponent), job.seed] = accuracy(job, summary)
    return exponents, scores


def grid_spread(task: Task, grid: dict[Job, dict]) -> tuple[float, float]:
    """At the best grid LR: the seeds' standard deviation and the standard error of their mean, in points."""
    _, scores = seed_scores(task, grid)
    best = 100 * scores[int(np.argmax(scores.mean(axis=1)))]
    sd = statistics.stdev(best.tolist())
    return sd, sd / math.sqrt(len(best))


def oracle_regret(task: Task, grid: dict[Job, dict], draws: int = 4000) -> float:
    """The regret a chooser that always picks the task's best grid max_lr would still show, in points: the best grid
    mean is the highest of several noisy means (the winner's curse), so no chooser scores 0 on average. Seeds are
    resampled with replacement, jointly across max_lr (a seed keeps its data order and init along the grid), and the
    full grid's best point stands for the truth: a slight underestimate with 5 seeds."""
    _, scores = seed_scores(task, grid)
    best = int(np.argmax(scores.mean(axis=1)))
    drawn = scores[:, np.random.default_rng(0).integers(0, task.seeds, size=(draws, task.seeds))].mean(axis=-1)
    return 100 * float(np.mean(drawn.max(axis=0) - drawn[best]))


def score_offline() -> None:
    """Every candidate scored on the grid from the records; the winners' real-run regrets where their picks were run."""
    grid, curves, runs = load_records()
    selection = select(curves, grid)
    ranked = sorted(selection.table, key=lambda n: halves(selection.table[n])[:2])
    for name in list(dict.fromkeys([*selection.winners.values(), *ranked[:15]])):
        print(f"{name}: grid-scored tune worst/mean, held-out worst/mean " + " ".join(f"{v:.2f}" for v in halves(selection.table[name])))
    picks = verify_jobs(curves, selection)
    for kind in selection.winners:
        if all(job in runs for (k, _, _), job in picks.items() if k == kind):
            regrets = {t.name: 100 * (max(grid_means(t, grid).values()) - verified(t, runs, picks, kind)[0]) for t in TASKS}
            print(f"{kind} (real runs): tune worst/mean, held-out worst/mean " + " ".join(f"{v:.2f}" for v in halves(regrets)))


# --- report ------------------------------------------------------------------------------------------

ADOPTED = "product probe"  # plotted against the default
KINDS = {  # each winner's column heading
    "default": "the default (floor_edge)",
    "curve rule": "best curve rule",
    "per optimizer": "best rule per optimizer",
    "probe, 2 cycles": "best probe, 2 cycles",
    "probe, 3 cycles": "best probe, 3 cycles",
    "probe, 4 or more cycles": "best probe, 4+ cycles",
    "product probe": "lr_finder.probe=true",
    "probe by loss": "the same probe judged by loss",
}


def describe(task: Task) -> str:
    return " ".join(o for o in task.overrides if "root=" not in o and "weights_file=" not in o)


def write_report(grid, curves: Curves, selection: Selection, runs: dict[Job, dict], jobs: Picks) -> Path:
    table, cycles, winners = selection.table, selection.cycles, selection.winners
    summaries = [p for pattern in ("s*-grid-lr*", "s*-verify-lr*") for p in WORK.glob(f"*/{pattern}/summary.json")]
    seconds = sum(read_json(p)["wall_seconds"] for p in summaries)
    seconds += sum(found["seconds"] + found["probe_seconds"] for found in curves.values())
    lines = [
        "# Choosing max_lr: rules and probes tuned on half the tasks, judged on the other half",
        "",
        machine_header(),
        "",
        f"{len(TASKS)} tasks (`benchmarks/lr_selection/lr_tasks.py`, two halves of {len(TASKS) // 2}), each a one-cycle run; "
        f"{sum(len(seeds(t)) for t in TASKS)} task-seeds (5 a task, 6 for the 2k-image one); {seconds / 60:.0f} min of runs. "
        "For every task x seed: a grid of fixed max_lr in half-decade steps (grown at an edge until its best point is "
        "inside), one range test in the product's setting followed by the probe over factors "
        f"{', '.join(map(str, PROBE_FACTORS))} of the default rule's pick ({PROBE_STEPS} optimizer steps each, from the same "
        "weights, validation loss and accuracy on up to 2048 samples), and real runs at each winner's picks. Score: test accuracy, "
        "or R^2 on the regressions, in points. Regret = best grid mean - the winner's mean over seeds.",
        "",
        "## Candidates, scored on the grid, chosen on the tune half",
        "",
        f"{len(table)} candidates; the winners and the best 25 by tune-half worst case are shown.",
        "",
        "Each candidate's picks are scored by the grid's mean (linear in log-LR) at each seed's pick; a winner has the "
        "lowest worst-case regret on the tune half (mean regret breaks ties). Curve rules answer strictly below the curve's "
        "minimum; [wW ...] = centred smoothing window of W decades; [... bump] / [... half] = where the diverging tail starts "
        "(see `lr_rules`). A probe `x{1, a}` trains one short cycle at each factor of `floor_edge`'s pick and keeps the lowest "
        "validation loss, or `by acc` the highest validation accuracy (a regression's: its loss); `cap=tail` drops candidates "
        "at or past the curve's tail, `cap=minimum` those past its minimum; `margin=m` moves up only on a loss a share m below "
        "x1's (an accuracy m above); `lean=l` takes the highest candidate whose loss is within a share l of the lowest (an "
        "accuracy within l of the highest; against a short cycle's bias to low LRs). On a weak curve (down to chance level only) "
        "the product runs its probe whatever the rule, so every curve rule answers what `lr_finder.probe`'s defaults pick there. "
        "Cycles: short training cycles the candidate costs after the curve.",
        "",
        "| candidate | cycles | tune: worst | tune: mean | held-out: worst | held-out: mean |",
        "|---|---|---|---|---|---|",
    ]
    judged = halves(selection.judged_by_grid)
    shown = list(dict.fromkeys([*winners.values(), *sorted(table, key=lambda n: halves(table[n])[:2])[:25]]))
    for name in shown:
        cells = " | ".join(f"{v:.2f}" for v in halves(table[name]))
        bold = f"**{name}**" if name in winners.values() else name
        lines.append(f"| {bold} | {cycles[name]} | {cells} |")
    lines += ["", "## Real runs at the winners' picks", ""]
    lines += [
        "| half | task | best grid max_lr | best % | seed s.d. | s.e. of mean | an oracle's regret | " + " | ".join(KINDS.values()) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(KINDS),
    ]
    regrets: dict[tuple[str, str], list[float]] = {}
    for task in TASKS:
        means = grid_means(task, grid)
        best = max(means, key=means.get)
        sd, se = grid_spread(task, grid)
        oracle = oracle_regret(task, grid)
        regrets.setdefault((task.half, "oracle"), []).append(oracle)
        row = [task.half, task.name, f"{10**best:.1e}", f"{100 * means[best]:.2f}", f"{sd:.2f}", f"{se:.2f}", f"{oracle:.2f}"]
        for kind in KINDS:
            score, lrs = verified(task, runs, jobs, kind)
            regret = 100 * (means[best] - score)
            regrets.setdefault((task.half, kind), []).append(regret)
            row.append(f"{regret:.2f} ({statistics.geometric_mean(lrs):.1e})" if lrs else f"{regret:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    floor = "; ".join(
        f"{h} mean {statistics.mean(regrets[h, 'oracle']):.2f}, worst {max(regrets[h, 'oracle']):.2f}" for h in ("tune", "held_out")
    )
    lines += [
        "",
        "Cells: regret in points (the picks' geometric mean max_lr). An oracle's regret: what a chooser that always "
        f"picks the best grid max_lr would show from the seeds' noise alone (`oracle_regret`): {floor}.",
        "",
        "The probe's own candidates judged perfectly (`best_by_grid`: of the factors "
        f"{', '.join(map(str, PROBE_FACTORS))}, the one the grid scores best; grid-scored): tune worst {judged[0]:.2f}, mean "
        f"{judged[1]:.2f}; held-out worst {judged[2]:.2f}, mean {judged[3]:.2f}: the gap to the probes above is what "
        f"their {PROBE_STEPS}-step cycles misjudge.",
        "",
    ]
    refused = [f"{task} seed {seed} ({found['error'].split(':')[0]})" for (task, seed), found in curves.items() if found.get("error")]
    if refused:
        lines += [f"Curves the product refused (a failed run, score 0, in every column): {'; '.join(refused)}.", ""]
    weak = [f"{task} seed {seed}" for (task, seed), found in curves.items() if found.get("weak_curve")]
    if weak:
        lines += [f"Weak curves (down to chance level only: the product's probe decided, in every column): {'; '.join(weak)}.", ""]
    for kind, name in winners.items():
        parts = [f"{h} worst {max(regrets[h, kind]):.2f}, mean {statistics.mean(regrets[h, kind]):.2f}" for h in ("tune", "held_out")]
        lines.append(f"- {KINDS[kind]} (`{name}`): " + "; ".join(parts))
    lines += ["", "## Tasks", "", "| half | task | seeds | grid max_lr (mean score %) | settings |", "|---|---|---|---|---|"]
    for task in TASKS:
        cells = ", ".join(f"{10**e:.1e} ({100 * a:.1f})" for e, a in grid_means(task, grid).items())
        lines.append(f"| {task.half} | {task.name} | {task.seeds} | {cells} | `{describe(task)}` |")
    out = RESULTS / "lr_policies.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def plot(grid: dict[Job, dict], runs: dict[Job, dict], jobs: Picks, kinds: tuple[str, str]) -> Path:
    """Each task's grid (mean score against max_lr) with every seed's real run at two winners' picks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 5, figsize=(20, 13))
    for ax, task in zip(axes.flat, TASKS, strict=True):
        means = grid_means(task, grid)
        scores = [100 * a for a in means.values()]
        ax.plot([10**e for e in means], scores, color="black", marker=".", label="fixed max_lr (mean over seeds)")
        for kind, style in zip(kinds, (dict(color="0.5", marker="x"), dict(color="tab:red", marker="o")), strict=True):
            found = [jobs[kind, task.name, seed] for seed in seeds(task) if (kind, task.name, seed) in jobs]
            ax.scatter([job.max_lr for job in found], [100 * accuracy(job, runs[job]) for job in found], label=KINDS[kind], **style)
        ax.set_ylim(max(scores) - 12, max(scores) + 2)
        ax.set_xscale("log")
        ax.set_title(f"{task.name} ({task.half})", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    figure.supxlabel("max_lr")
    figure.supylabel("test accuracy (R^2 for the regressions) %")
    figure.tight_layout()
    out = RESULTS / "lr_policies.png"
    figure.savefig(out, dpi=80)
    return out


def rebuild_report() -> None:
    """The report and plot from the committed records alone, no runs (the cache restored first: the report sums its runs'
    seconds): what the report phase writes from the same records."""
    restore_cache()
    grid, curves, runs = load_records()
    selection = select(curves, grid)
    jobs = verify_jobs(curves, selection)
    print(f"wrote {write_report(grid, curves, selection, runs, jobs)} and {plot(grid, runs, jobs, ('default', ADOPTED))}")


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    phases = sys.argv[1:] or ["grid", "curves", "verify", "report"]
    if phases == ["score"]:
        return score_offline()
    if phases == ["rebuild"]:
        return rebuild_report()
    if phases[0] == "restore":
        restore_cache()
        phases = phases[1:]
    pretrain()
    if "grid" in phases:
        results = run_grid()
        for task in TASKS:
            means = grid_means(task, results)
            print(task.name, " ".join(f"{10**e:.1e}:{100 * a:.2f}" for e, a in means.items()), flush=True)
    if "curves" in phases or "verify" in phases or "report" in phases:
        grid = run_all([job for task in TASKS for job in cached_grid_jobs(task)])
        curves = run_curves()
        selection = select(curves, grid)
        for kind, name in selection.winners.items():
            print(f"{kind}: {name}: tune worst/mean, held-out worst/mean " + " ".join(f"{v:.2f}" for v in halves(selection.table[name])))
        print(f"wrote {save_records(grid, curves, {})} (no real runs at the picks yet)", flush=True)
    if "verify" in phases or "report" in phases:
        jobs = verify_jobs(curves, selection)
        runs = run_all(list(dict.fromkeys(jobs.values())))
        print(
            f"wrote {write_report(grid, curves, selection, runs, jobs)}, {plot(grid, runs, jobs, ('default', ADOPTED))} "
            f"and {save_records(grid, curves, runs)}"
        )


if __name__ == "__main__":
    main()
