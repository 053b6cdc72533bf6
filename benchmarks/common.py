"""What the benchmark scripts share: paths, the import set-up, the machine header, and running the product.

Every script runs as a module from the repository root (``.venv/bin/python -m benchmarks.speed.overhead``)
and imports this first: it puts ``src/`` on the path (the product, without an install) and the task
matrix's folder, whose ``user_tasks`` module the matrix names by import path as a user's own code is
(``data.name=user_tasks:tabular``). No script sets up ``sys.path`` itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = RESULTS / "tmp"  # run directories; git-ignored
for _path in (ROOT / "src", ROOT / "benchmarks" / "lr_selection"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


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


RAISED = 113  # a forked run's exit status when it raised (anything else is the entry point's own)


def run_forked(entry: str, argv: list[str]) -> int:
    """``train.py`` (entry="train") or ``lr_find.py`` (entry="lr_find"), quietly, in a child forked from this process.

    Many short runs save the ~3 s import of each: the child inherits this process's imports. Accelerate
    keeps its state in class-level singletons; each run's end with its child's, so no run sees the
    last one's (no private reset needed). An exception in the run is printed and raised here.
    """
    from superconverge import cli  # imported before the fork: the child inherits it

    function = cli.main if entry == "train" else cli.lr_find_main
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = RAISED
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = function([*argv, "console.mode=quiet", "tracking.wandb.mode=disabled", "trainer.resume=none"])
        except BaseException:  # printed here, raised in the parent
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else RAISED)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == RAISED:
        raise RuntimeError(f"{entry} {' '.join(argv)} raised (its traceback above)")
    return code


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
