"""Rules that turn a range test's raw loss curve into max_lr, computed without plotting.

torch-lr-finder exposes one suggestion only through ``plot()`` and smooths with an exponential
moving average, which lags: at 6 points a decade (50 iterations over 8 decades) the smoothed curve
trails the real one by about three decades, which is why the old suggestions moved 25x with
``lr_finder.num_iter``. So the curve is re-smoothed here with a centred window in log-LR (no lag),
cut where it starts to diverge, and every rule answers strictly below the LR of its minimum.
The rules follow fastai's ``callback/schedule.py`` (steep, valley, minimum) plus the ones measured
in ``benchmarks/lr_selection/lr_policies.py``; the default is the one chosen there on half of its tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from superconverge.errors import UserError

MIN_POINTS = 5
# How the curve is read, chosen with the default policy in benchmarks/lr_selection/lr_policies.py ("w0.2 bump"):
SMOOTH_DECADES = 0.2  # width of the centred smoothing window, in decades of LR
# The diverging tail starts where the loss has risen TAIL_RISE_OF_MIN above its lowest value so far
# and climbed back TAIL_RISE of its descent (both must hold: noise on a low floor is not a tail), so
# a first bump counts as the tail even if the loss comes back down after it.
TAIL_RISE = 0.05
TAIL_RISE_OF_MIN = 0.3
MIN_DROP = 0.05  # a real descent: the minimum is this share below the start (and, for a strong curve, below chance level)


class RangeTestError(UserError):
    """The range test's curve gives no usable learning rate."""


@dataclass(frozen=True)
class Curve:
    """The usable part of a range test: from ``skip_start`` to the start of the diverging tail."""

    lrs: np.ndarray
    losses: np.ndarray  # centred-smoothed
    minimum: int  # index of the lowest smoothed loss
    tail_lr: float | None  # where the loss started to diverge (None: it never did within the test)
    # A real descent that got no lower than chance level: a model learning slowly from a bad start, or data with
    # nothing to learn beyond the class prior. The curve cannot tell them apart; the LR probe's training does.
    weak: bool = False

    @property
    def lr_at_minimum(self) -> float:
        return float(self.lrs[self.minimum])


def smooth(lrs: np.ndarray, losses: np.ndarray, decades: float = SMOOTH_DECADES) -> np.ndarray:
    """Running median (drops single spikes), then running mean, both centred: no lag in LR.

    Windows span ``decades`` of LR (at least one neighbour each side), so the sparse points of a
    scout of a short test are not averaged over a wider LR range than the dense ones.
    """
    logs, count = np.log10(np.asarray(lrs, dtype=float)), len(losses)
    first = np.searchsorted(logs, logs - decades / 2 - 1e-9, side="left")
    last = np.searchsorted(logs, logs + decades / 2 + 1e-9, side="right")
    windows = [slice(min(first[i], max(0, i - 1)), max(last[i], min(count, i + 2))) for i in range(count)]
    medians = np.array([np.median(losses[w]) for w in windows])
    return np.array([medians[w].mean() for w in windows])


def _tail_start(losses: np.ndarray, drop_needed: float, tail_rise: float, tail_rise_of_min: float) -> int:
    """First index where the loss climbs back after a real descent (see TAIL_RISE); len(losses) if never."""
    running_min = np.minimum.accumulate(losses)
    descent, rise = losses[0] - running_min, losses - running_min
    rising = (descent >= drop_needed) & (rise > tail_rise * descent) & (rise > tail_rise_of_min * running_min)
    return int(np.argmax(rising)) if rising.any() else len(losses)


def analyze(lrs: Sequence[float], raw_losses: Sequence[float], skip_start: int = 10, skip_end: int = 5,
            chance_loss: float | None = None, smooth_decades: float = SMOOTH_DECADES, tail_rise: float = TAIL_RISE,
            tail_rise_of_min: float = TAIL_RISE_OF_MIN) -> Curve:  # fmt: skip
    """The curve the rules read, or a RangeTestError naming the lr_finder keys to change."""
    lrs, raw = np.asarray(lrs, dtype=float), np.asarray(raw_losses, dtype=float)
    finite = np.isfinite(raw)
    cut = len(raw) if finite.all() else int(np.argmin(finite))
    if cut - skip_start < MIN_POINTS:
        raise RangeTestError(
            f"the range test's loss diverged at once: {max(0, cut - skip_start)} usable points of {len(raw)}; "
            "lower lr_finder.start_lr or raise lr_finder.num_iter"
        )
    smoothed = smooth(lrs[:cut], raw[:cut], smooth_decades)[skip_start:]
    lrs = lrs[skip_start:cut]
    drop_needed = MIN_DROP * smoothed[0]
    tail = _tail_start(smoothed, drop_needed, tail_rise, tail_rise_of_min)
    end = tail if tail < len(smoothed) else len(smoothed) - skip_end
    if end < MIN_POINTS:
        raise RangeTestError(
            f"the range test's loss diverged after {end} usable points: lower lr_finder.start_lr or raise lr_finder.num_iter"
        )
    minimum = int(np.argmin(smoothed[:end]))
    floor = smoothed[minimum]
    if smoothed[0] - floor < drop_needed:
        raise RangeTestError(not_learning(f"from {smoothed[0]:.3g} to at best {floor:.3g}"))
    tail_lr = float(lrs[tail]) if tail < len(smoothed) else (float(lrs[-1]) if cut < len(raw) else None)
    if tail_lr is None and minimum >= end - 2:
        raise RangeTestError(
            f"the range test's loss was still falling where the test ended (LR {lrs[-1]:.3g}): raise lr_finder.end_lr, "
            "or lr_finder.num_iter (or lower lr_finder.sweep_iter) if the test stopped below it, so the test reaches the LR "
            "where training breaks down"
        )
    return Curve(lrs[:end], smoothed[:end], minimum, tail_lr, weak=not below_chance(floor, chance_loss))


def below_chance(loss: float, chance_loss: float | None) -> bool:
    return chance_loss is None or loss <= (1 - MIN_DROP) * chance_loss


def not_learning(found: str) -> str:
    """The error for a curve (and, for a weak one, a probe) that shows no learning: ``found`` says what was seen."""
    return (
        f"the range test's loss never really went down ({found}) between lr_finder.start_lr and lr_finder.end_lr: "
        "the data may not be learnable as labelled, or the sweep misses the LRs that train; widen "
        "lr_finder.start_lr..lr_finder.end_lr or raise lr_finder.num_iter"
    )


def _before_minimum(curve: Curve, index: int) -> float:
    return float(curve.lrs[min(index, curve.minimum - 1)])


def steepest(curve: Curve) -> float:
    """The LR where the loss falls fastest against log-LR, before the minimum (fastai's ``steep``;
    Lightning's suggestion differs: it takes the slope against the raw LR and can land past the minimum)."""
    if curve.minimum < 2:
        return _before_minimum(curve, 0)
    slopes = np.gradient(curve.losses[: curve.minimum + 1], np.log10(curve.lrs[: curve.minimum + 1]))
    return _before_minimum(curve, int(np.argmin(slopes[: curve.minimum])))


def valley(curve: Curve) -> float:
    """About half-way down the longest descending stretch before the minimum (fastai's default)."""
    losses = curve.losses[: curve.minimum + 1]
    n = len(losses)
    run_length = [1] * n  # longest strictly decreasing subsequence ending at i
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run_length[i] < run_length[j] + 1:
                run_length[i] = run_length[j] + 1
        if run_length[end] < run_length[i]:
            end, start = i, i - run_length[i]
    third = (end - start) / 3
    return _before_minimum(curve, start + int(third) + int(third / 2))


def minimum(curve: Curve) -> float:
    """A tenth of the LR at the lowest loss (fastai's ``minimum``)."""
    return curve.lr_at_minimum / 10


def minimum_div(divisor: float) -> Callable[[Curve], float]:
    """The LR at the lowest loss divided by ``divisor`` (fastai's ``minimum`` with another constant)."""

    def rule(curve: Curve) -> float:
        return curve.lr_at_minimum / divisor

    return rule


def floor_edge(share: float) -> Callable[[Curve], float]:
    """The lowest LR whose smoothed loss is within ``share`` of the descent above the curve's lowest
    value: the near edge of the valley, which noise moves less than the minimum of a flat floor."""

    def rule(curve: Curve) -> float:
        floor = curve.losses[curve.minimum]
        near = curve.losses[: curve.minimum + 1] <= floor + share * (curve.losses[0] - floor)
        return _before_minimum(curve, int(np.argmax(near)))

    return rule


# Chosen in benchmarks/lr_selection/lr_policies.py on the tune half of its tasks (results/lr_policies.md): one-cycle's
# warm-up lets training take an LR close to where the range test's loss stops falling, so the best
# rules allowed to answer below the minimum answer just below it; the edge of the floor is the one
# that noise on a flat floor moves least.
FLOOR_EDGE_SHARE = 0.02
NEAR_MINIMUM_DIVISOR = 1.25
POLICIES: dict[str, Callable[[Curve], float]] = {
    "floor_edge": floor_edge(FLOOR_EDGE_SHARE),
    "near_minimum": minimum_div(NEAR_MINIMUM_DIVISOR),
    "steepest": steepest,
    "valley": valley,
    "minimum": minimum,
}


def suggestions(curve: Curve) -> dict[str, float]:
    """Every policy's suggestion for one analysed curve."""
    return {name: policy(curve) for name, policy in POLICIES.items()}
