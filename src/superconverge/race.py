"""``lr_finder.race``: max_lr decided at the run's own length.

A judge shorter than the run prefers low LRs (short-horizon bias: the best one-cycle max_lr grows
with the run's length), so the race's judge is the run itself. After the range test, every
candidate (the pick x each of ``lr_finder.race_factors``) trains the whole one cycle from the same
initial weights on the same data order, one after another in this job, each an ordinary run in its
own directory (``candidates/x2.5``) with its own checkpoints. The candidate with the best monitored
validation metric is the run's result: nothing is retrained, its files are copied to the run
directory and its checkpoints linked there. A stopped race resumes the candidate it was in (as a
run resumes) and skips the finished ones; a candidate whose loss turns NaN loses and the race goes on.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from accelerate import Accelerator

from superconverge import jsonfile
from superconverge.checkpoint import CHECKPOINTS_DIR
from superconverge.config import Config
from superconverge.lr_finder import MaxLRChoice
from superconverge.records import EpochRecord, Metric, RunSummary, StopReason
from superconverge.task import Task
from superconverge.tracking import start_tracking

RACE_FILE = "lr_race.json"
RACE_PNG = "lr_race.png"
CANDIDATES_DIR = "candidates"
WINNER_FILES = ("summary.json", "metrics.jsonl", "lr_trace.json", "metrics.png")
FINISHED = (StopReason.COMPLETED.value, StopReason.EARLY_STOP.value, StopReason.DIVERGED.value)


class RaceLost(Exception):
    """Every candidate diverged."""


@dataclass(frozen=True)
class Entry:
    """One candidate's place in the race: ``stop_reason`` None until it has run, ``score`` its best monitored metric.
    Read from the candidate's own ``summary.json``, so a candidate run by another job (a SLURM array task) counts alike."""

    factor: float
    max_lr: float
    folder: str  # relative to the run directory
    stop_reason: str | None = None
    score: float | None = None
    test_acc: float | None = None
    test_loss: float | None = None

    @classmethod
    def of(cls, run_dir: Path, pick: float, factor: float, monitor: Metric) -> Entry:
        entry = cls(factor, pick * factor, f"{CANDIDATES_DIR}/{candidate_name(factor)}")
        path = run_dir / entry.folder / "summary.json"
        if not path.is_file():
            return entry
        summary = json.loads(path.read_text())
        score = summary.get("best_val_acc" if monitor is Metric.VAL_ACC else "best_val_loss")
        return replace(entry, stop_reason=summary.get("stop_reason"), score=score, test_acc=summary.get("test_acc"),
                       test_loss=summary.get("test_loss"))  # fmt: skip

    @property
    def finished(self) -> bool:
        return self.stop_reason in FINISHED


@dataclass(frozen=True)
class Race:
    """``lr_race.json``: the range test's pick, the candidates, and the winner once every candidate has finished."""

    pick: float
    policy: str
    monitor: str
    entries: tuple[Entry, ...]
    winner: float | None = None  # the winning factor
    suggestions: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, run_dir: Path, choice: MaxLRChoice, factors: list[float], monitor: Metric) -> Race:
        entries = tuple(Entry.of(run_dir, choice.max_lr, f, monitor) for f in factors)
        return cls(choice.max_lr, choice.policy, monitor.value, entries, suggestions=dict(choice.suggestions))

    @classmethod
    def read(cls, run_dir: Path, factors: list[float]) -> Race | None:
        """The race this run directory holds, with the config's factors now, each candidate as its folder says."""
        path = run_dir / RACE_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        monitor = Metric(saved["monitor"])
        entries = tuple(Entry.of(run_dir, saved["pick"], f, monitor) for f in factors)
        return cls(saved["pick"], saved["policy"], saved["monitor"], entries, None, saved.get("suggestions", {}))

    def decided(self) -> Race:
        """The winner: the best score among the candidates that did not diverge."""
        metric = Metric(self.monitor)
        scored = [e for e in self.entries if e.stop_reason != StopReason.DIVERGED.value and e.score is not None]
        if not scored:
            raise RaceLost("every candidate of lr_finder.race diverged: lower lr_finder.race_factors or schedule.max_lr")
        best = scored[0]
        for entry in scored[1:]:
            if metric.better(entry.score, best.score):
                best = entry
        return replace(self, winner=best.factor)

    def write(self, path: Path) -> None:
        path.write_text(jsonfile.dumps({**asdict(self), "entries": [asdict(e) for e in self.entries]}, indent=2))


def candidate_name(factor: float) -> str:
    return f"x{factor:g}"


def candidate_config(cfg: Config, run_dir: Path, entry: Entry) -> Config:
    """A candidate is an ordinary run at a fixed max_lr, in its own directory, resumed as one."""
    return cfg.model_copy(update={
        "output_dir": run_dir / entry.folder,
        "schedule": cfg.schedule.model_copy(update={"max_lr": entry.max_lr}),
        "lr_finder": cfg.lr_finder.model_copy(update={"race": False}),
        "trainer": cfg.trainer.model_copy(update={"resume": "auto"}),
    })  # fmt: skip


def fresh_task(pristine: Task) -> Task:
    """The task with a copy of its untrained model (and the head inside that copy): every candidate starts alike."""
    model, head = copy.deepcopy((pristine.model, pristine.head))
    return replace(pristine, model=model, head=head)


def crown(run_dir: Path, race: Race, accelerator: Accelerator) -> None:
    """The winner's files become the run's: copies of its summary (with the race), history, trace and plot; its
    checkpoints linked as the run's ``checkpoints``; every candidate's validation curve in ``lr_race.png``."""
    if not accelerator.is_main_process:
        return
    winner = next(e for e in race.entries if e.factor == race.winner)
    source = run_dir / winner.folder
    for name in WINNER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, run_dir / name)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(run_dir=str(run_dir), lr_race={"winner": race.winner, "pick": race.pick, "monitor": race.monitor,
                                                  "scores": {candidate_name(e.factor): e.score for e in race.entries}})  # fmt: skip
    (run_dir / "summary.json").write_text(jsonfile.dumps(summary, indent=2))
    link = run_dir / CHECKPOINTS_DIR
    if link.is_symlink():
        link.unlink()
    elif link.is_dir() and not any(link.iterdir()):
        link.rmdir()
    if not link.exists():
        os.symlink(Path(winner.folder) / CHECKPOINTS_DIR, link)
    draw_race(run_dir, race)


def draw_race(run_dir: Path, race: Race) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for entry in race.entries:
        path = run_dir / entry.folder / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
        values = [(r["epoch"], r[race.monitor]) for r in rows if r.get(race.monitor) is not None]
        if values:
            label = f"{candidate_name(entry.factor)} (max_lr {entry.max_lr:.3g})" + (" winner" if entry.factor == race.winner else "")
            ax.plot(*zip(*values, strict=True), marker="o", lw=2.5 if entry.factor == race.winner else 1, label=label)
    ax.set(xlabel="epoch", ylabel=race.monitor, title=f"lr_finder.race around the range test's pick {race.pick:.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / RACE_PNG, dpi=110)
    plt.close(fig)


def track(cfg: Config, accelerator: Accelerator, run_dir: Path, race: Race) -> None:
    """The race's own trackers (one W&B run, TensorBoard) once it is decided: the winner's epochs at its optimizer steps,
    its summary, and every candidate's score (the candidates train without trackers: their steps would collide)."""
    tracking = start_tracking(cfg, accelerator)
    if not tracking.active:
        return
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] if accelerator.is_main_process else []
    for row in rows:
        tracking.log({f"epoch/{k}": v for k, v in EpochRecord.from_dict(row).numbers().items()}, step=row["optimizer_steps"])
    summary = json.loads((run_dir / "summary.json").read_text()) if accelerator.is_main_process else {}
    scores = {f"lr_race/{candidate_name(e.factor)}": e.score for e in race.entries}
    tracking.summarize({**{k: summary.get(k) for k in RunSummary.WANDB_KEYS}, **scores, "lr_race/winner": race.winner,
                        "lr_race/pick": race.pick})  # fmt: skip
