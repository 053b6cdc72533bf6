"""LR suggestions from a range test's recorded curve, computed without plotting.

torch-lr-finder exposes its one suggestion only through ``plot()`` (which needs matplotlib), so
the policies are written here, after fastai's ``callback/schedule.py`` and Lightning's
``tuner/lr_finder.py``. The range test itself (rank 0, broadcast) is not wired in yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from superconverge.errors import UserError

MIN_POINTS = 5


class RangeTestError(UserError):
    """The range test's curve gives no usable learning rate."""


def usable_curve(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 10, skip_end: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Cut the curve at its first non-finite loss, then drop ``skip_start``/``skip_end`` points."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses)
    cut = len(losses) if finite.all() else int(np.argmin(finite))
    lrs, losses = lrs[:cut], losses[:cut]
    end = len(losses) - skip_end
    if end - skip_start < MIN_POINTS:
        raise RangeTestError(
            f"the range test's loss diverged or went non-finite after {cut} of {len(finite)} iterations, leaving "
            f"{max(0, end - skip_start)} usable points: lower lr_finder.start_lr or raise lr_finder.num_iter"
        )
    lrs, losses = lrs[skip_start:end], losses[skip_start:end]
    if losses.min() >= losses[0] * (1 - 1e-3):
        raise RangeTestError(
            "the range test's loss never went down between lr_finder.start_lr and lr_finder.end_lr: "
            "raise lr_finder.end_lr (or lr_finder.num_iter) so the test reaches learning rates that train"
        )
    return lrs, losses


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest against log-LR (Lightning's and torch-lr-finder's rule)."""
    return float(lrs[int(np.argmin(np.gradient(losses, np.log10(lrs))))])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """A tenth of the LR at the lowest loss (fastai's ``minimum``)."""
    return float(lrs[int(np.argmin(losses))] / 10)


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """About half-way down the longest descending stretch of the curve (fastai's default)."""
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
    return float(lrs[start + int(third) + int(third / 2)])


POLICIES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"steepest": steepest, "valley": valley, "minimum": minimum}


def suggestions(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 10, skip_end: int = 5) -> dict[str, float]:
    """Every policy's suggestion for one recorded curve."""
    curve = usable_curve(lrs, losses, skip_start, skip_end)
    return {name: policy(*curve) for name, policy in POLICIES.items()}
