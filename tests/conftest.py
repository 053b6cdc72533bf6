"""Helpers to run the real entry point as 1- or 2-process jobs (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--config", str(ROOT / "configs" / "digits.yaml")]


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
