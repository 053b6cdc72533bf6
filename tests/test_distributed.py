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


REQUIRED_SUMMARY = {"world_size", "global_batch_size", "max_lr", "optimizer_steps", "final_lr", "epochs_completed", "best_val_acc",
                    "test_acc", "stopped_early", "resumed", "mixed_precision", "wall_seconds", "train_images_per_second",
                    "lr_policy", "lr_finder_seconds", "wandb_run_id", "wandb_mode"}  # fmt: skip


def test_gradient_clipping_is_applied(digits_args, tmp_path):
    import torch
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    from superconverge.config import load_config
    from superconverge.models import build_model

    def moved(run_dir, *extra):
        args = digits_args("trainer.epochs=1", "schedule.max_lr=0.05", "optimizer.name=sgd", "optimizer.weight_decay=0", *extra,
                           run_dir=run_dir)  # fmt: skip
        run(args)
        cfg = load_config(args[1], args[2:])
        set_seed(cfg.seed)
        start = build_model(cfg.model, 10, 1).module.state_dict()
        end = load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))
        return max(float((end[k] - start[k]).abs().max()) for k in end if start[k].dtype == torch.float32 and "running" not in k)

    assert moved(tmp_path / "clipped", "trainer.grad_clip_norm=1e-9") < 1e-6
    assert moved(tmp_path / "free") > 1e-3
    assert set(summary(tmp_path / "free")) >= REQUIRED_SUMMARY
