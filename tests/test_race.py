"""lr_finder.race: every candidate trains the whole cycle, the best on validation is the run; a kill resumes the
candidate it hit, a diverging candidate loses."""

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from conftest import DIGITS, ROOT, assert_same_run, launch_command, lr_trace, run, summary
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from superconverge.config import ConfigError, load_config
from superconverge.errors import ExitCode
from superconverge.run_dir import RunLock

# Small batches: a candidate lasts long enough (about 2 s) for a kill to land inside it.
RACE = [
    "lr_finder.race=true",
    "lr_finder.race_factors=[1,3]",
    "trainer.epochs=4",
    "data.batch_size=16",
    "tracking.wandb.mode=disabled",
    "tracking.tensorboard=true",
]


def race_args(run_dir, *overrides: str) -> list[str]:
    return DIGITS + [f"output_dir={run_dir}", *RACE, *overrides]


def race_record(run_dir) -> dict:
    return json.loads((run_dir / "lr_race.json").read_text())


def wait_for_second_candidate(run_dir, launcher) -> None:
    """Until the race's second candidate (x3) has logged an epoch: a stop then lands inside it."""
    second = run_dir / "candidates" / "x3" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (second.is_file() and second.read_text().strip()):
        assert launcher.poll() is None and time.monotonic() < deadline, "the race never reached its second candidate's epoch"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("race") / "run"
    run(race_args(run_dir), nproc=2)
    return run_dir


def test_the_best_candidate_on_validation_is_the_run(uninterrupted):
    race = race_record(uninterrupted)
    scores = {entry["factor"]: entry["score"] for entry in race["entries"]}
    assert [entry["stop_reason"] for entry in race["entries"]] == ["completed", "completed"]
    assert race["winner"] == max(scores, key=scores.get)
    assert [entry["max_lr"] for entry in race["entries"]] == pytest.approx([race["pick"], 3 * race["pick"]])
    winner = uninterrupted / race["entries"][[e["factor"] for e in race["entries"]].index(race["winner"])]["folder"]
    result, own = summary(uninterrupted), summary(winner)
    assert result["world_size"] == own["world_size"] == 2 and result["stop_reason"] == "completed"
    assert {k: v for k, v in result.items() if k not in ("run_dir", "lr_race")} == {k: v for k, v in own.items() if k != "run_dir"}
    assert result["lr_race"]["winner"] == race["winner"] and result["max_lr"] == pytest.approx(race["pick"] * race["winner"])
    assert (uninterrupted / "checkpoints").resolve() == (winner / "checkpoints").resolve()
    for name in ("metrics.jsonl", "lr_trace.json"):
        assert (uninterrupted / name).read_text() == (winner / name).read_text()
    assert (uninterrupted / "lr_race.png").stat().st_size > 0 and (uninterrupted / "lr_finder.json").is_file()
    # TensorBoard: the winner's epochs at its optimizer steps, and every candidate's score.
    events = EventAccumulator(str(uninterrupted / "tensorboard"))
    events.Reload()
    history = [json.loads(line) for line in (winner / "metrics.jsonl").read_text().splitlines()]
    val_acc = [(e.step, e.value) for e in events.Scalars("epoch/val_acc")]
    assert val_acc == [(r["optimizer_steps"], pytest.approx(r["val_acc"])) for r in history]
    assert [e.value for e in events.Scalars("summary/lr_race/x3")] == [pytest.approx(scores[3])]
    assert [e.value for e in events.Scalars("summary/lr_race/winner")] == [race["winner"]]
    for entry in race["entries"]:  # each candidate trained the whole cycle, from the start
        own = summary(uninterrupted / entry["folder"])
        assert own["optimizer_steps"] == own["total_optimizer_steps"] and not own["resumed"]


def test_a_race_killed_in_its_second_candidate_resumes_it_to_the_same_winner(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    launcher = subprocess.Popen(launch_command(2) + race_args(run_dir), cwd=ROOT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_second_candidate(run_dir, launcher)
    for process in [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)  # every process at once (torchelastic's ranks have process groups of their own)
    launcher.wait()
    first = (run_dir / "candidates" / "x1" / "summary.json").read_text()
    run(race_args(run_dir), nproc=2)
    assert (run_dir / "candidates" / "x1" / "summary.json").read_text() == first  # finished: not run again
    assert summary(run_dir / "candidates" / "x3")["times_resumed"] == 1
    ours, theirs = race_record(run_dir), race_record(uninterrupted)
    assert ours["winner"] == theirs["winner"] and ours["pick"] == theirs["pick"]
    assert [(e["score"], e["test_acc"]) for e in ours["entries"]] == [(e["score"], e["test_acc"]) for e in theirs["entries"]]
    assert_same_run(uninterrupted, run_dir)


def test_a_race_stopped_by_ctrl_c_continues_on_another_process_count(uninterrupted, tmp_path):
    """Ctrl-C in the second candidate (2 processes) stops it with a checkpoint and exit 130; the same command on 1 process
    continues the candidate to the same LR trace and decides the race."""
    run_dir = tmp_path / "run"
    with (tmp_path / "stderr.txt").open("w") as err:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        launcher = subprocess.Popen(launch_command(2) + race_args(run_dir), cwd=ROOT, start_new_session=True, env=env,
                                    stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            wait_for_second_candidate(run_dir, launcher)
            os.killpg(launcher.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the launcher's whole process group
            code = launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
    said = (tmp_path / "stderr.txt").read_text()
    assert code == ExitCode.INTERRUPTED and "stopped on SIGINT" in said, said[-4000:]
    assert summary(run_dir / "candidates" / "x3")["stop_reason"] == "preempted" and not (run_dir / "summary.json").exists()
    run(race_args(run_dir), nproc=1)
    resumed, whole = summary(run_dir / "candidates" / "x3"), summary(uninterrupted / "candidates" / "x3")
    assert resumed["times_resumed"] == 1 and resumed["world_size"] == 1 and resumed["stop_reason"] == "completed"
    assert lr_trace(run_dir / "candidates" / "x3") == lr_trace(uninterrupted / "candidates" / "x3")
    assert resumed["optimizer_steps"] == whole["optimizer_steps"] and resumed["final_lr"] == whole["final_lr"]
    race = race_record(run_dir)
    assert race["pick"] == race_record(uninterrupted)["pick"] and [e["stop_reason"] for e in race["entries"]] == ["completed"] * 2
    assert summary(run_dir)["lr_race"]["winner"] == race["winner"]


def test_a_race_in_a_directory_another_run_holds_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = RunLock(run_dir)  # as a running race (or run) holds it
    try:
        proc = run(race_args(run_dir), check=False)
    finally:
        lock.release()
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr[-3000:]
    assert f"output_dir {run_dir} is in use by another run (pid {os.getpid()})" in proc.stderr and not (run_dir / "lr_race.json").exists()


def test_a_diverging_candidate_loses_and_the_race_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    proc = run(race_args(run_dir, "lr_finder.race_factors=[1,1000000]", "trainer.epochs=2"))
    race = race_record(run_dir)
    assert [entry["stop_reason"] for entry in race["entries"]] == ["completed", "diverged"] and race["winner"] == 1
    assert "race: x1e+06 lost: the training loss became NaN or infinite" in proc.stdout + proc.stderr
    assert summary(run_dir)["stop_reason"] == "completed"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["lr_finder.race=true", "trainer.budget=60s"], "lr_finder.race with trainer.budget"),
     (["lr_finder.race_factors=[1,2,1]"], "names a factor twice"),
     (["lr_finder.race_run=2", "lr_finder.race_factors=[1,3]"], r"race_run=2: the race has 2 candidates \(0 to 1\)")],
)  # fmt: skip
def test_a_race_config_that_cannot_run_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "digits.yaml", overrides)


def test_a_race_without_a_validation_split_is_refused(tmp_path):
    proc = run(race_args(tmp_path / "run", "data.val_fraction=0"), check=False)
    assert proc.returncode == 2 and "lr_finder.race judges the candidates on a validation split" in proc.stderr


def test_a_race_in_another_runs_directory_or_without_its_range_test_is_refused(tmp_path):
    (tmp_path / "used" / "checkpoints" / "step-00000010-epoch-0001").mkdir(parents=True)
    proc = run(race_args(tmp_path / "used"), check=False)
    assert proc.returncode == 2 and "holds another run's checkpoints" in proc.stderr
    proc = run(race_args(tmp_path / "new", "lr_finder.race_run=1"), check=False)
    assert proc.returncode == 2 and "lr_race.json does not exist yet; run the race's range test first" in proc.stderr
