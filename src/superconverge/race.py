"""``lr_finder.race``: max_lr decided at the run's own length.

A judge shorter than the run prefers low LRs (short-horizon bias: the best one-cycle max_lr grows
with the run's length), so the race's judge is the run itself. After the range test, every
candidate (the pick x each of ``lr_finder.race_factors``) trains the whole one cycle from the same
initial weights on the same data order, one after another in this job, each an ordinary run in its
own directory (``candidates/x2.5``) with its own checkpoints. The candidate with the best monitored
validation metric is the run's result: nothing is retrained, its files are copied to the run
directory and its checkpoints linked there. A stopped race resumes the candidate it was in (as a
run resumes) and skips the finished ones; a candidate whose loss turns NaN loses and the race goes on.

``lr_finder.race_run`` splits the race over jobs (slurm/race.sh): the range test, then one candidate per SLURM
array task, then the decision. Each candidate's state is its own folder's summary, so any job may run any of them.
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
from superconverge.batches import BatchLayout
from superconverge.checkpoint import CHECKPOINTS_DIR
from superconverge.config import Config, ConfigError
from superconverge.console import RunConsole
from superconverge.errors import ExitCode, say
from superconverge.lr_finder import MaxLRChoice, find_max_lr
from superconverge.records import EpochRecord, Metric, RunSummary, StopReason
from superconverge.run_dir import RunDir
from superconverge.signals import StopSignals
from superconverge.startup import batch_layout, exit_code, find_resume_point, make_accelerator, resumed_choice, run_facts, stop_if_requested
from superconverge.task import Task
from superconverge.tracking import Tracking, start_tracking, wants_wandb
from superconverge.trainer import RunContext, Trainer, TrainingDiverged, prepare_model

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


def candidate_trainer(cfg: Config, accelerator: Accelerator, task: Task, console: RunConsole, stop: StopSignals) -> Trainer:
    """A race's candidate (race.candidate_config): a run at a fixed max_lr in its own directory, resumed as any run is;
    its progress shows on the race's console, without trackers."""
    run_dir = RunDir.open(cfg, accelerator)
    model = prepare_model(cfg, accelerator, task.model)
    resume_from, resume_state = find_resume_point(cfg, task.model)
    layout = batch_layout(cfg, accelerator, resume_state)
    run_dir.record_config(cfg)
    choice = resumed_choice(resume_state) or MaxLRChoice(float(cfg.schedule.max_lr), "race")
    resume = (resume_from, resume_state) if resume_from is not None else None
    context = RunContext(cfg, accelerator, run_dir, console, Tracking("disabled"), stop, layout)
    return Trainer(context, task, model, choice, resume)


def run_race(cfg: Config, task: Task, stop: StopSignals) -> int:
    """lr_finder.race (race.py): the range test once, then every candidate not yet finished as a run of its own; the best
    one on the validation split becomes the run. ``lr_finder.race_run`` does one part of that only."""
    if task.data.val is None:
        raise ConfigError("lr_finder.race judges the candidates on a validation split: set data.val_fraction above 0")
    checkpoints = Path(cfg.output_dir) / CHECKPOINTS_DIR
    if checkpoints.is_dir() and not checkpoints.is_symlink() and any(checkpoints.iterdir()):
        raise ConfigError(f"lr_finder.race: output_dir {cfg.output_dir} holds another run's checkpoints; give the race an "
                          "output_dir of its own")  # fmt: skip
    pristine = fresh_task(task)  # untrained: every candidate starts from these weights
    only = race_candidate(cfg)
    accelerator = make_accelerator(cfg)
    console = RunConsole(cfg.console, accelerator.is_main_process, cfg.trainer.epochs)
    if only is not None:  # another job (e.g. a SLURM array task) may run a candidate beside this one: no lock on the race
        race = Race.read(Path(cfg.output_dir), cfg.lr_finder.race_factors)
        if race is None:
            raise ConfigError(f"lr_finder.race_run: {Path(cfg.output_dir) / RACE_FILE} does not exist yet; run the race's "
                              "range test first (lr_finder.race_run=range_test; slurm/race.sh does)")  # fmt: skip
        code = run_candidates(cfg, race, [race.entries[only]], accelerator, pristine, console, stop)
        accelerator.end_training()
        return code
    run_dir = RunDir.open(cfg, accelerator)
    run_dir.record_config(cfg)
    if wants_wandb(cfg) or cfg.tracking.tensorboard:
        say("lr_finder.race: W&B and TensorBoard get the winner's epochs and every candidate's score once the race is decided")
    race = Race.read(run_dir.path, cfg.lr_finder.race_factors) or start_race(cfg, task, accelerator, run_dir, console, stop)
    code = ExitCode.DONE
    if cfg.lr_finder.race_run == "all":
        code = run_candidates(cfg, race, list(race.entries), accelerator, pristine, console, stop)
    accelerator.wait_for_everyone()
    race = Race.read(run_dir.path, cfg.lr_finder.race_factors)  # each candidate as its folder says now
    if code == ExitCode.DONE and cfg.lr_finder.race_run == "all":
        race = race.decided()
        crown(run_dir.path, race, accelerator)
        track(cfg, accelerator, run_dir.path, race)
        console.line(f"race: {candidate_name(race.winner)} won (max_lr {race.pick * race.winner:.4g}); its run is this run: "
                     f"{run_dir.path}/summary.json, checkpoints -> {CANDIDATES_DIR}/{candidate_name(race.winner)}")  # fmt: skip
    if accelerator.is_main_process:
        race.write(run_dir.path / RACE_FILE)
    run_dir.close()
    accelerator.end_training()
    return code


def race_candidate(cfg: Config) -> int | None:
    """The one candidate lr_finder.race_run names (its index in race_factors), or None."""
    run, count = cfg.lr_finder.race_run, len(cfg.lr_finder.race_factors)
    if run == "array":
        if "SLURM_ARRAY_TASK_ID" not in os.environ:
            raise ConfigError("lr_finder.race_run=array: not a SLURM array task (SLURM_ARRAY_TASK_ID is not set)")
        run = int(os.environ["SLURM_ARRAY_TASK_ID"])
    if isinstance(run, str):
        return None
    if run >= count:
        raise ConfigError(f"lr_finder.race_run=array: SLURM_ARRAY_TASK_ID {run} names no candidate: the race has {count} "
                          f"(submit --array=0-{count - 1})")  # fmt: skip
    return run


def start_race(cfg: Config, task: Task, accelerator: Accelerator, run_dir: RunDir, console: RunConsole, stop: StopSignals) -> Race:
    """The range test, once for every candidate; ``lr_race.json`` keeps its pick for the candidates' jobs and reruns."""
    console.banner(run_facts(cfg, accelerator, BatchLayout.configured(cfg, accelerator.num_processes), task, Tracking("disabled")))
    choice = find_max_lr(cfg, accelerator, task, prepare_model(cfg, accelerator, task.model), console)
    stop_if_requested(stop, accelerator, run_dir, "the LR range test")
    race = Race.start(run_dir.path, choice, cfg.lr_finder.race_factors, task.monitor)
    if accelerator.is_main_process:
        race.write(run_dir.path / RACE_FILE)
    return race


def run_candidates(cfg: Config, race: Race, entries: list, accelerator: Accelerator, pristine: Task, console: RunConsole,
                   stop: StopSignals) -> int:  # fmt: skip
    """Each unfinished candidate of ``entries`` trained whole, in turn; a stop inside one (or between two) ends here."""
    root = Path(cfg.output_dir)
    for entry in entries:
        if entry.finished:
            continue
        number = race.entries.index(entry) + 1
        console.line(f"race: candidate {number} of {len(race.entries)}, max_lr {entry.max_lr:.4g} ({candidate_name(entry.factor)} "
                     f"the pick {race.pick:.4g}) in {root / entry.folder}")  # fmt: skip
        accelerator.free_memory()  # no earlier model or optimizer in this candidate's checkpoints
        trainer = candidate_trainer(candidate_config(cfg, root, entry), accelerator, fresh_task(pristine), console, stop)
        try:
            summary = trainer.fit()
        except TrainingDiverged as exc:  # its summary says so: it loses, the race goes on
            console.line(f"race: {candidate_name(entry.factor)} lost: {exc}")
            summary = None
        trainer.close(end=False)
        if summary is not None and summary.stop_reason not in (StopReason.COMPLETED, StopReason.EARLY_STOP):
            return exit_code(summary, stop)  # stopped inside this candidate: the same command continues it
        if stop.agreed(accelerator):  # asked to stop during a candidate that then finished: before the next one
            say(f"stopped on {stop.reason} after the race's candidate {number}; the same command continues the race")
            return stop.exit_code
    return ExitCode.DONE
