"""Faults around the checkpoints: NaN losses, two runs in one directory, relative checkpoint paths."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, launch_command, run
from safetensors.torch import load_file


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_non_finite_loss_stops_the_run_and_keeps_only_good_checkpoints(digits_args, tmp_path):
    run_dir = tmp_path / "run"
    proc = run(digits_args("schedule.max_lr=1000", "trainer.epochs=3", "trainer.checkpoint_every_steps=1",
                           "trainer.preemption_check_steps=1"), check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "NaN or infinite" in error and "schedule.max_lr" in error
    info = strict_json((run_dir / "summary.json").read_text())
    assert info["diverged"] and not info["completed"] and info["optimizer_steps"] < info["total_optimizer_steps"]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    strict_json((run_dir / "lr_trace.json").read_text())
    for folder in (run_dir / "checkpoints").iterdir():
        if folder.is_dir() and not folder.is_symlink():
            weights = load_file(str(folder / "model.safetensors"))
            assert all(torch.isfinite(t).all() for t in weights.values()), folder


def test_infinite_max_lr_is_a_config_error():
    from superconverge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="schedule.max_lr"):
        load_config(ROOT / "configs" / "digits.yaml", ["schedule.max_lr=inf"])


def test_a_second_run_in_the_same_output_dir_is_refused_until_the_first_dies(digits_args, tmp_path):
    run_dir = tmp_path / "run"
    args = digits_args("schedule.max_lr=0.005", "trainer.epochs=2000")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    first = subprocess.Popen(launch_command(1) + args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
            assert time.monotonic() < deadline and first.poll() is None, "the first run never got going"
            time.sleep(0.1)
        config = (run_dir / "config.yaml").read_text()
        second = run(digits_args("schedule.max_lr=0.005", "trainer.epochs=2000", "seed=7"), check=False, timeout=120)
        assert second.returncode == 2 and str(run_dir) in second.stderr and "in use by another run" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert (run_dir / "config.yaml").read_text() == config  # the refused run touched nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # The kernel dropped the dead run's lock: the next run resumes its checkpoint.
    third = run(digits_args("schedule.max_lr=0.005", "trainer.epochs=2000", "trainer.stop_after_epochs=1"), timeout=120)
    assert third.returncode == 0


def test_a_relative_checkpoint_root_never_reuses_the_folder_a_link_points_to(tmp_path, monkeypatch):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from superconverge.checkpoint import CheckpointStore

    monkeypatch.chdir(tmp_path)
    try:
        accelerator = Accelerator(cpu=True)
        accelerator.prepare(torch.nn.Linear(2, 2))
        store = CheckpointStore(Path("run/checkpoints"))  # relative, like the default output_dir
        state = {"optimizer_steps": 5, "epoch": 1}
        first = store.save(accelerator, state, ["last"])
        second = store.save(accelerator, state, ["last"])  # the same step again (a rerun that stops where it started)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert second.name != first.name  # a fresh folder: the one `last` pointed to was never deleted to make room
    assert store.link("last") == second.resolve() and (second / "model.safetensors").is_file()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_output_dir_that_cannot_be_a_directory_is_one_line_before_any_work(digits_args, tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    target = blocker if where == "file" else blocker / "run"
    proc = run(digits_args("schedule.max_lr=0.01", run_dir=target), check=False, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"superconverge: error: output_dir {target}: {blocker} is a file, not a directory"
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A digits run stopped after its first epoch, copied fresh for each test that damages it."""
    root = tmp_path_factory.mktemp("one_epoch")
    args = ["--config", str(ROOT / "configs" / "digits.yaml"), f"output_dir={root / 'run'}", "trainer.epochs=2",
            "schedule.max_lr=0.01", "trainer.stop_after_epochs=1"]  # fmt: skip
    run(args)
    return root / "run"


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run_dir, target, symlinks=True)
    return target


def test_a_last_link_to_a_deleted_folder_is_refused_not_restarted(one_epoch_run, digits_args, tmp_path):
    import shutil

    run_dir = copy_of(one_epoch_run, tmp_path)
    history = (run_dir / "metrics.jsonl").read_text()
    shutil.rmtree((run_dir / "checkpoints" / "last").resolve())
    proc = run(digits_args("schedule.max_lr=0.01"), check=False, timeout=60)
    assert proc.returncode == 2 and "no longer exists" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    assert (run_dir / "metrics.jsonl").read_text() == history  # nothing overwritten


def test_resuming_with_another_model_is_one_line(one_epoch_run, digits_args, tmp_path):
    copy_of(one_epoch_run, tmp_path)
    proc = run(digits_args("schedule.max_lr=0.01", "model.name=resnet9"), check=False, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "holds another model's weights" in proc.stderr.strip().splitlines()[-1]


def test_resume_refuses_changes_it_cannot_apply_and_touches_nothing(one_epoch_run, digits_args, tmp_path):
    run_dir = copy_of(one_epoch_run, tmp_path)
    before = {name: (run_dir / name).read_text() for name in ("config.yaml", "metrics.jsonl", "summary.json")}
    proc = run(digits_args("schedule.max_lr=0.02", "optimizer.weight_decay=0.1"), check=False, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "optimizer.weight_decay (0.01 -> 0.1)" in error and "schedule.max_lr (0.01 -> 0.02)" in error, error
    assert {name: (run_dir / name).read_text() for name in before} == before


def test_resume_applies_and_records_the_changes_it_can(one_epoch_run, digits_args, tmp_path):
    run_dir = copy_of(one_epoch_run, tmp_path)
    proc = run(digits_args("schedule.max_lr=0.01", "console.mode=plain", "trainer.checkpoint_every_steps=7"), timeout=120)
    applied = next(line for line in proc.stderr.splitlines() if line.startswith("superconverge: resuming with"))
    assert "console.mode ('auto' -> 'plain')" in applied and "trainer.checkpoint_every_steps (None -> 7)" in applied
    assert "trainer.stop_after_epochs (1 -> None)" in applied and "schedule" not in applied
    assert "checkpoint_every_steps: 7" in (run_dir / "config.yaml").read_text()
    saved = json.loads((run_dir / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert saved["config"]["trainer"]["checkpoint_every_steps"] == 7 and saved["resumed"] == 1


def test_an_empty_trainer_state_is_one_line(one_epoch_run, digits_args, tmp_path):
    run_dir = copy_of(one_epoch_run, tmp_path)
    (run_dir / "checkpoints" / "last" / "trainer_state.json").write_text("")
    proc = run(digits_args("schedule.max_lr=0.01"), check=False, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "corrupt or incomplete" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("content", ["{}", "[]", '{"max_lr": 0.01}'])
def test_a_trainer_state_without_its_keys_is_one_line_naming_the_checkpoint(one_epoch_run, digits_args, tmp_path, content):
    run_dir = copy_of(one_epoch_run, tmp_path)
    (run_dir / "checkpoints" / "last" / "trainer_state.json").write_text(content)
    proc = run(digits_args("schedule.max_lr=0.01"), check=False, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "trainer_state.json lacks" in error and "total_steps" in error and str((run_dir / "checkpoints" / "last").resolve()) in error


def mounted_tmpfs(mount: Path, options: str) -> Path:
    """A real small file system, so a full disk is a real ENOSPC (and read-only is EROFS, even for root)."""
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): run as root (as CI does) to test disk faults")
    return mount


@pytest.fixture
def small_disk(tmp_path):
    yield mounted_tmpfs(tmp_path / "disk", "size=24m")
    subprocess.run(["umount", "-l", str(tmp_path / "disk")], check=False)


def test_an_output_dir_on_a_read_only_disk_is_one_line_before_any_work(digits_args, tmp_path):
    disk = mounted_tmpfs(tmp_path / "readonly", "ro,size=1m")
    try:
        proc = run(digits_args("schedule.max_lr=0.01", run_dir=disk / "run"), check=False, timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"superconverge: error: output_dir {disk / 'run'}: {disk} is not writable"


# 0: full to the last block; 190 kB: the weights (117 kB) fit, the optimizer's state (AdamW, ~240 kB)
# runs out of space inside torch.save's zip writer ("unexpected pos").
@pytest.mark.parametrize("free_kb", [0, 190])
def test_a_full_disk_is_one_line_keeps_the_last_checkpoint_and_resumes_once_freed(digits_args, small_disk, free_kb):
    run_dir = small_disk / "run"
    args = digits_args("schedule.max_lr=0.01", "trainer.epochs=3", "trainer.stop_after_epochs=1", run_dir=run_dir)
    run(args)
    last = (run_dir / "checkpoints" / "last").resolve()
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:  # fill the disk to the last block
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - free_kb * 1024))
    proc = run(args, check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "no space left" in proc.stderr.strip().splitlines()[-1]
    assert (run_dir / "checkpoints" / "last").resolve() == last and (last / "model.safetensors").is_file()
    assert not list((run_dir / "checkpoints").glob(".staging-*"))
    filler.unlink()
    run(args[:-1] + ["trainer.stop_after_epochs=5"], timeout=120)  # resumes from `last` and finishes
    info = json.loads((run_dir / "summary.json").read_text())
    assert info["completed"] and info["resumed"] and info["epochs_completed"] == 3


def test_checkpoints_carry_no_step_trace_and_the_trace_survives_a_resume(one_epoch_run, digits_args, tmp_path):
    run_dir = copy_of(one_epoch_run, tmp_path)
    saved = json.loads((run_dir / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert saved["optimizer_steps"] > 0 and "lr_trace" not in saved and "momentum_trace" not in saved  # O(1) in the run's length
    steps = saved["optimizer_steps"]
    with open(run_dir / "lr_trace.tsv", "a") as handle:
        handle.write("0.5\t0.9\n")  # appended for a checkpoint that never landed (a kill between the two)
    run(digits_args("schedule.max_lr=0.01"))
    trace, info = json.loads((run_dir / "lr_trace.json").read_text()), json.loads((run_dir / "summary.json").read_text())
    assert len(trace["lr"]) == len(trace["momentum"]) == info["optimizer_steps"] == trace["total_steps"] == 2 * steps
    assert 0.5 not in trace["lr"] and trace["lr"][-1] == info["final_lr"] and max(trace["lr"]) == pytest.approx(0.01, rel=1e-3)
