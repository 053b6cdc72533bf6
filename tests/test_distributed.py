"""Real 2-process gloo jobs: one job, identical weights, exact metrics, one early-stopping decision."""

import json

from conftest import history, run, summary

from superconverge.config import load_config
from superconverge.data import build_data

WORKER = "tests/workers/report_worker.py"


def reports(report_dir, world):
    found = [json.loads((report_dir / f"rank{r}.json").read_text()) for r in range(world)]
    assert [r["rank"] for r in found] == list(range(world))
    return found


def test_two_process_job_is_one_ddp_job(digits_args, tmp_path):
    args = digits_args("data.batch_size=50")
    run(["2", str(tmp_path / "reports"), *args], nproc=2, script=WORKER)
    ranks = reports(tmp_path / "reports", 2)
    assert all(r["world_size"] == 2 for r in ranks)
    assert all(r["params_identical_across_ranks"] for r in ranks)
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]
    assert ranks[0]["max_lr"] == ranks[1]["max_lr"]
    run_dir = tmp_path / "run"
    info = summary(run_dir)
    assert info["world_size"] == 2 and info["completed"] and info["test_acc"] > 0.5
    # Validation covers its split exactly once (the padding Accelerate adds to even out ranks is dropped).
    data = build_data(load_config(args[1], args[2:]).data)
    assert len(data.val) % (2 * 50) != 0, "pick sizes that force padding"
    assert all(r["val_samples"] == len(data.val) for r in history(run_dir))
    assert all(r["train_samples"] == len(data.train) for r in history(run_dir))
    assert (run_dir / "config.yaml").read_text().count("batch_size: 50") == 1


def test_bf16_on_cpu_runs_under_autocast(digits_args, tmp_path):
    run(["1", str(tmp_path / "reports"), *digits_args("trainer.mixed_precision=bf16", "trainer.epochs=1")], script=WORKER)
    (rank0,) = reports(tmp_path / "reports", 1)
    assert rank0["mixed_precision"] == "bf16"
    assert rank0["conv_output_dtype"] == "torch.bfloat16"
    info = summary(tmp_path / "run")
    assert info["mixed_precision"] == "bf16" and info["test_acc"] > 0.3


def test_early_stopping_same_decision_on_every_rank(digits_args, tmp_path):
    # min_delta larger than any possible change: epoch 1 sets the best, two bad epochs stop the run.
    args = digits_args("trainer.epochs=6", "trainer.early_stopping.patience=2", "trainer.early_stopping.metric=val_loss",
                       "trainer.early_stopping.min_delta=100")  # fmt: skip
    run(args, nproc=2, timeout=180)
    info = summary(tmp_path / "run")
    assert info["stopped_early"] and info["epochs_completed"] == 3 and info["completed"]
    assert info["best_epoch"] == 1
    assert [r["epoch"] for r in history(tmp_path / "run")] == [1, 2, 3]


def test_early_stopping_is_off_by_default(digits_args, tmp_path):
    run(digits_args("trainer.epochs=3", "trainer.early_stopping.min_delta=100"))
    info = summary(tmp_path / "run")
    assert not info["stopped_early"] and info["epochs_completed"] == 3
