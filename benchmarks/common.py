"""What the benchmark scripts share: paths, the machine header, and running the product in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = RESULTS / "tmp"  # run directories; git-ignored
sys.path.insert(0, str(ROOT / "src"))


def machine_header() -> str:
    import accelerate
    import torch
    import torchvision

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, accelerate {accelerate.__version__}."
    )


# `accelerate launch` for one CPU process, without a config file.
LAUNCH_ONE_CPU = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


def timed(command: list[str], **env: str) -> float:
    """Seconds a whole command took from the repository root; never with the user's W&B key (no uploads)."""
    clean = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def run_in_process(entry: str, argv: list[str]) -> int:
    """``train.py`` (entry="train") or ``lr_find.py`` (entry="lr_find") in this process, quietly.

    Many short runs in one process save the ~3 s import of each; Accelerate keeps its state in
    class-level singletons, so they are reset after every run (the run restores its own signal handlers).
    """
    from accelerate.state import AcceleratorState, GradientState

    from superconverge import cli

    function = cli.main if entry == "train" else cli.lr_find_main
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return function([*argv, "console.mode=quiet", "tracking.wandb.mode=disabled", "trainer.resume=none"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_paired_report(name: str, lines: list[str], diffs: dict[str, list[float]], what: str = "") -> Path:
    """A paired benchmark's table, then each half's mean, worst and best difference, to ``results/<name>.md`` (printed)."""
    import statistics

    lines = [*lines, ""]
    for half, values in diffs.items():
        if values:
            mean, worst, top = statistics.mean(values), min(values), max(values)
            lines.append(f"- {half}: mean difference{what} {mean:+.2f} points, worst {worst:+.2f}, best {top:+.2f}")
    out = RESULTS / f"{name}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    return out
