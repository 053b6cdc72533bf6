"""A signal checkpoints and stops every rank at a step boundary; the rerun ends like an uninterrupted run."""

import signal
import subprocess

from conftest import ROOT, assert_same_run, history, launch_command, run, summary, wait_for_epochs, workers

from superconverge.errors import ExitCode


def test_signal_on_one_rank_stops_all_ranks_and_resume_matches(digits_args, tmp_path):
    plain, preempted = tmp_path / "plain", tmp_path / "preempted"
    common = ("schedule.max_lr=0.005", "trainer.epochs=12", "trainer.preemption_check_steps=2")
    run(digits_args(*common, run_dir=plain), nproc=2)
    launcher = subprocess.Popen(launch_command(2) + digits_args(*common, run_dir=preempted), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_epochs(preempted, 1, launcher)
    ranks = workers(launcher)
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGUSR1)  # one rank only: the other must learn it through the collective
    launcher.wait(timeout=60)
    first = summary(preempted)
    assert first["preempted"] and not first["completed"] and first["optimizer_steps"] % 2 == 0
    assert 0 < first["optimizer_steps"] < first["total_optimizer_steps"]
    run(digits_args(*common, run_dir=preempted), nproc=2)
    final = summary(preempted)
    assert final["completed"] and final["resumed"] and not final["preempted"]
    assert [r["epoch"] for r in history(preempted)] == list(range(1, 13))
    assert_same_run(plain, preempted)


def test_single_process_sigterm_exits_with_the_requeue_code(digits_args, tmp_path):
    proc = subprocess.Popen(launch_command(1) + digits_args("schedule.max_lr=0.005", "trainer.epochs=12"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_epochs(tmp_path / "run", 1, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == ExitCode.REQUEUE
    info = summary(tmp_path / "run")
    assert info["preempted"] and (tmp_path / "run" / "checkpoints" / "last").is_symlink()
