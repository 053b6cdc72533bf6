"""``superconverge launch``: bad config refused before any worker starts, the ranks' own line and exit code, no torchelastic
summary or traceback, Ctrl-C and SIGTERM passed to the ranks (which checkpoint) and their code returned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import DIGITS, ROOT, free_port, history, summary, wait_for_epochs

from superconverge.errors import ExitCode
from superconverge.launcher import ranks_exit_code, split_argv

LAUNCH = [sys.executable, "-m", "superconverge", "launch"]
ONE = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
# What torchelastic and Accelerate print on a failed or interrupted launch; none of it may reach the user.
NOISE = ("Traceback", "ChildFailedError", "Root Cause", "SignalException", "torch/distributed/elastic", "FAILED")
TRAINING = ("schedule.max_lr=0.005", "trainer.epochs=8", "trainer.preemption_check_steps=2")


def two_processes() -> list[str]:
    return ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port())]  # fmt: skip


def launch(options: list[str], args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *options, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)


def assert_quiet(stderr: str) -> None:
    for needle in NOISE:
        assert needle not in stderr, stderr[-4000:]


def test_bad_key_is_refused_before_any_worker_starts(tmp_path):
    started = time.monotonic()
    proc = launch(two_processes(), [*DIGITS, f"output_dir={tmp_path / 'run'}", "trainer.epohcs=1"])
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr[-4000:]
    assert proc.stderr.startswith("superconverge: error:") and "trainer.epohcs: unknown key" in proc.stderr, proc.stderr
    assert proc.stderr.count("superconverge: error:") == 1 and "[rank 1]" not in proc.stderr, "said by the launcher only"
    assert_quiet(proc.stderr)
    assert not (tmp_path / "run").exists()
    assert time.monotonic() - started < 60


def test_a_bad_accelerate_option_is_one_line(tmp_path):
    proc = launch(["--multi_gpu", "--num_processes", "1"], [*DIGITS, f"output_dir={tmp_path / 'run'}"])
    assert proc.returncode == ExitCode.BAD_INPUT and proc.stderr.startswith("superconverge launch: error:"), proc.stderr[-4000:]
    assert "at least 2 processes" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-4000:]


def test_an_error_only_the_ranks_find_is_their_line_and_code(tmp_path):
    proc = launch(two_processes(), [*DIGITS, f"output_dir={tmp_path / 'run'}", "data.name=nosuchmodule:build"])
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr[-4000:]
    assert "superconverge: error: data.name: no module named 'nosuchmodule'" in proc.stderr, proc.stderr[-4000:]
    assert "[rank 1] superconverge: error: data.name" in proc.stderr, proc.stderr[-4000:]
    assert proc.stderr.count("superconverge: error:") == 2, "each rank's line once, nothing added by the launcher"
    assert_quiet(proc.stderr)


def stop_after_an_epoch(options: list[str], run_dir: Path, stderr: Path, stop: signal.Signals) -> int:
    """Start (or continue) the run, send ``stop`` once it has trained one more epoch, and return the launcher's code.

    SIGINT goes to the launcher's whole process group, as a terminal's Ctrl-C does; SIGTERM to the launcher only,
    as a scheduler stopping a job does.
    """
    epochs = len(history(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0
    with stderr.open("w") as err:
        launcher = subprocess.Popen([*LAUNCH, *options, *DIGITS, f"output_dir={run_dir}", *TRAINING], cwd=ROOT, env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)  # fmt: skip
        try:
            wait_for_epochs(run_dir, epochs + 1, launcher, limit=180)
            if stop == signal.SIGINT:
                os.killpg(launcher.pid, stop)
            else:
                launcher.send_signal(stop)
            return launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)


def test_sigterm_then_ctrl_c_then_done_each_with_the_ranks_code(tmp_path):
    """One run: preempted on 1 process (75), interrupted on 2 (130), each with a checkpoint, then finished on 2 (0)."""
    run_dir, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    assert stop_after_an_epoch(ONE, run_dir, stderr, signal.SIGTERM) == ExitCode.REQUEUE, stderr.read_text()[-4000:]
    assert summary(run_dir)["preempted"] and (run_dir / "checkpoints" / "last").is_symlink()
    assert_quiet(stderr.read_text())
    steps = summary(run_dir)["optimizer_steps"]

    assert stop_after_an_epoch(two_processes(), run_dir, stderr, signal.SIGINT) == ExitCode.INTERRUPTED, stderr.read_text()[-4000:]
    said = stderr.read_text()
    assert "stopped on SIGINT" in said and "the same command continues the run" in said, said[-4000:]
    assert_quiet(said)
    assert summary(run_dir)["optimizer_steps"] > steps and (run_dir / "checkpoints" / "last").is_symlink()

    proc = launch(two_processes(), [*DIGITS, f"output_dir={run_dir}", *TRAINING])
    assert proc.returncode == ExitCode.DONE, proc.stderr[-4000:]
    assert_quiet(proc.stderr)
    final = summary(run_dir)
    assert final["completed"] and final["resumed"]
    assert [row["epoch"] for row in history(run_dir)] == list(range(1, 9))


def test_the_code_is_the_lowest_rank_that_exited_on_its_own(capsys):
    assert ranks_exit_code({1: ExitCode.BAD_INPUT, 0: -signal.SIGTERM}) == ExitCode.BAD_INPUT
    assert ranks_exit_code({0: ExitCode.INTERRUPTED, 1: 143}) == ExitCode.INTERRUPTED
    assert capsys.readouterr().err == "", "a rank that exits with an ExitCode has said why itself"
    assert ranks_exit_code({1: 1}) == 1 and "rank 1 failed with exit code 1" in capsys.readouterr().err
    assert ranks_exit_code({0: -signal.SIGKILL}) == 137 and "rank 0 was killed by SIGKILL" in capsys.readouterr().err


def test_accelerate_options_end_where_the_run_arguments_begin():
    assert split_argv(["--num_processes", "2", "--config", "x.yaml", "a=1"]) == (["--num_processes", "2"], ["--config", "x.yaml", "a=1"])
    assert split_argv(["--config_file", "c.yaml", "lr-find", "--config=x"]) == (["--config_file", "c.yaml"], ["lr-find", "--config=x"])
    assert split_argv(["--quiet", "--", "--quiet", "--config", "x"]) == (["--quiet"], ["--quiet", "--config", "x"])
