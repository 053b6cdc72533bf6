"""What a person watching the run sees: rich live progress in a terminal, plain timestamped lines
elsewhere (SLURM logs, CI, pipes), and nothing at all from ranks other than the main process."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from superconverge.config import ConsoleConfig
from superconverge.records import EpochRecord, Metric, RunSummary

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "best")
LOSS_ONLY = ("train_acc", "val_acc")  # columns a task without accuracy leaves out


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunConsole:
    def __init__(self, cfg: ConsoleConfig, is_main_process: bool, epochs: int = 0) -> None:
        self.cfg, self.epochs = cfg, epochs
        self.enabled = is_main_process and cfg.mode != "quiet"
        self.console = Console(file=sys.stdout, highlight=False)
        self.live = self.enabled and (cfg.mode == "live" or (cfg.mode == "auto" and self.console.is_terminal))
        if not self.live:
            # Plain output: no colour, no cursor movement, whatever rich thinks of the stream.
            self.console = Console(file=sys.stdout, highlight=False, color_system=None, force_terminal=False, width=160, soft_wrap=True)
        self.progress: Progress | None = None
        self.phase_name, self.phase_total, self.phase_started, self.last_line = "", 0, 0.0, 0.0
        self.epoch_task = self.phase_task = None
        self.table_header_done = False

    def print(self, *items) -> None:
        if self.enabled:
            (self.progress.console if self.progress else self.console).print(*items)

    def banner(self, facts: dict) -> None:
        self._facts("superconverge", "start", facts)

    def _facts(self, title: str, plain_prefix: str, facts: dict) -> None:
        """A panel in a terminal; one ``key=value`` line elsewhere."""
        if not self.enabled:
            return
        if self.live:
            grid = Table.grid(padding=(0, 2))
            for key, value in facts.items():
                grid.add_row(f"[bold]{key}[/]", str(value))
            self.print(Panel(grid, title=title, expand=False))
        else:
            self.line(plain_prefix + " " + " ".join(f"{k.replace(' ', '_')}={v}" for k, v in facts.items()))

    def line(self, text: str) -> None:
        self.print(f"{datetime.now().isoformat(timespec='seconds')} {text}")

    def start_phase(self, name: str, total: int, epoch: int | None = None) -> None:
        if not self.enabled:
            return
        label = f"{name} {epoch}/{self.epochs}" if epoch is not None else name
        self.phase_name, self.phase_total = label, total
        self.phase_started = self.last_line = time.monotonic()
        if self.live:
            self._ensure_progress()
            if self.phase_task is not None:
                self.progress.remove_task(self.phase_task)
            self.phase_task = self.progress.add_task(label, total=total, stats="")

    def _ensure_progress(self) -> None:
        if self.progress is None:
            columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                       TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())  # fmt: skip
            self.progress = Progress(*columns, console=self.console, refresh_per_second=4)
            self.progress.start()
            self.epoch_task = self.progress.add_task("epochs", total=self.epochs, stats="")

    def advance(self, done: int, stats: Callable[[], dict] | None = None, step: int | None = None) -> None:
        """Report progress in the phase; ``stats`` is only called (host sync) at reporting points."""
        if not self.enabled:
            return
        due = not self.live and self._due(step if step is not None else done)
        if self.live:
            fields = {}
            if stats is not None and time.monotonic() - self.last_line >= 1.0:  # numbers once a second
                self.last_line = time.monotonic()
                fields["stats"] = self._stats_text(stats())
            self.progress.update(self.phase_task, completed=done, **fields)
        elif due and stats is not None:  # plain lines for phases with numbers to report (train)
            self.last_line = time.monotonic()
            elapsed = self.last_line - self.phase_started
            eta = elapsed / done * (self.phase_total - done) if done else 0.0
            text = self._stats_text(stats())
            self.line(f"{self.phase_name} step {done}/{self.phase_total} {text} elapsed {_clock(elapsed)} eta {_clock(eta)}")

    def _due(self, count: int) -> bool:
        if self.cfg.log_every_seconds is not None:
            return time.monotonic() - self.last_line >= self.cfg.log_every_seconds
        return count % self.cfg.log_every_steps == 0

    @staticmethod
    def _stats_text(stats: dict) -> str:
        return " ".join(f"{k} {_fmt(v)}" for k, v in stats.items())

    def end_epoch(self, record: EpochRecord) -> None:
        if not self.enabled:
            return
        if self.live:
            self.progress.update(self.epoch_task, completed=record.epoch)
        table = Table(show_header=not self.table_header_done, box=None, pad_edge=False)
        columns = [c for c in EPOCH_COLUMNS if record.train_acc is not None or c not in LOSS_ONLY]
        for column in columns:
            table.add_column(column, justify="right", min_width=10)
        table.add_row(*(_fmt(getattr(record, column)) for column in columns))
        self.table_header_done = True
        self.print(table)

    def finish(self, summary: RunSummary, tracking: str) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        scores = {"best val loss": summary.best_val_loss, "test loss": summary.test_loss}
        if summary.monitor == Metric.VAL_ACC:
            scores = {"best val acc": summary.best_val_acc, "test acc": summary.test_acc}
        facts = {
            **{name: _fmt(value) for name, value in scores.items()},
            "max_lr": f"{summary.max_lr:.4g} ({summary.lr_policy})",
            "run directory": summary.run_dir,
            "W&B": tracking,
        }
        title = "finished" if summary.completed else "stopped (resume with the same command)"
        self._facts(title, "finished" if summary.completed else "stopped", facts)
