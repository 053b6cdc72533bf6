"""Stop requests: scoped handlers, signals before the training loop, and ranks whose launcher died."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT, history, launch_command, run, summary, wait_for_epochs, workers

from superconverge.errors import ExitCode
from superconverge.signals import StopSignals

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def test_handlers_are_installed_for_the_scope_only():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGUSR1, signal.SIGTERM)}
    with StopSignals(watch_parent=False) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.requested and stop.reason == "SIGUSR1"
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_run_made_off_the_main_thread_leaves_signals_alone():
    import threading

    before = signal.getsignal(signal.SIGTERM)
    failures = []

    def enter() -> None:
        try:
            with StopSignals(watch_parent=False) as stop:
                assert not stop.requested
        except Exception as exc:  # noqa: BLE001 - reported to the main thread
            failures.append(exc)

    worker = threading.Thread(target=enter)
    worker.start()
    worker.join()
    assert not failures and signal.getsignal(signal.SIGTERM) == before


TWICE = """
import os, signal, sys, time
from superconverge.signals import StopSignals
with StopSignals(watch_parent=False) as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # the same request delivered twice: one request
    time.sleep(0.2)
    print("requests", stop.signals_seen, stop.reason, flush=True)
    time.sleep(float(sys.argv[1]))
    os.kill(os.getpid(), signal.SIGTERM)  # a second request: stop at once
    time.sleep(0.5)
    print("still running", flush=True)
"""


@pytest.mark.parametrize(("gap", "code"), [(1.5, 128 + signal.SIGTERM), (0.0, 0)])
def test_a_signal_delivered_twice_at_once_is_one_request_and_a_later_one_stops_at_once(gap, code):
    proc = subprocess.run([sys.executable, "-c", TWICE, str(gap)], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("requests 1 SIGTERM\n") and proc.returncode == code, (proc.stdout, proc.stderr)
    assert ("still running" in proc.stdout) == (code == 0)


ORPHAN = """
import sys, time
from superconverge.signals import StopSignals
with StopSignals(orphan_grace_seconds=1.0, poll_seconds=0.05, watch_parent=True) as stop:
    stop.training = True  # as the trainer's loop sets it
    print("watching", flush=True)
    while not stop.requested:
        time.sleep(0.01)
    print("stop requested:", stop.reason, flush=True)
    time.sleep(60)  # cannot stop cleanly (as if stuck in a collective): the watch must exit within the grace
"""


def test_an_orphan_that_cannot_stop_cleanly_exits_after_the_grace(tmp_path):
    out = tmp_path / "orphan.txt"
    # The shell starts the orphan-to-be and exits once it watches: the child is re-parented.
    script = f'"{sys.executable}" -c "$0" > "{out}" 2>&1 & until grep -q watching "{out}"; do sleep 0.05; done; echo $!'
    shell = subprocess.Popen(["bash", "-c", script, ORPHAN], env=ENV, stdout=subprocess.PIPE, text=True)
    pid = int(shell.communicate(timeout=30)[0])
    child = psutil.Process(pid)
    began = time.monotonic()
    deadline = began + 60
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        text = out.read_text()
        assert "stop requested: launcher gone" in text and "exiting" in text, text
        assert time.monotonic() - began < 30
    finally:
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()  # a failed watch must not leave the orphan behind


def test_a_signal_during_the_range_test_stops_before_training_for_a_requeue(digits_args, tmp_path):
    run_dir = tmp_path / "run"
    args = digits_args("lr_finder.num_iter=400", "console.mode=plain")
    proc = subprocess.Popen(launch_command(1) + args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if " start world_size=" in line:  # the banner: data loaded, W&B started, the range test begins
            break
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.REQUEUE, stderr[-3000:]
    info = summary(run_dir)
    assert info["preempted"] and not info["completed"] and info["stopped_during"] == "the LR range test"
    assert not (run_dir / "metrics.jsonl").exists()
    rerun = run(digits_args("trainer.epochs=1"))  # the lock is free and nothing half-made is in the way
    assert rerun.returncode == 0 and summary(run_dir)["completed"]


def test_ranks_whose_launcher_is_killed_checkpoint_and_stop(digits_args, tmp_path):
    run_dir = tmp_path / "run"
    args = digits_args("schedule.max_lr=0.005", "trainer.epochs=12", "trainer.preemption_check_steps=2")
    launcher = subprocess.Popen(launch_command(2) + args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_epochs(run_dir, 1, launcher)
    ranks = workers(launcher)
    assert len(ranks) == 2
    launcher.kill()  # SIGKILL: nothing forwards anything to the ranks
    launcher.wait()
    began = time.monotonic()
    gone, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive, "ranks kept training without their launcher"
    assert time.monotonic() - began < 30
    info = summary(run_dir)
    assert info["preempted"] and not info["completed"] and info["world_size"] == 2
    assert info["optimizer_steps"] % 2 == 0 and info["optimizer_steps"] > history(run_dir)[0]["optimizer_steps"]
    run(args, nproc=2)  # resumes the same schedule from the checkpoint the ranks saved on their way out
    final = summary(run_dir)
    assert final["completed"] and final["resumed"] and [r["epoch"] for r in history(run_dir)] == list(range(1, 13))


def test_ranks_whose_launcher_dies_before_training_exit_at_once(digits_args, tmp_path):
    args = digits_args("lr_finder.num_iter=2000", "console.mode=plain")
    launcher = subprocess.Popen(launch_command(2) + args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in launcher.stdout:
        if " start world_size=2" in line:  # rank 0's banner: the long range test begins
            break
    ranks = workers(launcher)
    assert len(ranks) == 2
    launcher.kill()
    launcher.wait()
    _, alive = psutil.wait_procs(ranks, timeout=15)
    assert not alive, "ranks went on with the range test without their launcher"


def test_ctrl_c_checkpoints_stops_in_one_line_and_the_same_command_continues(digits_args, tmp_path):
    args = digits_args("schedule.max_lr=0.005", "trainer.epochs=40", "console.mode=quiet")
    proc = subprocess.Popen(launch_command(1) + args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_epochs(tmp_path / "run", 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("superconverge: stopped on SIGINT at optimizer step ") and "the same command continues" in line
    info = summary(tmp_path / "run")
    assert info["preempted"] and not info["completed"] and (tmp_path / "run" / "checkpoints" / "last").is_symlink()
    run(args)
    assert summary(tmp_path / "run")["completed"] and summary(tmp_path / "run")["resumed"]


def test_ctrl_c_at_the_launcher_checkpoints_every_rank(digits_args, tmp_path):
    args = digits_args("schedule.max_lr=0.005", "trainer.epochs=300", "console.mode=quiet", "trainer.preemption_check_steps=2")
    launcher = subprocess.Popen(launch_command(2) + args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_epochs(tmp_path / "run", 2, launcher)
    launcher.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the launcher; torchelastic passes SIGINT to each rank
    _, stderr = launcher.communicate(timeout=90)
    assert stderr.count("superconverge: stopped on SIGINT at optimizer step ") == 1, stderr[-3000:]  # the main process says it
    info = summary(tmp_path / "run")
    assert info["preempted"] and info["world_size"] == 2 and info["optimizer_steps"] % 2 == 0
    assert (tmp_path / "run" / "checkpoints" / "last").resolve().name.startswith(f"step-{info['optimizer_steps']:08d}")


def starting_ranks(launcher: subprocess.Popen, count: int, limit: float = 120) -> list[psutil.Process]:
    """The launcher's ranks as soon as they exist (polled every 10 ms), before they have imported anything."""
    deadline = time.monotonic() + limit
    while launcher.poll() is None and time.monotonic() < deadline:
        try:
            ranks = workers(launcher)
        except psutil.Error:  # a child that came and went while being listed
            ranks = []
        if len(ranks) == count:
            return ranks
        time.sleep(0.01)
    raise AssertionError("the launcher never started its ranks")


def test_ranks_whose_launcher_dies_while_they_import_exit_at_once(digits_args, tmp_path):
    log = tmp_path / "ranks.log"
    with log.open("w") as stderr:
        launcher = subprocess.Popen(launch_command(2) + digits_args(), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    ranks = starting_ranks(launcher, 2)
    time.sleep(0.3)  # the ranks are importing torch (seconds): they have printed nothing, StopSignals' watch has not started
    launcher.kill()
    launcher.wait()
    try:
        _, alive = psutil.wait_procs(ranks, timeout=30)
        text = log.read_text()
        assert not alive, f"ranks went on without their launcher:\n{text[-3000:]}"
        assert text.count("is gone and this rank has nothing to checkpoint") == 2 and "start world_size" not in text, text[-3000:]
    finally:
        for rank in ranks:
            if rank.is_running():
                rank.kill()  # a failed watch must not leave the orphans behind


EARLY_ORPHAN = """
import os, sys, time
time.sleep(1)  # the shell that started this process (as a launcher would) exits meanwhile
print(os.getppid(), flush=True)
import superconverge
print("carried on", flush=True)
"""


def test_a_rank_orphaned_before_its_first_import_exits_there(tmp_path):
    out = tmp_path / "out.txt"
    script = f'"{sys.executable}" -c "$0" > "{out}" 2>&1 & echo $!'  # the shell exits at once: the child is re-parented
    env = {key: value for key, value in ENV.items() if key != "SUPERCONVERGE_RANK_PID"} | {"TORCHELASTIC_RUN_ID": "test"}
    rank = psutil.Process(int(subprocess.run(["bash", "-c", script, EARLY_ORPHAN], env=env, capture_output=True, text=True).stdout))
    _, alive = psutil.wait_procs([rank], timeout=30)
    if alive:
        rank.kill()
    text = out.read_text()
    if text.split("\n")[0] != "1":
        pytest.skip(f"re-parented to a subreaper (pid {text.split()[0]}), not to init")
    assert not alive and "is gone and this rank has nothing to checkpoint" in text and "carried on" not in text, text


def test_a_rank_records_its_launcher_and_a_process_it_starts_does_not():
    code = "from superconverge.orphan import launcher_pid; print(launcher_pid())"
    rank_env = {key: value for key, value in ENV.items() if key != "SUPERCONVERGE_RANK_PID"} | {"TORCHELASTIC_RUN_ID": "test"}
    rank = subprocess.run([sys.executable, "-c", code], env=rank_env, capture_output=True, text=True, check=True)
    assert rank.stdout.strip() == str(os.getpid())  # this test stands for the launcher
    child = subprocess.run([sys.executable, "-c", code], env=rank_env | {"SUPERCONVERGE_RANK_PID": str(os.getpid())},
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert child.stdout.strip() == "None"  # a loader worker the rank spawned: the rank's own watch is not its business
