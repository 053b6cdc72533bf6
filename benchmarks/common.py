"""What the benchmark scripts share: paths, the machine header, and running the product in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
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


def run_in_process(entry: str, argv: list[str]) -> int:
    """``train.py`` (entry="train") or ``lr_find.py`` (entry="lr_find") in this process, quietly.

    Many short runs in one process save the ~3 s import of each; Accelerate keeps its state in
    class-level singletons, so they are reset after every run.
    """
    import signal

    from accelerate.state import AcceleratorState, GradientState

    from superconverge import cli

    function = cli.main if entry == "train" else cli.lr_find_main
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return function([*argv, "console.mode=quiet", "tracking.wandb.mode=disabled", "trainer.resume=none"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        for signum in (signal.SIGTERM, signal.SIGUSR1):  # the trainer's preemption handlers
            signal.signal(signum, signal.SIG_DFL)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
