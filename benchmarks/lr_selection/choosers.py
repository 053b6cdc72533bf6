"""The choosers of max_lr the LR-selection benchmarks score: rules reading the range test's curve (each with
the product's reading of the curve or a variant of it) and probes over the recorded candidates, each a function of
one task x seed's range-test record; and how a chooser's picks are scored on a task's grid (regret in points).

The product's own constants come from the product (lr_rules, LRFinderConfig, lr_probe.best), never copies of them.
Shared by lr_policies (which selects among them) and lr_horizon.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable

import numpy as np

from benchmarks.lr_selection.lr_tasks import TASKS, Task
from benchmarks.lr_selection.runs import PROBE_FACTORS, Curves, seeds
from superconverge import lr_probe, lr_rules
from superconverge.config import LRFinderConfig
from superconverge.lr_probe import ProbeScore
from superconverge.lr_rules import Curve

PRODUCT = LRFinderConfig()  # the product's defaults: its skips, policy, probe factors and metric

# How the raw curve is read: centred smoothing width (decades) and the rise that starts the tail. The default is
# the product's reading (lr_rules' constants); the others vary it: a window twice as wide, and a tail that starts
# only where the loss has climbed back half its descent (and 10 % above its lowest value).
DEFAULT_VARIANT = f" [w{lr_rules.SMOOTH_DECADES:g} bump]"
VARIANTS = {
    DEFAULT_VARIANT: (lr_rules.SMOOTH_DECADES, lr_rules.TAIL_RISE, lr_rules.TAIL_RISE_OF_MIN),
    f" [w{2 * lr_rules.SMOOTH_DECADES:g} bump]": (2 * lr_rules.SMOOTH_DECADES, lr_rules.TAIL_RISE, lr_rules.TAIL_RISE_OF_MIN),
    f" [w{lr_rules.SMOOTH_DECADES:g} half]": (lr_rules.SMOOTH_DECADES, 0.5, 0.1),
}


def analyze(found: dict, task: Task, variant: str = DEFAULT_VARIANT) -> Curve | None:
    width, rise, rise_of_min = VARIANTS[variant]
    sweeps = found.get("sweeps", 1)
    skip_start, skip_end = PRODUCT.skip_start * sweeps, PRODUCT.skip_end * sweeps  # skips are per sweep, as in the product
    try:
        return lr_rules.analyze(found["lrs"], found["raw_losses"], skip_start, skip_end, chance_loss=task.chance_loss,
                                smooth_decades=width, tail_rise=rise, tail_rise_of_min=rise_of_min)  # fmt: skip
    except lr_rules.RangeTestError:
        return None


NEAR_MINIMUM = lr_rules.POLICIES["near_minimum"]  # the curve's minimum / lr_rules.NEAR_MINIMUM_DIVISOR


def _capped(rule: Callable[[Curve], float]) -> Callable[[Curve], float]:
    """A rule's answer, never above the product's near_minimum policy's: below the curve's minimum, as every
    product policy answers."""
    return lambda curve: min(rule(curve), NEAR_MINIMUM(curve))


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
        rules[f"geomean(floor_edge({k:g}), minimum/{lr_rules.NEAR_MINIMUM_DIVISOR:g})"] = lambda c, k=k: math.sqrt(
            lr_rules.floor_edge(k)(c) * NEAR_MINIMUM(c)
        )
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
    """Each probe candidate and one number for lr_probe.best's order, for the margins and leans of probe_rule: its
    validation loss, or minus its accuracy with the loss breaking ties; a candidate that blew up (JSON null) never wins."""
    losses = [(lr, math.inf if loss is None else loss) for lr, loss in found.get("probe_losses") or []]
    if not (by_accuracy and losses):
        return losses
    accuracies = dict(found["probe_accuracies"])
    return [(lr, -accuracies[lr] + 1e-9 * loss if math.isfinite(loss) else math.inf) for lr, loss in losses]


def probe_name(factors: tuple[float, ...], cap: str, metric: str, tolerance: str = "margin", amount: float = 0.0) -> str:
    listed = ", ".join(f"{f:g}" for f in factors)
    return f"probe x{{{listed}}}{' by acc' if metric == 'auto' else ''} cap={cap} {tolerance}={amount:g}"


def recorded_scores(found: dict) -> dict[float, ProbeScore]:
    """The probe's candidates as ``lr_probe.run_probe`` scored them, from a range test's record (JSON null: blew up)."""
    accuracies = dict(found.get("probe_accuracies") or [])
    return {lr: ProbeScore(math.inf if loss is None else loss, accuracies.get(lr)) for lr, loss in found.get("probe_losses") or []}


def resolved_metric(metric: str, task: Task) -> str:
    """lr_finder.probe_metric as the product resolves it for the task: auto is the accuracy where the task has one."""
    if metric != "auto":
        return metric
    return "val_acc" if task.chance_loss is not None else "val_loss"


def best_candidate(found: dict, task: Task, factors: tuple[float, ...] | None = None) -> float | None:
    """The candidate the product's probe keeps (``lr_probe.best`` by the product's default metric), of those at
    ``factors`` of the pick (None: every recorded one); None where the record has no probe."""
    scores = recorded_scores(found)
    if factors is not None and scores:
        base = probe_pick(found)
        scores = {lr: score for lr, score in scores.items() if round(lr / base, 3) in factors}
    return lr_probe.best(scores, resolved_metric(PRODUCT.probe_metric, task)) if scores else None


def product_probe(found: dict, task: Task) -> float | None:
    """lr_finder.probe as the product runs it (its factors and metric, no cap or margin); without a probe (an
    unusable curve), the product's answer."""
    lr = best_candidate(found, task, tuple(PRODUCT.probe_factors))
    return found.get("max_lr") if lr is None else lr


# The product's probe by name among the probe variants, and on a weak curve whatever the rule.
PRODUCT_PROBE = probe_name(tuple(PRODUCT.probe_factors), "none", PRODUCT.probe_metric)
WEAK_CURVE_PROBE = product_probe


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
    rules[PRODUCT_PROBE] = product_probe  # the same choice as probe_variants' of that name, by the product's own code
    return rules, cycles
