"""Elastic resume: the same command rerun on another process count continues the run at its global batch."""

from collections import Counter

import pytest
from conftest import DIGITS, ROOT, history, lr_trace, run, summary

WORKERS = ROOT / "tests" / "workers"
EPOCHS, GLOBAL_BATCH, STOP_AT = 2, 32, 51  # 39 global batches an epoch (1,223 rows): step 51 is inside the second epoch


def indexed_args(run_dir, log_dir, batch, *extra):
    """A user's task (tests/workers/indexed_task.py) whose model logs the sample indices it trains on."""
    return [*DIGITS, f"output_dir={run_dir}", "data.name=indexed_task:digits", "model.name=indexed_task:LoggingMLP",
            f"model.kwargs.log_dir={log_dir}", f"data.batch_size={batch}", f"trainer.epochs={EPOCHS}", "schedule.max_lr=0.02",
            *extra]  # fmt: skip


def indexed_run(tmp_path, name: str, worlds: tuple[int, ...], batch: int):
    """A run on worlds[0] processes, stopped mid-epoch if rerun on worlds[1]; returns (run_dir, log_dir, rerun's stderr)."""
    run_dir, log_dir = tmp_path / name, tmp_path / f"{name}-seen"
    log_dir.mkdir()
    stop = ["trainer.stop_after_steps=" + str(STOP_AT)] if len(worlds) > 1 else []
    run(indexed_args(run_dir, log_dir, batch, *stop), nproc=worlds[0], module="superconverge", cwd=WORKERS)
    stderr = ""
    if len(worlds) > 1:
        assert not summary(run_dir)["completed"] and summary(run_dir)["optimizer_steps"] == STOP_AT
        stderr = run(indexed_args(run_dir, log_dir, batch), nproc=worlds[1], module="superconverge", cwd=WORKERS).stderr
    return run_dir, log_dir, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return indexed_run(tmp_path_factory.mktemp("elastic"), "plain", (1,), GLOBAL_BATCH)[0]


# (processes before, after, data.batch_size): the same command on both, so the batch is per process of the first run.
@pytest.mark.parametrize(("before", "after", "batch"), [(2, 1, GLOBAL_BATCH // 2), (1, 2, GLOBAL_BATCH)])
def test_resume_on_another_process_count(uninterrupted, tmp_path, before, after, batch):
    run_dir, log_dir, stderr = indexed_run(tmp_path, "run", (before, after), batch)
    micro = batch if after == 1 else GLOBAL_BATCH // 2
    assert (f"resuming at the checkpoint's global batch of {GLOBAL_BATCH} on {after} process(es) x {GLOBAL_BATCH // micro // after} "
            f"accumulation step(s) x micro-batch {micro}") in stderr  # fmt: skip
    info, plain = summary(run_dir), summary(uninterrupted)
    assert info["completed"] and info["world_size"] == after and info["global_batch_size"] == GLOBAL_BATCH
    assert info["micro_batch_size"] == micro <= batch
    assert [(r["world"], r["from_step"]) for r in info["batch_layouts"]] == [(before, 0), (after, STOP_AT)]
    # The one-cycle position is the optimizer step: the same steps, LRs and final LR as the run never interrupted.
    assert info["optimizer_steps"] == info["total_optimizer_steps"] == plain["optimizer_steps"] == EPOCHS * 39
    assert lr_trace(run_dir) == lr_trace(uninterrupted)
    assert info["final_lr"] == plain["final_lr"]
    # Every training sample once an epoch, the interrupted epoch included, whichever processes trained it.
    seen = Counter(int(i) for path in log_dir.iterdir() for line in path.read_text().splitlines() for i in line.split())
    train_samples = history(run_dir)[0]["train_samples"]
    assert train_samples % GLOBAL_BATCH >= 2  # the short last batch has a row for every slot: no placeholders logged
    assert len(seen) == train_samples and set(seen.values()) == {EPOCHS}
    assert abs(info["test_acc"] - plain["test_acc"]) <= 0.03


def test_augmented_training_is_the_same_on_fewer_processes(digits_args, tmp_path):
    """Crops and flips are drawn per global batch: the training losses of a 2 -> 1 resume follow the 2-process run's."""
    args = ("data.augment=true", "data.batch_size=32", "schedule.max_lr=0.005", "trainer.epochs=3")
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    run(digits_args(*args, run_dir=plain), nproc=2)
    run(digits_args(*args, "trainer.stop_after_steps=30", run_dir=moved), nproc=2)
    run(digits_args(*args, run_dir=moved), nproc=1)
    before, after = history(plain), history(moved)
    assert [r["train_samples"] for r in after] == [r["train_samples"] for r in before]
    for a, b in zip(before, after, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert abs(summary(moved)["test_acc"] - summary(plain)["test_acc"]) <= 0.05


def test_an_image_folder_resumed_on_fewer_processes_trains_on_the_same_crops(digits_args, tmp_path):
    """An image folder's crops and flips are keyed by (seed, epoch, sample), not drawn by its loader workers: the training
    losses of a 2 -> 1 resume follow the 2-process run's."""
    from PIL import Image

    for name in ("cobra", "viper"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(40):
            Image.effect_noise((20, 20), 40 + i).convert("RGB").save(tmp_path / "images" / name / f"{i}.png")
    args = ("data.name=imagefolder", f"data.root={tmp_path / 'images'}", "data.image_size=16", "data.augment=true", "data.num_workers=1",
            "data.batch_size=8", "schedule.max_lr=0.005", "trainer.epochs=2")  # fmt: skip
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    run(digits_args(*args, run_dir=plain), nproc=2)
    run(digits_args(*args, "trainer.stop_after_steps=7", run_dir=moved), nproc=2)  # 5 global batches an epoch: step 7 is inside the second
    run(digits_args(*args, run_dir=moved), nproc=1)
    before, after = history(plain), history(moved)
    assert [r["train_samples"] for r in after] == [r["train_samples"] for r in before]
    for a, b in zip(before, after, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_a_global_batch_the_processes_cannot_share_is_refused(digits_args, tmp_path):
    args = digits_args("data.batch_size=16", "schedule.max_lr=0.005", "trainer.stop_after_steps=2")
    run(args, nproc=2)
    refused = run(args[:-1], nproc=3, check=False, timeout=120)
    assert refused.returncode != 0
    message = "the checkpoint's global batch of 32 samples cannot be split over 3 processes"
    assert refused.stderr.count(message) >= 3  # every rank says it, before any work
    assert summary(tmp_path / "run")["optimizer_steps"] == 2  # nothing was trained or written
