"""The project's sbatch script on a real local SLURM cluster: a job completes; a preempted job
checkpoints, requeues itself and resumes the same schedule to the end."""

import json
import os
import subprocess
import time

import pytest
import slurm_cluster
from conftest import DIGITS, ROOT, history, summary

REASON = slurm_cluster.available()
if REASON and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the SLURM tests: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

JOB_ENV = {"NPROC": "2", "VENV": str(ROOT / ".venv"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = time.monotonic()
    cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    print(f"SLURM cluster up in {time.monotonic() - started:.1f}s")
    yield cluster
    cluster.stop()


def submit(cluster, run_dir, *overrides, sbatch: tuple[str, ...] = ()):
    log = run_dir.parent / f"{run_dir.name}.out"
    job_id = cluster.sbatch(f"--chdir={ROOT}", f"--output={log}", "--export=ALL", *sbatch, str(ROOT / "slurm" / "single_node.sbatch"),
                            *DIGITS[1:], *overrides, env={**JOB_ENV, "RUN_DIR": str(run_dir)})  # fmt: skip
    return job_id, log


def assert_annealed_cycle(run_dir, result):
    trace = json.loads((run_dir / "lr_trace.json").read_text())["lr"]
    assert result["stop_reason"] == "completed" and result["optimizer_steps"] == result["total_optimizer_steps"] == len(trace)
    assert trace[-1] == result["final_lr"] == pytest.approx(result["max_lr"] / (25 * 1e4), rel=1e-3)  # digits: default divs


def wait_for_first_epoch(run_dir, log, limit=180):
    deadline = time.monotonic() + limit
    while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().strip()):
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.2)


def preempt_and_finish(cluster, job_id, log) -> str:
    """Send what --signal=B:USR1@... sends before the time limit; the job must requeue once and complete."""
    cluster.scancel("--batch", "--signal=USR1", job_id)
    info = cluster.wait(job_id, ("COMPLETED", "FAILED", "CANCELLED"), timeout=300)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-3000:]
    return text


def test_single_node_job_completes(cluster, tmp_path):
    job_id, log = submit(cluster, tmp_path / "run", "trainer.epochs=2")
    info = cluster.wait(job_id, ("COMPLETED", "FAILED", "CANCELLED"), timeout=240)
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:]
    result = summary(tmp_path / "run")
    assert result["completed"] and result["world_size"] == 2 and not result["resumed"] and result["test_acc"] > 0.5
    assert "restart 0: 2 processes" in log.read_text()


def test_preempted_job_requeues_and_resumes_the_same_schedule(cluster, tmp_path):
    run_dir = tmp_path / "run"
    job_id, log = submit(cluster, run_dir, "trainer.epochs=12", "schedule.max_lr=auto", "trainer.preemption_check_steps=2")
    wait_for_first_epoch(run_dir, log)
    lr_test = (run_dir / "lr_finder.json").read_text()
    text = preempt_and_finish(cluster, job_id, log)
    assert "requeueing job" in text and "restart 1: 2 processes" in text
    result = summary(run_dir)
    assert result["completed"] and result["resumed"] and result["times_resumed"] == 1
    assert result["optimizer_steps"] == result["total_optimizer_steps"]
    assert (run_dir / "lr_finder.json").read_text() == lr_test  # the range test ran once
    assert [r["epoch"] for r in history(run_dir)] == list(range(1, 13))
    trace = json.loads((run_dir / "lr_trace.json").read_text())
    assert len(trace["lr"]) == result["total_optimizer_steps"] and trace["lr"][-1] == result["final_lr"]


def test_a_slurm_budget_ends_annealed_before_the_time_limit_without_a_requeue(cluster, tmp_path):
    """trainer.budget=slurm under `sbatch --time=4`: the job's time left (squeue) less the 3 minutes the preemption
    signal keeps, from the launcher's start; far more epochs than fit, so the budget sizes the cycle."""
    run_dir = tmp_path / "run"
    job_id, log = submit(cluster, run_dir, "trainer.epochs=500", "trainer.budget=slurm", sbatch=("--time=4",))
    info = cluster.wait(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "0" and "requeueing" not in text, text[-3000:]
    result = summary(run_dir)
    plan = result["budget"]
    assert 30 < plan["budget_seconds"] <= 62 and plan["spent_seconds"] < plan["budget_seconds"], plan  # SLURM: whole seconds
    assert result["epochs_completed"] < 500 and not result["resumed"]
    assert_annealed_cycle(run_dir, result)
    hours, minutes, seconds = map(int, info["RunTime"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds < 4 * 60


def test_a_requeued_budgeted_job_resumes_its_plan(cluster, tmp_path):
    """Preempted after its first epoch: the requeued job keeps the first invocation's plan (its re-plans count the run's
    own time, not the queue's) and ends annealed."""
    run_dir = tmp_path / "run"
    job_id, log = submit(cluster, run_dir, "trainer.epochs=500", "trainer.budget=40s", "trainer.preemption_check_steps=2")
    wait_for_first_epoch(run_dir, log)
    text = preempt_and_finish(cluster, job_id, log)
    result = summary(run_dir)
    plan = result["budget"]
    first = [line for line in text.splitlines() if " budget 40.0s: " in line]
    assert len(first) == 1 and first[0].endswith(f"-> {plan['steps']} optimizer steps = {plan['epochs']:.2f} epochs"), first
    assert result["resumed"] and result["times_resumed"] == 1 and result["epochs_completed"] < 500
    assert_annealed_cycle(run_dir, result)


def test_a_race_as_a_slurm_array_trains_each_candidate_in_its_own_task_and_the_last_job_picks(cluster, tmp_path):
    run_dir = tmp_path / "run"
    env = {**cluster.env, **JOB_ENV, "RUN_DIR": str(run_dir), "SBATCH_OPTS": f"--chdir={ROOT} --output={tmp_path}/race-%j.out"}
    out = subprocess.run(["bash", "slurm/race.sh", *DIGITS[1:], "lr_finder.race_factors=[1,3]", "trainer.epochs=2"], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    winner_job = out.split()[-1]
    info = cluster.wait(winner_job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=400)
    logs = {path.name: path.read_text() for path in tmp_path.glob("race-*.out")}
    assert info["JobState"] == "COMPLETED", logs
    race = json.loads((run_dir / "lr_race.json").read_text())
    assert [entry["stop_reason"] for entry in race["entries"]] == ["completed", "completed"] and race["winner"] in (1, 3)
    trained = [name for name, text in logs.items() if "race: candidate" in text]
    assert len(logs) == 4 and len(trained) == 2, logs  # the range test, 2 array tasks (one candidate each), the winner
    assert all(logs[name].count("race: candidate") == 1 for name in trained) and f"race-{winner_job}.out" not in trained
    result = summary(run_dir)
    assert result["lr_race"]["winner"] == race["winner"] and result["world_size"] == 2 and result["stop_reason"] == "completed"


def test_multi_node_launch_forms_one_job_across_two_machines(tmp_path):
    """slurm/launch_node.sh as srun runs it on each node: machine ranks 0 and 1 on loopback."""
    from conftest import free_port

    port, run_dir = str(free_port()), tmp_path / "run"
    env = {**os.environ, **JOB_ENV, "SLURM_NNODES": "2", "HEAD_NODE": "127.0.0.1", "MAIN_PORT": port, "RUN_DIR": str(run_dir),
           "NPROC_PER_NODE": "1", "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}  # fmt: skip
    machines = [
        subprocess.Popen(
            ["bash", "slurm/launch_node.sh", *DIGITS[1:], "trainer.epochs=1"],
            cwd=ROOT,
            env={**env, "SLURM_NODEID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=240)[0] for machine in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    result = summary(run_dir)
    assert result["world_size"] == 2 and result["completed"]


def test_multi_node_script_under_slurm_preempts_and_requeues(cluster, tmp_path):
    """multi_node.sbatch on this one-node cluster: srun, head node from the allocation, signals to the steps."""
    run_dir = tmp_path / "run"
    log = tmp_path / "multi.out"
    job_id = cluster.sbatch(f"--chdir={ROOT}", f"--output={log}", "--export=ALL", "--nodes=1", str(ROOT / "slurm" / "multi_node.sbatch"),
                            *DIGITS[1:], "trainer.epochs=40", "trainer.preemption_check_steps=2",  # the signal hops via slurmctld: seconds
                            env={**JOB_ENV, "NPROC_PER_NODE": "2", "RUN_DIR": str(run_dir)})  # fmt: skip
    wait_for_first_epoch(run_dir, log)
    text = preempt_and_finish(cluster, job_id, log)
    assert "head " in text and "requeueing job" in text
    result = summary(run_dir)
    assert result["completed"] and result["resumed"] and result["world_size"] == 2
    assert [r["epoch"] for r in history(run_dir)] == list(range(1, 41))


STALLING_DATA = """
import os
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset


def build(root, marker):
    if os.environ.get("GROUP_RANK") == "1":  # machine rank 1 stalls in data loading until it is killed
        Path(marker).write_text(str(os.getpid()))
        time.sleep(600)
    inputs = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    return {"train": TensorDataset(inputs, (inputs[:, 0] > 0).long()), "num_classes": 2}


def net(num_classes, in_channels):
    return torch.nn.Linear(in_channels, num_classes)
"""


def test_a_node_that_dies_before_training_stops_the_others_naming_it(tmp_path):
    """Machine rank 1 dies in data loading (both its processes SIGKILLed): rank 0, waiting for it to join the
    process group, would wait trainer.collective_timeout_minutes; the heartbeat stops it naming the node."""
    import psutil
    from conftest import free_port

    (tmp_path / "stalling.py").write_text(STALLING_DATA)
    marker = tmp_path / "rank1_loading"
    env = {**os.environ, **JOB_ENV, "SLURM_NNODES": "2", "HEAD_NODE": "127.0.0.1", "MAIN_PORT": str(free_port()),
           "RUN_DIR": str(tmp_path / "run"), "NPROC_PER_NODE": "1", "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    args = ["bash", "slurm/launch_node.sh", *DIGITS[1:], "data.name=stalling:build", f"data.kwargs.marker={marker}",
            "model.name=stalling:net", "schedule.max_lr=0.01", "trainer.heartbeat_timeout_seconds=10"]  # fmt: skip
    machines = [subprocess.Popen(args, cwd=ROOT, env={**env, "SLURM_NODEID": str(rank)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "machine rank 1 never reached its data loading"
        for process in psutil.Process(machines[1].pid).children(recursive=True):  # the node dies: launcher and rank
            process.kill()
        killed = time.monotonic()
        output = machines[0].communicate(timeout=90)[0]
        assert time.monotonic() - killed < 60, "machine rank 0 must not wait collective_timeout_minutes for a dead node"
        assert machines[0].returncode != 0
        assert "superconverge: error: machine rank 1 (host" in output and "has not answered for 10 s" in output, output[-3000:]
    finally:
        for machine in machines:  # the whole tree: a rank left alive would hold the pipe open
            for process in psutil.Process(machine.pid).children(recursive=True) if machine.poll() is None else []:
                process.kill()
            machine.kill()
            machine.communicate(timeout=30)
