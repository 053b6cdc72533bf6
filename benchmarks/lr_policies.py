"""How max_lr is best chosen (a rule reading the range test's curve, or a probe that trains), tuned on
half of a task matrix and judged on the other half.

    .venv/bin/python benchmarks/lr_policies.py            # every phase; ~1 h 45 min on 2 cores (about 205 min of runs)
    .venv/bin/python benchmarks/lr_policies.py grid       # one phase: grid | curves | verify | report

1. grid: one-cycle runs at fixed max_lr over a half-decade grid for every task x seed
   (a grid whose best point is at an edge grows by one step on that side until it is not).
2. curves: per task x seed, the range test in the product's setting, then the probe over wide
   factors of the default rule's pick (every candidate cycle recorded).
3. select: every candidate (curve rule x curve reading x constant; the same per optimizer family;
   a probe over a subset of the factors, with a cap and a margin) is scored on the tune half only,
   by the grid's mean interpolated at each pick; the lowest worst-case regret wins.
4. verify: real one-cycle runs at each winner's picks on every task x seed; the held-out half's
   regrets are the ones the README reports.

Runs are cached under benchmarks/results/tmp/lr_policies/ (a rerun continues where it stopped). The
report phase also writes what every run gave (results/lr_policies_runs.json: the scores the benchmark
reads, and every range test's curve and probe), so a new candidate can be scored without the cache:

    .venv/bin/python benchmarks/lr_policies.py score      # ~1 min: every candidate off the records

and a new checkout can continue from them, running only what they lack (a new task or seed, a new
winner's picks, a curve the product refused or recorded without what the benchmark now reads):

    .venv/bin/python benchmarks/lr_policies.py restore verify   # restore the cache from the records, then verify
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SCRATCH, machine_header, read_json, run_in_process  # noqa: E402
from lr_tasks import PRETRAIN_ARGV, PRETRAINED, TASKS, Task  # noqa: E402

from superconverge import lr_rules  # noqa: E402
from superconverge.config import LRFinderConfig  # noqa: E402
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


def finished(summary: dict) -> bool:
    """Ran to its end, or diverged (a result: Task.score counts it as 0); not stopped by a signal."""
    return summary["completed"] or summary.get("diverged", False)


def execute(job: Job) -> tuple[Job, dict]:
    """Run one job (or read its cached result): a range test's record, or a run's summary."""
    done = job.run_dir / ("lr_finder.json" if job.kind == "curve" else "summary.json")
    if done.exists() and job.kind != "curve" and not finished(read_json(done)):
        shutil.rmtree(job.run_dir)  # a run stopped by a signal (its summary says so): run it again from the start
    if not done.exists():
        code = run_in_process("lr_find" if job.kind == "curve" else "train", job.argv())
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
    if run_in_process("train", [*PRETRAIN_ARGV, f"output_dir={run_dir}"]) != 0:
        raise RuntimeError("the fine-tune tasks' pretraining run failed")
    summary = read_json(run_dir / "summary.json")
    print(f"pretrained the fine-tune backbone: test accuracy {summary['test_acc']:.4f} on its 6 classes", flush=True)
    torch.save(load_file(run_dir / "checkpoints" / "last" / "model.safetensors"), PRETRAINED)


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


def accuracy(job: Job, summary: dict) -> float:
    """The run's score: test accuracy, or R^2 on a regression task (Task.score)."""
    return TASK[job.task].score(summary)


def seeds(task: Task) -> range:
    return range(task.seeds)


# --- phase 1: the grid -------------------------------------------------------------------------


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


# --- phase 2: the curves, the probe's candidates, and the candidate rules ------------------------------

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


def run_curves() -> Curves:
    jobs = [Job("curve", task.name, seed, label=CURVE_LABEL, extra=CURVE_EXTRA) for task in TASKS for seed in seeds(task)]
    return {(job.task, job.seed): found for job, found in run_all(jobs).items()}


# How the raw curve is read: centred smoothing width (decades) and the rise that starts the tail.
VARIANTS = {
    " [w0.2 bump]": (0.2, 0.05, 0.3),  # the product's (lr_rules.SMOOTH_DECADES, TAIL_RISE, TAIL_RISE_OF_MIN)
    " [w0.4 bump]": (0.4, 0.05, 0.3),
    " [w0.2 half]": (0.2, 0.5, 0.1),
}
DEFAULT_VARIANT = " [w0.2 bump]"


def analyze(found: dict, task: Task, variant: str = DEFAULT_VARIANT) -> Curve | None:
    width, rise, rise_of_min = VARIANTS[variant]
    sweeps = found.get("sweeps", 1)  # skips are per sweep, as in the product
    try:
        return lr_rules.analyze(found["lrs"], found["raw_losses"], 10 * sweeps, 5 * sweeps, chance_loss=task.chance_loss,
                                smooth_decades=width, tail_rise=rise, tail_rise_of_min=rise_of_min)  # fmt: skip
    except lr_rules.RangeTestError:
        return None


def _capped(rule: Callable[[Curve], float]) -> Callable[[Curve], float]:
    """A rule's answer, never at or past the curve's minimum (what the product guarantees)."""
    return lambda curve: min(rule(curve), curve.lr_at_minimum / 1.25)


def rule_families() -> dict[str, Callable[[Curve], float]]:
    rules: dict[str, Callable[[Curve], float]] = {"steepest": lr_rules.steepest, "valley": lr_rules.valley}
    for k in (1.25, 1.5, 2, 2.5, 3, 4, 6, 10):
        rules[f"minimum/{k:g}"] = lr_rules.minimum_div(k)
    for k in (1.5, 2, 3, 5):
        rules[f"tail/{k:g}"] = _capped(lambda c, k=k: (c.tail_lr or c.lr_at_minimum) / k)
    for k in (2, 3, 5):
        rules[f"steepest*{k:g}"] = _capped(lambda c, k=k: lr_rules.steepest(c) * k)
    for k in (0.02, 0.05, 0.1, 0.2):
        rules[f"floor_edge({k:g})"] = lr_rules.floor_edge(k)
        rules[f"geomean(floor_edge({k:g}), minimum/1.25)"] = lambda c, k=k: math.sqrt(lr_rules.floor_edge(k)(c) * c.lr_at_minimum / 1.25)
    return rules


Candidate = Callable[[dict, Task], float | None]  # (the task x seed's lr_finder.json, the task) -> its max_lr


def curve_rule(rule: Callable[[Curve], float], variant: str = DEFAULT_VARIANT) -> Candidate:
    """A rule's answer; on a weak curve (down only to chance level) the product's answer, the default probe's
    (recorded from floor_edge's pick: exact for the default, near for the other rules, on the rare weak curve)."""

    def candidate(found: dict, task: Task) -> float | None:
        curve = analyze(found, task, variant)
        if curve is not None and curve.weak:
            return WEAK_CURVE_PROBE(found, task)
        return rule(curve) if curve is not None else None

    return candidate


def per_optimizer(adam: Candidate, sgd: Candidate) -> Candidate:
    """One rule for the Adam family, another for SGD: a rule that knows the optimizer."""
    return lambda found, task: (sgd if task.sgd else adam)(found, task)


def probe_rule(factors: tuple[float, ...], cap: str, margin: float, lean: float = 0.0, metric: str = "val_loss") -> Candidate:
    """The probe over ``factors`` (of the default rule's pick), read off the wide probe's record.

    cap: "none"; "tail": no candidate at or past the curve's tail (where the range test saw the loss
    diverge); "minimum": none past the curve's minimum. metric: what judges (lr_finder.probe_metric: val_loss,
    or auto: the accuracy where the task has one). margin: a candidate above x1 wins only if its loss is that
    share below x1's (or its accuracy that much above). lean: the highest candidate whose loss is within that
    share of the lowest (accuracy: that much below the highest) wins (a short cycle favours low LRs over what a
    whole run can use: short-horizon bias)."""
    by_accuracy = metric == "auto"

    def shifted(value: float, amount: float) -> float:  # a loss moves by a share of itself, minus an accuracy by points
        return value + amount if by_accuracy else value * (1 + amount)

    def candidate(found: dict, task: Task) -> float | None:
        scores = _probe_scores(found, by_accuracy and task.chance_loss is not None)
        if not scores:
            return found.get("max_lr")  # no probe (an unusable curve): the product's answer
        base = probe_pick(found)
        base_value = dict(scores)[base]
        limit = {"none": math.inf, "tail": found.get("tail_lr") or math.inf, "minimum": found["lr_at_minimum"] * 1.0001}[cap]
        kept = [(lr, value) for lr, value in scores if round(lr / base, 3) in factors and (lr < limit or lr == base)]
        finite = [(lr, value) for lr, value in kept if math.isfinite(value) and (lr == base or value < shifted(base_value, -margin))]
        if not finite:
            return base
        lowest = min(value for _, value in finite)
        return max(lr for lr, value in finite if value <= shifted(lowest, lean))

    return candidate


def probe_pick(found: dict) -> float:
    """The pick of the product's policy (x1 of the probe), as recorded among its candidates."""
    pick = found["suggestions"][PRODUCT.policy]
    return min((lr for lr, _ in found["probe_losses"]), key=lambda lr: abs(math.log(lr / pick)))


def _probe_scores(found: dict, by_accuracy: bool) -> list[tuple[float, float]]:
    """Each probe candidate and the value the product minimises: its validation loss, or minus its accuracy
    with the loss breaking ties (lr_probe.best); a candidate that blew up (JSON null) never wins."""
    losses = [(lr, math.inf if loss is None else loss) for lr, loss in found.get("probe_losses") or []]
    if not (by_accuracy and losses):
        return losses
    accuracies = dict(found["probe_accuracies"])
    return [(lr, -accuracies[lr] + 1e-9 * loss if math.isfinite(loss) else math.inf) for lr, loss in losses]


def probe_name(factors: tuple[float, ...], cap: str, metric: str, tolerance: str = "margin", amount: float = 0.0) -> str:
    listed = ", ".join(f"{f:g}" for f in factors)
    return f"probe x{{{listed}}}{' by acc' if metric == 'auto' else ''} cap={cap} {tolerance}={amount:g}"


# lr_finder.probe as the product runs it (its factors and metric, no cap or margin), and on a weak curve without it.
PRODUCT = LRFinderConfig()
PRODUCT_PROBE = probe_name(tuple(PRODUCT.probe_factors), "none", PRODUCT.probe_metric)
WEAK_CURVE_PROBE = probe_rule(tuple(PRODUCT.probe_factors), "none", 0.0, metric=PRODUCT.probe_metric)


def probe_variants() -> dict[str, tuple[Candidate, int]]:
    """Every probe over 2, 3 or 4 of the factors (x1 always among them), and over those from x1 up, or all of
    them; cap and margin or lean; judged by the validation loss or by the accuracy; with its candidate count."""
    found = {}
    others = [f for f in PROBE_FACTORS if f != 1]
    subsets = [tuple(sorted((1, *more))) for size in (1, 2, 3) for more in itertools.combinations(others, size)]
    subsets += [tuple(f for f in PROBE_FACTORS if f >= 1), PROBE_FACTORS]
    # shares of a loss, points of an accuracy
    tolerances = {"val_loss": (0.02, 0.05, 0.1, 0.2, 0.3), "auto": (0.005, 0.01, 0.02, 0.03, 0.05)}
    for factors in subsets:
        for cap in ("none", "tail", "minimum"):
            for metric, amounts in tolerances.items():
                for kind, amount in [("margin", m) for m in (0.0, *amounts[:2])] + [("lean", lean) for lean in amounts]:
                    margin, lean = (amount, 0.0) if kind == "margin" else (0.0, amount)
                    found[probe_name(factors, cap, metric, kind, amount)] = (probe_rule(factors, cap, margin, lean, metric), len(factors))
    return found


def old_default(found: dict, task: Task) -> float | None:
    """The rule round 1 replaced: steepest descent of torch-lr-finder's EMA curve (smooth_f 0.05), unrestricted."""
    raw = np.asarray(found["raw_losses"], dtype=float)
    cut = len(raw) if np.isfinite(raw).all() else int(np.argmin(np.isfinite(raw)))
    ema = [raw[0]]
    for value in raw[1:cut]:
        ema.append(0.05 * value + 0.95 * ema[-1])
    lrs, losses = np.asarray(found["lrs"][10 : cut - 5]), np.asarray(ema[10 : cut - 5])
    return float(lrs[int(np.argmin(np.gradient(losses, np.log10(lrs))))]) if len(lrs) > 5 else None


def interpolated(means: dict[float, float], lr: float) -> float:
    """Mean score at ``lr`` read off the grid, linear in log-LR (constant past its ends)."""
    exponents = sorted(means)
    return float(np.interp(math.log10(lr), exponents, [means[e] for e in exponents]))


Regrets = dict[str, float]  # task -> points below the best grid mean, averaged over seeds


GridMeans = dict[str, dict[float, float]]  # task -> grid_means


def rule_regrets(candidate: Candidate, curves: Curves, grids: GridMeans) -> Regrets:
    """Over the seeds whose curve the product accepts: a refused curve gives every candidate the same
    failed run (the real-run table counts it), and would otherwise decide every worst case."""
    return {task.name: task_regret(candidate, task, curves, grids[task.name]) for task in TASKS}


def task_regret(candidate: Candidate, task: Task, curves: Curves, means: dict[float, float]) -> float:
    """Points below the grid's best, at the candidate's picks over the task's seeds, read off ``means``."""
    picks = [candidate(curves[task.name, seed], task) for seed in seeds(task)]
    return 100 * (max(means.values()) - statistics.mean(interpolated(means, lr) for lr in picks if lr is not None))


def halves(regrets: Regrets, tasks: list[Task] | None = None) -> tuple[float, float, float, float]:
    """(tune worst, tune mean, held-out worst, held-out mean)."""
    cells = []
    for half in ("tune", "held_out"):
        values = [regrets[t.name] for t in tasks or TASKS if t.half == half]
        cells += [max(values), statistics.mean(values)]
    return tuple(cells)


def by_tune(table: dict[str, Regrets], names=None, tasks: list[Task] | None = None) -> str:
    """The lowest worst-case regret on the tune half (mean regret breaks ties)."""
    return min(names or table, key=lambda n: halves(table[n], tasks)[:2])


DEFAULT = f"floor_edge({lr_rules.FLOOR_EDGE_SHARE:g})"  # the product's policy, the one to beat


def candidates() -> tuple[dict[str, Candidate], dict[str, int]]:
    """Every candidate by name, and the probe candidates' training cycles (0 for a rule that only reads the curve)."""
    rules = {f"{name}{variant}": curve_rule(rule, variant) for variant in VARIANTS for name, rule in rule_families().items()}
    rules["steepest of the EMA curve (round 0)"] = old_default
    cycles = dict.fromkeys(rules, 0)
    for name, (candidate, count) in probe_variants().items():
        rules[name], cycles[name] = candidate, count
    return rules, cycles


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


# --- phase 3: real runs at the winners' picks ------------------------------------------------------


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
        f"{len(TASKS)} tasks (`benchmarks/lr_tasks.py`, two halves of {len(TASKS) // 2}), each a one-cycle run; "
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


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    phases = sys.argv[1:] or ["grid", "curves", "verify", "report"]
    if phases == ["score"]:
        return score_offline()
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
