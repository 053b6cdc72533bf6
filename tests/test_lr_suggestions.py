"""Each LR policy on synthetic range-test curves with known answers."""

import numpy as np
import pytest

from superconverge.lr_finder import RangeTestError, suggestions, usable_curve

LRS = np.logspace(-6, 0, 121)  # 20 points a decade
LOG = np.log10(LRS)


def clean_valley() -> np.ndarray:
    # A plateau, a sigmoid drop centred on 1e-3 (steepest there), then divergence after 1e-2.
    return 2.3 - 2.0 / (1 + np.exp(-3.0 * (LOG + 3))) + np.exp(4.0 * (LOG + 1.0))


def test_clean_valley():
    losses = clean_valley()
    found = suggestions(LRS, losses)
    assert found["steepest"] == pytest.approx(1e-3, rel=0.13)  # within one grid step (10^0.05)
    assert found["minimum"] == pytest.approx(LRS[np.argmin(losses)] / 10)
    # The whole trimmed curve descends until its minimum: valley is half-way along it in log-LR.
    lrs, kept = usable_curve(LRS, losses)
    halfway = (np.log10(lrs[0]) + np.log10(lrs[np.argmin(kept)])) / 2
    assert np.log10(found["valley"]) == pytest.approx(halfway, abs=0.1)


def test_nan_tail_is_cut_before_the_policies_run():
    losses = clean_valley()
    with_nan = losses.copy()
    with_nan[100:] = np.nan
    assert suggestions(LRS, with_nan) == suggestions(LRS[:100], losses[:100])
    lrs, kept = usable_curve(LRS, with_nan, skip_start=10, skip_end=5)
    assert np.isfinite(kept).all() and len(kept) == 100 - 15


def test_flat_curve_asks_for_a_wider_range():
    with pytest.raises(RangeTestError, match="end_lr"):
        suggestions(LRS, np.full(len(LRS), 2.3))


def test_divergence_at_once_asks_for_a_lower_start():
    losses = clean_valley()
    losses[8:] = np.inf
    with pytest.raises(RangeTestError, match="start_lr"):
        suggestions(LRS, losses)
