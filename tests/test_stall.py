"""A rank that stops progressing without dying is named, and every rank stops (exit 69) instead of waiting in a collective."""

import os
import re
import subprocess
import sys
import time

import psutil
from conftest import DIGITS, FAST, ROOT, free_port, launch_command, run, summary

from superconverge.checkpoint import CheckpointStore, validate_checkpoint
from superconverge.errors import ExitCode
from superconverge.signals import Progress, ProgressRecord, find_stalled, stall_timeout

WORKERS = ROOT / "tests" / "workers"
VERDICT = re.compile(r"^(\[rank \d\] )?superconverge: error: rank 1 \(host \S+\) has made no progress for \d+ s in (.+) at ", re.M)


def test_the_auto_timeout_follows_the_step_time():
    assert stall_timeout(None, 60.0) == 600.0  # a slow step that progresses is not stalled at 120 s
    assert stall_timeout(None, 0.1) == 120.0  # a fast one is, after the minimum
    assert stall_timeout(None, None) == 1800.0  # a phase never started before (workers starting, compilation)
    assert stall_timeout(10.0, 60.0) == 10.0  # a number of seconds overrides auto


def steps(progress: Progress, clock: list[float], seconds: float, count: int) -> None:
    for step in range(count):
        clock[0] += seconds
        progress.bump(step + 1)


def test_a_rank_behind_and_silent_past_its_timeout_is_named():
    clocks = {rank: [0.0] for rank in range(3)}
    ranks = {rank: Progress(clock=lambda rank=rank: clocks[rank][0]) for rank in range(3)}
    for rank, progress in ranks.items():
        progress.enter("train", "optimizer step")
        steps(progress, clocks[rank], 0.1 if rank < 2 else 60.0, 5)
    assert ranks[0].record.timeout == 120.0 and ranks[2].record.timeout == 600.0
    ranks[0].bump(6)  # rank 0 has its next batch; ranks 1 and 2 do not
    seen = {}
    records = {rank: progress.record for rank, progress in ranks.items()}
    assert find_stalled(records, seen, now=0.0) is None
    assert find_stalled(records, seen, now=119.0) is None
    assert find_stalled(records, seen, now=121.0) == 1  # rank 2's 60 s steps give it until 600 s
    del records[1]
    assert find_stalled(records, seen, now=599.0) is None and find_stalled(records, seen, now=601.0) == 2
    with ranks[2].paused():  # a checkpoint save is not judged
        assert find_stalled({0: ranks[0].record, 2: ranks[2].record}, seen, now=10_000.0) is None
    level = {0: ProgressRecord(1, 5, "train", "optimizer step", 5, 120.0), 1: ProgressRecord(1, 5, "train", "optimizer step", 5, 120.0)}
    assert find_stalled(level, {}, now=0.0) is None and find_stalled(level, {r: (level[r], 0.0) for r in level}, now=1e6) is None


def stalled_run(run_dir, reads: int, *overrides: str, launcher: list[str] | None = None,
                ) -> tuple[subprocess.CompletedProcess, set[psutil.Process], float]:  # fmt: skip
    """2 processes whose rank 1 stops reading after ``reads`` training samples; the launcher's result, every process it
    started, and its seconds. ``launcher``: the command before the run's arguments (`accelerate launch -m superconverge`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "STALL_AFTER_READS": str(reads)}
    command = (launcher or launch_command(2, module="superconverge")) + stall_args(run_dir, *overrides)
    started = time.monotonic()
    launcher = subprocess.Popen(command, cwd=WORKERS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[psutil.Process] = set()
    while launcher.poll() is None and time.monotonic() - started < 180:
        try:
            seen.update(psutil.Process(launcher.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    stdout, stderr = launcher.communicate(timeout=60)
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr), seen, time.monotonic() - started


def stall_args(run_dir, *overrides: str) -> list[str]:
    return [*DIGITS, f"output_dir={run_dir}", "data.name=stalling_task:digits", "model.name=stalling_task:mlp", "data.num_workers=0",
            "trainer.epochs=2", "trainer.stall_timeout=10", *overrides]  # fmt: skip


def assert_stopped_naming_rank_1(proc: subprocess.CompletedProcess, processes: set[psutil.Process], phase: str) -> None:
    assert proc.returncode == 1, proc.stderr[-4000:]  # accelerate launch's own code for failed ranks
    assert [match[1] for match in VERDICT.findall(proc.stderr)] == [phase], proc.stderr[-4000:]  # one line
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", proc.stderr)
    assert codes and set(codes) == {"69"}, proc.stderr[-4000:]  # each rank the launcher saw end, none killed by a signal
    assert not re.search(r"^\[rank\d\]: ", proc.stderr, re.M), proc.stderr[-4000:]  # no rank's traceback (a broken collective)
    assert len(processes) >= 2 and not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_rank_stalled_in_training_is_named_and_the_rerun_resumes(tmp_path):
    run_dir = tmp_path / "run"
    # About 629 training samples a rank an epoch of 10 optimizer steps: rank 1 stops reading in the second epoch.
    proc, processes, seconds = stalled_run(run_dir, 929, "schedule.max_lr=0.02")
    assert_stopped_naming_rank_1(proc, processes, "train")
    assert 10 < int(re.search(r"at optimizer step (\d+) ", proc.stderr)[1]) < 20 and seconds < 120
    last = CheckpointStore(run_dir / "checkpoints").link("last")
    assert last.name.endswith("epoch-0001") and validate_checkpoint(last)  # the epoch-1 checkpoint, whole
    run(stall_args(run_dir, "schedule.max_lr=0.02"), nproc=2, module="superconverge", cwd=WORKERS)
    info = summary(run_dir)
    assert info["completed"] and info["times_resumed"] == 1 and info["optimizer_steps"] == 20


def test_a_rank_stalled_in_the_range_test_is_named_and_superconverge_launch_exits_69(tmp_path):
    launch = [sys.executable, "-m", "superconverge", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port",
              str(free_port())]  # fmt: skip
    proc, processes, _ = stalled_run(tmp_path / "run", 300, *FAST, launcher=launch)
    assert proc.returncode == ExitCode.PEER_LOST, proc.stderr[-4000:]
    assert [match[1] for match in VERDICT.findall(proc.stderr)] == ["the LR range test"], proc.stderr[-4000:]
    for noise in ("Traceback", "ChildFailedError", "torch/distributed/elastic"):  # no summary, no broken collective's traceback
        assert noise not in proc.stderr, proc.stderr[-4000:]
    assert len(processes) >= 2 and not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()
