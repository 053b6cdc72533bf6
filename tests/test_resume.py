"""Interrupted-and-resumed runs end exactly where uninterrupted runs end; checkpoints survive kills."""

import signal
import subprocess
import time

import pytest
from conftest import ROOT, assert_same_run, history, launch_command, run, summary

from superconverge.checkpoint import CheckpointStore, validate_checkpoint


@pytest.mark.parametrize(("world", "stop"), [(1, "trainer.stop_after_epochs=1"), (2, "trainer.stop_after_steps=7")])
def test_resumed_run_equals_uninterrupted_run(digits_args, tmp_path, world, stop):
    plain, interrupted = tmp_path / "plain", tmp_path / "interrupted"
    run(digits_args("data.augment=true", run_dir=plain), nproc=world)
    run(digits_args("data.augment=true", stop, run_dir=interrupted), nproc=world)
    first = summary(interrupted)
    assert not first["completed"] and first["test_acc"] is None
    run(digits_args("data.augment=true", run_dir=interrupted), nproc=world)
    resumed = summary(interrupted)
    assert resumed["completed"] and resumed["resumed"] and resumed["times_resumed"] == 1
    assert_same_run(plain, interrupted)


def test_kill_during_checkpointing_never_loses_the_checkpoint(digits_args, tmp_path):
    run_dir = tmp_path / "run"
    args = digits_args("trainer.checkpoint_every_steps=1", "trainer.epochs=3", run_dir=run_dir)
    store = CheckpointStore(run_dir / "checkpoints")
    # Every step saves, so a kill shortly after this process's first new checkpoint lands inside a later save.
    for extra in (0.0, 0.37, 1.1):
        before = store.link("last")
        proc = subprocess.Popen(launch_command(1) + args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while store.link("last") == before:
            assert proc.poll() is None and time.monotonic() < deadline, "the run wrote no new checkpoint"
            time.sleep(0.02)
        time.sleep(extra)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        validate_checkpoint(store.link("last"))
    run(args)
    info = summary(run_dir)
    assert info["completed"] and info["resumed"] and info["optimizer_steps"] == info["total_optimizer_steps"]
    assert [r["epoch"] for r in history(run_dir)] == [1, 2, 3]
