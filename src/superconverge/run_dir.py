"""The run directory: one run at a time, and every file a run writes for people and for its resume.

Only the main process writes; every other rank holds the same object so the code reads the same
on all of them. W&B's files (``wandb_*``) and the range test's (``lr_finder.*``) stay with their
own modules.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from superconverge import jsonfile
from superconverge.checkpoint import CHECKPOINTS_DIR, CheckpointError, CheckpointStore
from superconverge.config import Config, save_config
from superconverge.errors import say
from superconverge.records import EpochRecord, RunSummary


class RunLock:
    """One run per output_dir: an exclusive ``flock`` on ``output_dir/.lock``, held by the main process.

    The kernel drops the lock when the process dies, however it dies, so a killed run never blocks
    the next one; ``release`` ends it early for runs made in-process one after another.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise CheckpointError(
                f"output_dir {run_dir} is in use by another run (pid {holder}); wait for it to end or choose another output_dir"
            ) from None
        self.handle.truncate(0)
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()


class StepTrace:
    """Every optimizer step's LR and momentum, appended to ``lr_trace.tsv`` just before each checkpoint.

    Kept out of the checkpoint, which would otherwise grow by a step's numbers every step and be
    rewritten whole at every save (O(steps) a save, O(steps^2) a run). ``start`` cuts the file back to
    the checkpoint's step count, so lines appended before a checkpoint that never landed are dropped.
    """

    def __init__(self, path: Path, is_main: bool) -> None:
        self.path, self.is_main, self.pending = path, is_main, []

    def start(self, steps: int) -> None:
        """Continue after ``steps`` optimizer steps (0: a new run)."""
        if not self.is_main:
            return
        lines = self.path.read_text().splitlines()[:steps] if self.path.is_file() and steps else []
        if len(lines) != steps:
            say(f"warning: {self.path} holds {len(lines)} of the {steps} steps before this checkpoint; lr_trace.json will lack them")
        self.path.write_text("".join(line + "\n" for line in lines))

    def record(self, lr: float, momentum: float) -> None:
        if self.is_main:
            self.pending.append((lr, momentum))

    def flush(self) -> None:
        if self.pending:
            with open(self.path, "a") as handle:
                handle.write("".join(_trace_line(lr, momentum) + "\n" for lr, momentum in self.pending))
        self.pending = []

    def read(self) -> tuple[list[float], list[float]]:
        self.flush()
        if not self.is_main:
            return [], []
        rows = [line.split("\t") for line in self.path.read_text().splitlines()]
        return [float(lr) for lr, _ in rows], [float(momentum) for _, momentum in rows]


def _trace_line(lr: float, momentum: float) -> str:
    return f"{lr!r}\t{momentum!r}"  # repr: the float back exactly


class RunDir:
    """``config.yaml``, ``metrics.jsonl``, ``lr_trace.json``, ``summary.json``, the checkpoints, and the lock."""

    def __init__(self, path: Path, is_main: bool, lock: RunLock | None = None) -> None:
        self.path, self.is_main, self.lock = Path(path), is_main, lock
        self.checkpoints = CheckpointStore(self.path / CHECKPOINTS_DIR)
        self.trace = StepTrace(self.path / "lr_trace.tsv", is_main)

    @classmethod
    def open(cls, cfg: Config, accelerator: Accelerator) -> RunDir:
        """Create the directory and lock it for this run; a refusal reaches every rank."""
        lock, refusal = None, None
        if accelerator.is_main_process:
            (Path(cfg.output_dir) / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
            try:
                lock = RunLock(Path(cfg.output_dir))
            except CheckpointError as exc:
                refusal = str(exc)
        refusal = broadcast_object_list([refusal], from_process=0)[0]
        if refusal is not None:
            raise CheckpointError(refusal)
        return cls(Path(cfg.output_dir), accelerator.is_main_process, lock)

    def record_config(self, cfg: Config) -> None:
        """Written only once the run is known to go ahead: a refused run leaves the old one."""
        if self.is_main:
            save_config(cfg, self.path / "config.yaml")

    def write_history(self, records: list[dict]) -> None:
        """The whole per-epoch history (a resumed run rewrites it from its checkpoint)."""
        if self.is_main:
            (self.path / "metrics.jsonl").write_text("".join(jsonfile.dumps(r) + "\n" for r in records))

    def append_history(self, record: EpochRecord) -> None:
        if self.is_main:
            with open(self.path / "metrics.jsonl", "a") as handle:
                handle.write(jsonfile.dumps(asdict(record)) + "\n")

    def write_summary(self, summary: RunSummary) -> None:
        if self.is_main:
            (self.path / "summary.json").write_text(jsonfile.dumps(asdict(summary), indent=2))

    def write_lr_trace(self, trace: dict) -> None:
        if self.is_main:
            (self.path / "lr_trace.json").write_text(jsonfile.dumps(trace))

    def close(self) -> None:
        """End this run's hold on the directory (the kernel does it anyway when the process dies)."""
        if self.lock is not None:
            self.lock.release()
