"""The max_lr rules on synthetic range-test curves: known answers, spikes, plateaus, late dips, refusals."""

import math

import numpy as np
import pytest

from superconverge.lr_rules import POLICIES, RangeTestError, analyze, smooth, suggestions

LRS = np.logspace(-6, 0, 121)  # 20 points a decade
LOG = np.log10(LRS)
CHANCE = math.log(10)


def clean_valley() -> np.ndarray:
    # A plateau at chance level, a sigmoid drop centred on 1e-3 (steepest there), then divergence after 1e-2.
    return 2.3 - 2.0 / (1 + np.exp(-3.0 * (LOG + 3))) + np.exp(4.0 * (LOG + 1.0))


def test_clean_valley():
    losses = clean_valley()
    curve = analyze(LRS, losses, chance_loss=CHANCE)
    found = suggestions(curve)
    assert curve.lr_at_minimum == pytest.approx(LRS[np.argmin(losses)], rel=0.13)
    assert found["steepest"] == pytest.approx(1e-3, rel=0.13)  # within one grid step (10^0.05)
    assert found["minimum"] == pytest.approx(curve.lr_at_minimum / 10)
    assert curve.tail_lr is not None and curve.tail_lr > curve.lr_at_minimum
    # The whole trimmed curve descends until its minimum: valley is half-way along it in log-LR.
    halfway = (np.log10(curve.lrs[0]) + np.log10(curve.lr_at_minimum)) / 2
    assert np.log10(found["valley"]) == pytest.approx(halfway, abs=0.1)


def test_centred_smoothing_has_no_lag():
    # An EMA (torch-lr-finder's smoothing) moves a sharp drop to higher LRs; a centred window does not.
    step = np.where(LOG < -3, 2.3, 0.5)
    smoothed = smooth(LRS, step)
    crossing = LRS[np.argmax(smoothed < 1.4)]
    assert crossing == pytest.approx(1e-3, rel=0.13)


def test_a_single_spike_moves_nothing():
    losses = clean_valley()
    spiked = losses.copy()
    spiked[70] = 9.0  # one exploding batch on the way down
    assert suggestions(analyze(LRS, spiked)) == pytest.approx(suggestions(analyze(LRS, losses)), rel=0.13)


def test_a_late_dip_in_the_diverging_tail_is_ignored():
    losses = clean_valley()
    late = losses.copy()
    late[108:112] = 0.05  # lower than the real minimum, but after the loss has blown up
    curve = analyze(LRS, late, skip_end=0)
    assert curve.lr_at_minimum < 2e-2 and max(suggestions(curve).values()) < curve.lr_at_minimum


def test_plateau_then_drop_then_plateau():
    # Nothing happens for three decades, a drop at 1e-2, a floor, then divergence: rules stay on the drop's side.
    losses = 2.3 - 1.8 / (1 + np.exp(-6.0 * (LOG + 2))) + np.exp(6.0 * (LOG + 0.3))
    curve = analyze(LRS, losses)
    found = suggestions(curve)
    assert 2e-3 < found["steepest"] < 2e-2
    assert all(lr < curve.lr_at_minimum for lr in found.values())


@pytest.mark.parametrize("seed", range(200))
def test_no_rule_returns_an_lr_at_or_past_the_minimum(seed):
    # Random bumpy curves with noise, a random drop and a random blow-up.
    rng = np.random.default_rng(seed)
    centre, blow = rng.uniform(-5, -2), rng.uniform(-1.5, 0)
    losses = 2.3 - rng.uniform(0.5, 2.0) / (1 + np.exp(-rng.uniform(1, 6) * (LOG - centre)))
    losses += np.exp(rng.uniform(2, 8) * (LOG - blow)) + 0.3 * np.sin(rng.uniform(1, 6) * LOG) * rng.uniform(0, 1)
    losses = np.abs(losses + rng.normal(0, rng.uniform(0, 0.3), len(LRS)))
    try:
        curve = analyze(LRS, losses, chance_loss=CHANCE)
    except RangeTestError:
        return
    for name, lr in suggestions(curve).items():
        assert lr < curve.lr_at_minimum, name
        assert curve.tail_lr is None or lr < curve.tail_lr, name
        assert lr >= curve.lrs[0] / 10, name


def test_nan_tail_is_cut_before_the_rules_run():
    losses = clean_valley()
    with_nan = losses.copy()
    with_nan[100:] = np.nan
    curve = analyze(LRS, with_nan)
    assert np.isfinite(curve.losses).all() and curve.lrs[-1] < LRS[100]


def test_flat_curve_names_the_sweep_keys():
    with pytest.raises(RangeTestError, match=r"lr_finder\.start_lr.*lr_finder\.end_lr"):
        analyze(LRS, np.full(len(LRS), 2.3))


def test_a_descent_only_to_chance_level_is_a_weak_curve():
    # Random labels, or a slow model from an unlucky start: the loss sinks to chance level (the class prior),
    # then blows up. The curve cannot tell the two apart: it is marked weak (the LR probe's training decides).
    rng = np.random.default_rng(0)
    losses = 2.3 + 0.35 * (LOG < -4) + np.exp(5.0 * (LOG + 0.5)) + rng.normal(0, 0.03, len(LRS))
    curve = analyze(LRS, losses, chance_loss=CHANCE)
    assert curve.weak and curve.losses[curve.minimum] > 0.95 * CHANCE and 0 < POLICIES["floor_edge"](curve) < curve.lr_at_minimum
    assert not analyze(LRS, losses).weak  # without a chance level (a regression) it is a real descent
    assert not analyze(LRS, clean_valley(), chance_loss=CHANCE).weak


def test_a_curve_still_falling_at_end_lr_asks_for_a_wider_sweep():
    losses = 2.3 - 2.0 / (1 + np.exp(-1.5 * (LOG + 1)))  # still going down at 1.0
    with pytest.raises(RangeTestError, match="lr_finder.end_lr"):
        analyze(LRS, losses)


def test_divergence_at_once_asks_for_a_lower_start():
    losses = clean_valley()
    losses[8:] = np.inf
    with pytest.raises(RangeTestError, match="start_lr"):
        analyze(LRS, losses)


def test_every_policy_is_offered():
    assert set(suggestions(analyze(LRS, clean_valley()))) == set(POLICIES)


def test_floor_edge_holds_where_noise_moves_the_minimum_of_a_flat_floor():
    # A floor flat from 1e-2 to 1e-1 (then divergence): where its lowest point falls is noise, its near edge is not.
    base = 2.3 - 2.0 / (1 + np.exp(-10.0 * (LOG + 2.5))) + np.where(LOG > -1, 20 * (LOG + 1) ** 2, 0)
    edges, minima = [], []
    for seed in range(6):
        noisy = base + np.random.default_rng(seed).normal(0, 0.01, len(LRS))
        curve = analyze(LRS, noisy, chance_loss=CHANCE)
        edges.append(POLICIES["floor_edge"](curve))
        minima.append(curve.lr_at_minimum)
        assert edges[-1] < curve.lr_at_minimum
    assert max(minima) / min(minima) > 2  # the minimum wanders along the floor ...
    assert max(edges) / min(edges) < 1.5  # ... its near edge stays put


def test_every_registered_policy_is_a_config_choice_and_drawn(tmp_path, monkeypatch):
    """lr_rules.POLICIES is the one list of names: the config takes each (only those), the plot draws each in a colour of its own."""
    from matplotlib.figure import Figure

    from superconverge.config import ConfigError, load_config
    from superconverge.lr_finder import MaxLRChoice, RangeTestCurve, apply_rule, plot, policy_colors

    with pytest.raises(ConfigError, match="lr_finder.policy: Input should be 'floor_edge'.*'minimum'"):
        load_config(None, ["lr_finder.policy=nonsense"])
    colors = policy_colors()
    assert list(colors) == list(POLICIES) and len(set(colors.values())) == len(POLICIES)
    drawn: list[tuple[str, str]] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path: drawn.extend(
        (line.get_label(), line.get_color()) for line in fig.axes[0].get_lines()))  # fmt: skip
    losses = tuple(clean_valley().tolist())
    curve = RangeTestCurve(lrs=tuple(LRS.tolist()), raw_losses=losses, smoothed_losses=losses, effective_batch_size=64, world_size=1,
                           sweeps=1, accumulation_steps=1, batches_per_rank=(121,), stopped_on_divergence=True, seconds=1.0,
                           iterations_run=121)  # fmt: skip
    for name in POLICIES:
        cfg = load_config(None, [f"lr_finder.policy={name}"]).lr_finder
        assert cfg.policy == name
        rule = apply_rule(curve, cfg, CHANCE)
        assert rule.max_lr == rule.suggestions[name] and list(rule.suggestions) == list(POLICIES)
        drawn.clear()
        plot(MaxLRChoice.compose(curve, rule), tmp_path / "lr_finder.png")
        assert (f"{name}: {rule.max_lr:.2e} (chosen)", colors[name]) in drawn
        assert {color for label, color in drawn if label.split(":")[0] in POLICIES} == set(colors.values())
