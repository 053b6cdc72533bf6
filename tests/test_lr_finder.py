"""The LR range test: spread over every rank at the global batch, max_lr from rank 0, restored state, once per run."""

import json
import math
import time

import pytest
import torch
from conftest import FAST, ROOT, run, summary

REPORT = "tests/workers/report_worker.py"
RANGE_TEST = "tests/workers/range_test_worker.py"


def reports(folder) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


PROBE = ["lr_finder.probe=true", "lr_finder.probe_steps=12", "lr_finder.probe_factors=[1,3]", "lr_finder.probe_val_samples=150"]


@pytest.fixture(scope="module")
def two_rank_range_test(tmp_path_factory):
    """One 2-process range test (per-process batch 32) and the same test on 1 process accumulating 2 batches, each
    followed by the probe (the range test's checks and the probe's share these runs)."""
    root = tmp_path_factory.mktemp("range_test")
    common = ["--config", "configs/digits.yaml", *FAST, *PROBE, "data.batch_size=32"]
    run(["2", str(root / "two"), *common, f"output_dir={root / 'run2'}"], nproc=2, script=RANGE_TEST)
    run(["1", str(root / "one"), *common, "trainer.grad_accum_steps=2", f"output_dir={root / 'run1'}"], script=RANGE_TEST)
    return root


def test_both_ranks_do_the_work(two_rank_range_test):
    ranks = reports(two_rank_range_test / "two")
    assert [r["world_size"] for r in ranks] == [2, 2]
    iterations = ranks[0]["iterations_run"]
    # Every rank pushed one micro-batch per iteration through the DDP model: half the global batch each.
    assert ranks[0]["batches_per_rank"] == ranks[1]["batches_per_rank"] == [iterations, iterations]
    assert 20 < ranks[0]["iterations"] <= iterations <= 40
    assert ranks[0]["max_lr"] == ranks[1]["max_lr"]


def test_the_curve_is_the_global_batchs_curve(two_rank_range_test):
    two = reports(two_rank_range_test / "two")[0]
    one = json.loads((two_rank_range_test / "one" / "rank0.json").read_text())
    assert one["batches_per_rank"] == [2 * one["iterations_run"]]  # one process: both micro-batches of each global batch
    assert len(two["raw_losses"]) == len(one["raw_losses"]) > 20
    assert two["raw_losses"] == pytest.approx(one["raw_losses"], rel=1e-5, abs=1e-6)
    assert two["suggestions"] == pytest.approx(one["suggestions"], rel=1e-6)  # the probe's choice after them: see below


@pytest.mark.parametrize("where", ["two", "one"])
def test_weights_come_back_bit_for_bit(two_rank_range_test, where):
    for report in (
        reports(two_rank_range_test / "two") if where == "two" else [json.loads((two_rank_range_test / "one" / "rank0.json").read_text())]
    ):
        assert report["weights_restored_exactly"] and report["optimizer_params_are_the_model"]
        assert report["no_gradients_left"]  # the old test left its last gradients for training's first step


def test_two_ranks_train_with_rank_zeros_max_lr(digits_args, tmp_path):
    args = digits_args(*FAST, "data.batch_size=32", "trainer.grad_accum_steps=2", "trainer.epochs=1")
    run(["2", str(tmp_path / "reports"), *args], nproc=2, script=REPORT)
    ranks = reports(tmp_path / "reports")
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["max_lr"] == ranks[1]["max_lr"] == found["max_lr"] == found["suggestions"][found["policy"]]
    assert found["effective_batch_size"] == 32 * 2 * 2 and found["accumulation_steps"] == 2 and found["world_size"] == 2
    assert found["batches_per_rank"] == [found["iterations_run"] * 2] * 2  # each iteration: 2 micro-batches on each rank
    assert found["max_lr"] < found["lr_at_minimum"]
    assert (tmp_path / "run" / "lr_finder.png").stat().st_size > 10_000
    info = summary(tmp_path / "run")
    assert info["max_lr"] == found["max_lr"] and info["lr_policy"] == found["policy"] and info["lr_finder_seconds"] > 0
    assert info["lr_suggestions"] == found["suggestions"]
    assert info["process_seconds"] > info["wall_seconds"] + info["lr_finder_seconds"]  # start-up and the range test counted


def test_resume_does_not_rerun_the_range_test(digits_args, tmp_path):
    run(digits_args(*FAST, "trainer.stop_after_epochs=1"))
    path = tmp_path / "run" / "lr_finder.json"
    before, stamp = path.read_text(), path.stat().st_mtime_ns
    run(digits_args(*FAST))
    assert path.read_text() == before and path.stat().st_mtime_ns == stamp
    info = summary(tmp_path / "run")
    assert info["resumed"] and info["completed"] and info["max_lr"] == json.loads(before)["max_lr"]
    assert info["lr_suggestions"] == json.loads(before)["suggestions"]


def test_rank_zero_failure_ends_every_rank_quickly(digits_args, tmp_path):
    started = time.monotonic()
    proc = run(digits_args(*FAST, "lr_finder.start_lr=50", "lr_finder.end_lr=1e5"), nproc=2, check=False, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - started < 90
    assert "lr_finder.start_lr" in proc.stderr and "[rank 1] superconverge: error:" in proc.stderr, proc.stderr[-3000:]


def test_fallback_max_lr_is_used_with_a_loud_warning(digits_args, tmp_path):
    proc = run(digits_args(*FAST, "lr_finder.start_lr=50", "lr_finder.end_lr=1e5", "lr_finder.fallback_max_lr=0.003",
                           "trainer.epochs=1"), nproc=2)  # fmt: skip
    assert "WARNING" in proc.stderr and "fallback_max_lr=0.003" in proc.stderr
    info = summary(tmp_path / "run")
    assert info["max_lr"] == 0.003 and info["lr_policy"] == "fallback" and info["completed"]


def test_random_labels_are_refused_with_the_keys_to_change(digits_args, tmp_path):
    proc = run(digits_args("data.name=fake", "data.fake_train_size=1000"), script="lr_find.py", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "never really went down" in error and "lr_finder.start_lr" in error and "lr_finder.end_lr" in error
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    assert found["error"] in error  # the curve is kept to look at
    # The loss fell from an unlucky start to chance level: a weak curve, so the probe trained (without lr_finder.probe) and saw
    # no learning either.
    assert found["weak_curve"] and len(found["probe_losses"]) == 2 and min(loss for _, loss in found["probe_losses"]) > 0.95 * math.log(10)


@pytest.mark.parametrize(("probe_loss", "fallback"), [(1.9, None), (2.25, None), (2.25, 0.003)])
def test_a_weak_curve_stands_only_if_the_probe_learned(tmp_path, probe_loss, fallback):
    from superconverge.lr_finder import MaxLRChoice, RangeTestCurve, RangeTestError, RuleDecision, check_learning, conclude
    from superconverge.lr_probe import ProbeResult, ProbeScore
    from superconverge.records import Metric

    curve = RangeTestCurve(lrs=(1e-4, 1e-3), raw_losses=(2.9, 2.25), smoothed_losses=(2.9, 2.25), effective_batch_size=64, world_size=1,
                           sweeps=1, accumulation_steps=1, batches_per_rank=(2,), stopped_on_divergence=True, seconds=1.0,
                           iterations_run=2)  # fmt: skip
    rule = RuleDecision("floor_edge", {"floor_edge": 1e-4}, max_lr=1e-4, weak_curve=True)
    probe = ProbeResult({1e-4: ProbeScore(2.4, None), 6e-4: ProbeScore(probe_loss, None)}, Metric.VAL_LOSS, 1e-4, 1.0)
    check = check_learning(probe, math.log(10), fallback)
    choice = MaxLRChoice.compose(curve, rule, probe, check)
    if probe_loss < 0.95 * math.log(10):
        conclude(choice, tmp_path, is_main_process=True)
        assert choice.error is None and not choice.fallback_used  # the probe's pick stands
        assert choice.max_lr == 1e-4 and choice.policy == "floor_edge+probe"
    elif fallback is None:
        with pytest.raises(RangeTestError, match=r"chance level 2\.3.*2\.25 at best.*lr_finder\.start_lr"):
            conclude(choice, tmp_path, is_main_process=True)
        assert json.loads((tmp_path / "lr_finder.json").read_text())["error"] == choice.error
    else:
        conclude(choice, tmp_path, is_main_process=True)
        assert choice.fallback_used and choice.max_lr == fallback and choice.policy == "fallback"
    # Every stage left the records it was given as they were.
    assert probe.max_lr == rule.max_lr == 1e-4 and rule.error is None and not rule.fallback_used


@pytest.mark.parametrize("nproc", [1, 2])
def test_standalone_lr_find_command(digits_args, tmp_path, nproc):
    proc = run(digits_args(*FAST, "lr_finder.policy=steepest"), nproc=nproc, script="lr_find.py")
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    for name in ("floor_edge", "near_minimum", "steepest", "valley", "minimum"):
        assert name in proc.stdout and f"{found['suggestions'][name]:.3e}" in proc.stdout
    assert found["policy"] == "steepest" and found["effective_batch_size"] == 64 * nproc and found["world_size"] == nproc
    assert (tmp_path / "run" / "lr_finder.png").is_file() and not (tmp_path / "run" / "summary.json").exists()
    assert "\x1b[" not in proc.stdout  # plain text when not a terminal


def test_sweep_grids_interleave_however_many_sweeps_run():
    from superconverge.config import LRFinderConfig
    from superconverge.lr_finder import sweep_grid

    cfg = LRFinderConfig(start_lr=1e-6, end_lr=1.0, sweep_iter=61)  # 10 steps a decade
    assert sweep_grid(cfg, 0).lr(0) == pytest.approx(1e-6) and sweep_grid(cfg, 0).lr(60) == pytest.approx(1.0)
    for sweeps in (2, 3, 5):
        offsets = sorted(sweep_grid(cfg, j).offset for j in range(sweeps))
        gaps = [b - a for a, b in zip(offsets, [*offsets[1:], offsets[0] + 1], strict=True)]  # around the circle
        assert len(set(offsets)) == sweeps and max(gaps) < 2.1 / sweeps  # spread over a step, none bunched
    linear = sweep_grid(LRFinderConfig(start_lr=0.1, end_lr=1.1, sweep_iter=11, step_mode="linear"), 1)
    assert linear.lr(1) - linear.lr(0) == pytest.approx(0.1) and linear.lr(0) == pytest.approx(0.1 + 0.1 * linear.offset)


def test_range_test_runs_at_one_cycles_peak_momentum():
    from superconverge.config import load_config
    from superconverge.lr_finder import range_test_optimizer

    sgd = load_config(ROOT / "configs" / "digits.yaml", ["optimizer.name=sgd", "optimizer.momentum=0.9", "schedule.base_momentum=0.8"])
    assert range_test_optimizer(sgd).momentum == 0.8 and sgd.optimizer.momentum == 0.9
    adam = load_config(ROOT / "configs" / "digits.yaml", ["optimizer.betas=[0.9,0.98]"])
    assert range_test_optimizer(adam).betas == (0.85, 0.98)
    for off in ("lr_finder.peak_momentum=false", "schedule.cycle_momentum=false"):
        cfg = load_config(ROOT / "configs" / "digits.yaml", [off])
        assert range_test_optimizer(cfg) == cfg.optimizer


def _range_test(cfg, optimizer_lr: float = 1e-3):
    """The real range test on one process, after one optimizer step (state worth restoring)."""
    import copy

    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from superconverge.lr_finder import run_range_test
    from superconverge.schedule import build_optimizer
    from superconverge.step import unprepared_step
    from superconverge.task import build_task

    task = build_task(cfg)
    model, data = task.model, task.data
    optimizer = build_optimizer(cfg.optimizer, model, lr=optimizer_lr)
    images, labels = next(iter(torch.utils.data.DataLoader(data.train, batch_size=32)))
    torch.nn.functional.cross_entropy(model(data.eval_transform(images)), labels).backward()
    optimizer.step()
    before = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    try:
        accelerator = Accelerator(cpu=True)
        result = run_range_test(cfg, task, unprepared_step(cfg, accelerator, task, model, optimizer), accelerator)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return result, before, (model, optimizer)


def test_a_short_test_scouts_then_keeps_the_grids_step(tmp_path):
    """num_iter below sweep_iter: long strides while the loss has not moved, then every step of the same grid."""
    from superconverge.config import load_config
    from superconverge.lr_finder import LEAD_STEPS, sweep_grid

    cfg = load_config(ROOT / "configs" / "digits.yaml", ["lr_finder.num_iter=40", "lr_finder.sweep_iter=100", f"output_dir={tmp_path}"])
    result, (model_before, _), (model, _) = _range_test(cfg)
    grid = sweep_grid(cfg.lr_finder, 0)
    steps = [round(math.log(lr / grid.start) / math.log(grid.lr(1) / grid.start)) for lr in result.lrs]
    strides = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    scouted = next(i for i, stride in enumerate(strides) if stride != LEAD_STEPS)  # the scout's points kept
    assert result.sweeps == 1 and result.iterations < result.iterations_run <= 40 and steps[0] == 0 and scouted >= 2
    assert all(stride == 1 for stride in strides[scouted + 1 :])  # then every step of the grid
    assert max(steps) > 40  # further up the grid than 40 single steps reach
    assert all(torch.equal(value, model_before[key]) for key, value in model.state_dict().items())


def test_every_sweep_starts_from_the_same_weights(tmp_path):
    """num_iter 60 over a grid of 30 steps: sweeps until the budget is spent, each from the saved weights, interleaved."""
    from superconverge.config import load_config
    from superconverge.lr_finder import sweep_grid

    cfg = load_config(
        ROOT / "configs" / "digits.yaml", [*FAST, "lr_finder.num_iter=60", "lr_finder.sweep_iter=30", f"output_dir={tmp_path}"]
    )
    result, (model_before, optimizer_before), (model, optimizer) = _range_test(cfg)
    assert result.sweeps >= 2 and 40 < result.iterations <= result.iterations_run <= 60
    assert result.batches_per_rank == (result.iterations_run,)
    assert list(result.lrs) == sorted(result.lrs) and len(set(result.lrs)) == len(result.lrs)  # interleaved sweeps
    firsts = sorted(sweep_grid(cfg.lr_finder, j).lr(0) for j in range(result.sweeps))
    assert result.lrs[: result.sweeps] == pytest.approx(firsts) and firsts[0] == pytest.approx(1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, model_before[key]), key
    after = optimizer.state_dict()
    assert after["param_groups"] == optimizer_before["param_groups"]
    for index, state in optimizer_before["state"].items():
        for name, value in state.items():
            assert torch.equal(after["state"][index][name], value), (index, name)


def test_the_probe_trains_each_candidate_and_keeps_the_best_by_validation_accuracy(two_rank_range_test):
    ranks = reports(two_rank_range_test / "two")
    assert ranks[0]["probe_losses"] == ranks[1]["probe_losses"] and ranks[0]["max_lr"] == ranks[1]["max_lr"]
    pick = ranks[0]["suggestions"]["floor_edge"]
    candidates = dict(ranks[0]["probe_losses"])
    assert list(candidates) == pytest.approx([pick, 3 * pick]) and ranks[0]["policy"] == "floor_edge+probe"
    found = json.loads((two_rank_range_test / "run2" / "lr_finder.json").read_text())
    assert found["max_lr"] == ranks[0]["max_lr"] and [tuple(p) for p in found["probe_losses"]] == list(candidates.items())
    # lr_finder.probe_metric auto: a classifier's candidates are judged by accuracy (the loss breaking ties)
    accuracies = dict(found["probe_accuracies"])
    assert list(accuracies) == list(candidates) and all(0.1 < a <= 1 for a in accuracies.values()) and found["probe_metric"] == "val_acc"
    assert found["max_lr"] == min(candidates, key=lambda lr: (-accuracies[lr], candidates[lr]))
    assert 0 < candidates[found["max_lr"]] < math.log(10)  # the chosen one trained: below chance


def test_the_probe_keeps_the_best_by_its_metric():
    from superconverge.lr_probe import ProbeScore, best

    scores = {1e-3: ProbeScore(0.50, 0.80), 3e-3: ProbeScore(0.55, 0.84), 6e-3: ProbeScore(0.52, 0.84), 1e-2: ProbeScore(math.inf, 0.9)}
    assert best(scores, "val_loss") == 1e-3
    assert best(scores, "val_acc") == 6e-3  # the highest accuracy, the lower loss among equals; a blown-up one never
    assert best({1e-3: ProbeScore(0.4, None), 3e-3: ProbeScore(0.3, None)}, "val_loss") == 3e-3


def test_the_probe_leaves_the_model_as_it_was(two_rank_range_test):
    one = json.loads((two_rank_range_test / "one" / "rank0.json").read_text())
    for report in [*reports(two_rank_range_test / "two"), one]:
        assert report["weights_restored_exactly"] and report["no_gradients_left"]
    # The candidates are the same on 1 process; their losses are not quite: under DDP, batch norm's running statistics
    # are rank 0's (broadcast each forward), where one process accumulating both micro-batches sees the whole batch.
    assert [lr for lr, _ in one["probe_losses"]] == pytest.approx([lr for lr, _ in reports(two_rank_range_test / "two")[0]["probe_losses"]])


def test_a_run_trains_at_the_probes_choice(digits_args, tmp_path):
    run(digits_args(*FAST, *PROBE, "trainer.epochs=1"))
    found, info = json.loads((tmp_path / "run" / "lr_finder.json").read_text()), summary(tmp_path / "run")
    assert info["lr_policy"] == "floor_edge+probe" and info["max_lr"] == found["max_lr"] in dict(found["probe_losses"])
    assert info["lr_finder_seconds"] == pytest.approx(found["seconds"] + found["probe_seconds"], abs=1e-3) and found["probe_seconds"] > 0
