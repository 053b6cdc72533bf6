"""Helpers to run the real entry point as 1- or 2-process jobs (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from superconverge.checkpoint import CheckpointStore

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--config", str(ROOT / "configs" / "digits.yaml")]
# A short range test on digits: enough points for every rule, a fraction of the default's cost.
FAST = ["schedule.max_lr=auto", "lr_finder.num_iter=40", "lr_finder.sweep_iter=40", "lr_finder.skip_start=4", "lr_finder.skip_end=2",
        "lr_finder.start_lr=1e-5", "lr_finder.end_lr=1"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(nproc: int, script: str | Path = "train.py", module: str | None = None) -> list[str]:
    """``script`` from the repository, or ``module`` as ``python -m`` runs it (``accelerate launch -m``)."""
    target = ["-m", module] if module else [str(ROOT / script)]
    if nproc == 1:
        return [sys.executable, *target]
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
        *target,
    ]  # fmt: skip


def run(
    args: list[str], nproc: int = 1, script: str | Path = "train.py", timeout: float = 240, env: dict | None = None, check: bool = True,
    module: str | None = None, cwd: Path = ROOT,
) -> subprocess.CompletedProcess:  # fmt: skip
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}  # None removes a variable
    command = launch_command(nproc, script, module) + args
    proc = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def lr_trace(run_dir: Path) -> dict:
    return json.loads((run_dir / "lr_trace.json").read_text())


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def digits_args(tmp_path):
    def make(*overrides: str, run_dir: Path | None = None) -> list[str]:
        return DIGITS + [f"output_dir={run_dir or tmp_path / 'run'}", "trainer.epochs=2", *overrides]

    return make


def final_weights(run_dir):
    return load_file(str(CheckpointStore(run_dir / "checkpoints").link("last") / "model.safetensors"))


def assert_same_run(a, b):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] == wb[key]).all(), key
    assert lr_trace(a) == lr_trace(b)
    timings = {"seconds", "train_images_per_second"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timings} for r in rows]  # noqa: E731
    assert strip(history(a)) == strip(history(b))
    sa, sb = summary(a), summary(b)
    for key in ("optimizer_steps", "final_lr", "test_acc", "best_val_acc", "epochs_completed"):
        assert sa[key] == sb[key], key


def workers(launcher: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(launcher.pid).children(recursive=True) if "train.py" in " ".join(p.cmdline())]


def wait_for_epochs(run_dir, count: int, launcher: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and launcher.poll() is None:
        path = run_dir / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the epoch to interrupt")


def tiny_cifar_archive(folder: Path, per_batch: int = 40) -> Path:
    """A CIFAR-10 archive in the python format (pickled dicts of uint8 rows), small enough to serve in a test."""
    import io
    import pickle
    import tarfile

    import numpy as np

    rng = np.random.default_rng(0)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        entries = {name: {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(range(10)) * (per_batch // 10)}
                   for name in names}  # fmt: skip
        entries["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
        for name, entry in entries.items():
            payload = pickle.dumps(entry, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive
