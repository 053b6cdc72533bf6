"""The LR range test: rank 0 at the global batch, max_lr broadcast, restored state, once per run."""

import copy
import json
import time

import pytest
import torch
from conftest import ROOT, run, summary

WORKER = "tests/workers/report_worker.py"
FAST = ["schedule.max_lr=auto", "lr_finder.num_iter=40", "lr_finder.skip_start=4", "lr_finder.skip_end=2", "lr_finder.end_lr=1"]


def test_two_ranks_use_rank_zeros_max_lr_at_the_global_batch(digits_args, tmp_path):
    args = digits_args(*FAST, "data.batch_size=32", "trainer.grad_accum_steps=2", "trainer.epochs=1")
    run(["2", str(tmp_path / "reports"), *args], nproc=2, script=WORKER)
    ranks = [json.loads((tmp_path / "reports" / f"rank{r}.json").read_text()) for r in (0, 1)]
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["max_lr"] == ranks[1]["max_lr"] == found["max_lr"] == found["suggestions"][found["policy"]]
    assert found["effective_batch_size"] == 32 * 2 * 2 and found["accumulation_steps"] == 4
    assert found["batches_seen"] == found["iterations"] * 4  # each iteration really accumulates 4 batches
    assert set(found["suggestions"]) == {"steepest", "valley", "minimum"}
    assert len(found["lrs"]) == len(found["losses"]) == len(found["raw_losses"]) == found["iterations"]
    for key in ("stopped_on_divergence", "seconds"):
        assert key in found
    assert (tmp_path / "run" / "lr_finder.png").stat().st_size > 10_000
    info = summary(tmp_path / "run")
    assert info["max_lr"] == found["max_lr"] and info["lr_policy"] == found["policy"] and info["lr_finder_seconds"] > 0


def test_model_and_optimizer_are_restored_exactly(tmp_path):
    from superconverge.config import load_config
    from superconverge.data import build_data
    from superconverge.lr_finder import run_range_test
    from superconverge.models import build_model
    from superconverge.schedule import build_optimizer

    cfg = load_config(ROOT / "configs" / "digits.yaml", [*FAST, f"output_dir={tmp_path}"])
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.num_classes, data.in_channels)
    optimizer = build_optimizer(cfg.optimizer, model, lr=1e-3)
    images, labels = next(iter(torch.utils.data.DataLoader(data.train, batch_size=32)))
    torch.nn.functional.cross_entropy(model(data.eval_transform(images)), labels).backward()
    optimizer.step()  # some optimizer state worth restoring
    model_before, optimizer_before = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    result = run_range_test(cfg, data, model, optimizer, torch.device("cpu"), world_size=1, mixed_precision="no")
    assert result.iterations > 10
    for key, value in model.state_dict().items():
        assert torch.equal(value, model_before[key]), key
    after = optimizer.state_dict()
    assert after["param_groups"] == optimizer_before["param_groups"]
    for index, state in optimizer_before["state"].items():
        for name, value in state.items():
            assert torch.equal(after["state"][index][name], value), (index, name)


def test_resume_does_not_rerun_the_range_test(digits_args, tmp_path):
    run(digits_args(*FAST, "trainer.stop_after_epochs=1"))
    path = tmp_path / "run" / "lr_finder.json"
    before, stamp = path.read_text(), path.stat().st_mtime_ns
    run(digits_args(*FAST))
    assert path.read_text() == before and path.stat().st_mtime_ns == stamp
    info = summary(tmp_path / "run")
    assert info["resumed"] and info["completed"] and info["max_lr"] == json.loads(before)["max_lr"]


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


@pytest.mark.parametrize("nproc", [1, 2])
def test_standalone_lr_find_command(digits_args, tmp_path, nproc):
    proc = run(digits_args(*FAST, "lr_finder.policy=steepest"), nproc=nproc, script="lr_find.py")
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    for name in ("steepest", "valley", "minimum"):
        assert name in proc.stdout and f"{found['suggestions'][name]:.3e}" in proc.stdout
    assert found["policy"] == "steepest" and found["effective_batch_size"] == 64 * nproc
    assert (tmp_path / "run" / "lr_finder.png").is_file() and not (tmp_path / "run" / "summary.json").exists()
    assert "\x1b[" not in proc.stdout  # plain text when not a terminal
