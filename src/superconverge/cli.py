"""Entry point: ``superconverge launch [ACCELERATE OPTIONS] [train|lr-find] --config X.yaml key=value ...`` (launcher.py),
or ``accelerate launch -m superconverge ...`` with the same arguments (``train.py`` and ``lr_find.py`` at the
repository's root call the same functions).

Everything that can be wrong with the user's input is checked on every rank before the
process group forms, so a bad key fails every rank at once instead of leaving one in a barrier.
The checkpoint to resume is read once the run directory is locked, again on every rank alike.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import shutil
import sys
import threading
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, TorchDynamoPlugin

from superconverge.batches import BatchLayout
from superconverge.budget import WARMUP_STEPS
from superconverge.checkpoint import CHECKPOINTS_DIR, check_fits, resolve_resume, validate_checkpoint
from superconverge.config import MOOT_ON_RESUME, Config, ConfigError, config_yaml, describe_changes, load_config, resume_changes
from superconverge.console import RunConsole
from superconverge.errors import ExitCode, UserError, report_error, report_error_on_every_rank, say
from superconverge.launcher import launch_main
from superconverge.lr_finder import MaxLRChoice, find_max_lr, measure_curve
from superconverge.race import CANDIDATES_DIR, RACE_FILE, Race, RaceLost, candidate_config, candidate_name, crown, fresh_task, track
from superconverge.records import RunSummary, StopReason
from superconverge.run_dir import RunDir
from superconverge.signals import ProgressWatchdog, StopSignals, close_store_threads
from superconverge.task import Task, build_task
from superconverge.tracking import Tracking, start_tracking, wants_wandb
from superconverge.trainer import RunContext, Trainer, TrainingDiverged, TrainState, prepare_model


def entry(argv: list[str] | None = None) -> int:
    """``python -m superconverge`` and the ``superconverge`` script: a command (``train`` when none is named) and its arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(usage())
        return ExitCode.DONE
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return main(argv)


def usage() -> str:
    commands = "\n".join(f"  {name:<13} {inspect.getdoc(command).splitlines()[0]}" for name, command in COMMANDS.items())
    return (
        "usage: superconverge [COMMAND] --config X.yaml [key.sub=value ...]\n"
        "       superconverge launch [ACCELERATE OPTIONS] [COMMAND] --config X.yaml [key.sub=value ...]\n"
        "       accelerate launch [ACCELERATE OPTIONS] -m superconverge [COMMAND] --config X.yaml [key.sub=value ...]\n\n"
        f"commands (train when none is named):\n{commands}\n\n"
        "`superconverge COMMAND --help` shows a command's options. Every config key, its type, default and meaning:\n"
        f"{CONFIG_DOC}; `superconverge print-config` prints the resolved config a command would run."
    )


def parse_args(argv: list[str] | None, prog: str = "train") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"superconverge {prog}", description=inspect.getdoc(COMMANDS[prog]).splitlines()[0],
                                     epilog=f"Config keys: {CONFIG_DOC}")  # fmt: skip
    parser.add_argument("--config", type=Path, help="YAML experiment file (configs/*.yaml)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors (console.mode=quiet)")
    parser.add_argument("--verbose", action="store_true", help="report every 10 steps (console.log_every_steps=10)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. trainer.epochs=3")
    args = parser.parse_args(argv)
    args.overrides = (
        (["console.mode=quiet"] if args.quiet else []) + (["console.log_every_steps=10"] if args.verbose else []) + args.overrides
    )
    return args


def print_config_main(argv: list[str] | None = None) -> int:
    """Print the resolved config (YAML, defaults included) that the same arguments would run, and exit."""
    try:
        args = parse_args(argv, "print-config")
        print(config_yaml(load_config(args.config, args.overrides)), end="")
    except UserError as exc:
        report_error(f"superconverge print-config: error: {exc}")
        return ExitCode.BAD_INPUT
    return ExitCode.DONE


def resumed_choice(resume_state: TrainState | None) -> MaxLRChoice | None:
    """A resumed run continues the schedule it started, with the max_lr it chose then."""
    if resume_state is None:
        return None
    return MaxLRChoice(float(resume_state.max_lr), resume_state.lr_policy, resume_state.lr_finder_seconds, reused=True,
                       suggestions=resume_state.lr_suggestions)  # fmt: skip


def uses_cpu(cfg: Config) -> bool:
    return cfg.trainer.cpu if cfg.trainer.cpu is not None else not torch.cuda.is_available()


def make_accelerator(cfg: Config) -> Accelerator:
    # The config decides compilation, not `accelerate launch --dynamo_backend`, so a run is reproducible from its config.yaml.
    dynamo = TorchDynamoPlugin(backend="inductor" if cfg.trainer.compile else "no", mode=cfg.trainer.compile_mode)
    return Accelerator(
        # Accelerate forms a gloo process group only when told to use the CPU; without this a
        # CPU-only `--multi_gpu --num_processes 2` launch would start two independent runs.
        cpu=uses_cpu(cfg),
        dynamo_plugin=dynamo,
        log_with="wandb" if wants_wandb(cfg) else None,
        project_dir=str(cfg.output_dir),
        mixed_precision=cfg.trainer.mixed_precision,
        gradient_accumulation_steps=cfg.trainer.grad_accum_steps,
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=cfg.trainer.collective_timeout_minutes))],
    )


def check_inputs(argv: list[str] | None, forced: tuple[str, ...] = (), prog: str = "train") -> Config:
    """The config and what it names that is cheap to check (no data, no model): on every rank, and in ``superconverge launch``
    before any worker starts."""
    args = parse_args(argv, prog)
    cfg = load_config(args.config, [*args.overrides, *forced])
    check_compiler(cfg)
    check_output_dir(Path(cfg.output_dir))
    if cfg.trainer.resume not in ("auto", "none"):
        resolve_resume(cfg.trainer.resume, Path(cfg.output_dir))  # a named checkpoint that is not there: fail before any work
    return cfg


def prepare_inputs(argv: list[str] | None, forced: tuple[str, ...] = (), stop: StopSignals | None = None,
                   prog: str = "train") -> tuple[Config, Task]:  # fmt: skip
    """Config and task (data, model, loss), validated identically on every rank.

    With ``stop``, a multi-node job watches its other nodes from here on, data loading included.
    """
    cfg = check_inputs(argv, forced, prog)
    if stop is not None:
        stop.watch_peer_nodes(cfg.trainer.heartbeat_timeout_seconds)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    return cfg, build_task(cfg)


def find_resume_point(cfg: Config, model: torch.nn.Module) -> tuple[Path | None, TrainState | None]:
    """The checkpoint to continue from, read whole and checked against the model (every rank, run dir locked)."""
    resume_from = resolve_resume(cfg.trainer.resume, Path(cfg.output_dir))
    if resume_from is None:
        return None, None
    resume_state = TrainState.from_checkpoint(validate_checkpoint(resume_from), resume_from)
    check_fits(resume_from, model)
    check_config_unchanged(cfg, resume_from, resume_state)
    return resume_from, resume_state


def check_config_unchanged(cfg: Config, resume_from: Path, resume_state: TrainState) -> None:
    """A resumed run keeps what shaped its checkpoint; changes it can apply are applied and said."""
    saved = resume_state.config
    if not saved:
        return  # a checkpoint from before configs were stored in it
    applied, refused = resume_changes(saved, cfg)
    if refused:
        raise ConfigError(
            f"cannot resume {resume_from} with a changed {describe_changes(refused)}: a resumed run continues the "
            "schedule, data and model it started with. Put these back, or start a new run with trainer.resume=none "
            "or another output_dir"
        )
    if applied:
        moot = any(key.startswith(MOOT_ON_RESUME) for key in applied)
        note = " (lr_finder settings do not act on a resumed run: it keeps its max_lr)" if moot else ""
        say(f"resuming with {describe_changes(applied)}{note}")


def check_output_dir(path: Path) -> None:
    """output_dir can be created and written: a file in its way is an error before any work, on every rank."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"output_dir {path}: {existing} is a file, not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir {path}: {existing} is not writable")


def check_compiler(cfg: Config) -> None:
    """Inductor builds C++ kernels on the CPU; without a compiler it fails only at the first step."""
    compilers = (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")
    if cfg.trainer.compile and uses_cpu(cfg) and not any(shutil.which(cxx) for cxx in compilers):
        raise UserError("trainer.compile=true on the CPU needs a C++ compiler: apt-get install g++, or set trainer.compile=false")


class StoppedBeforeTraining(Exception):
    """A stop signal (or a dead launcher) arrived before the training loop: nothing to checkpoint yet."""


def stop_if_requested(stop: StopSignals, accelerator: Accelerator, run_dir: RunDir, stage: str) -> None:
    """Between start-up stages: a stop request ends the run here on every rank, marked for requeue."""
    if not stop.agreed(accelerator):
        return
    run_dir.write_summary(RunSummary.before_training(stage, str(run_dir.path)))
    run_dir.close()
    raise StoppedBeforeTraining(f"stopped on a signal during {stage}, before training; a rerun starts this stage again")


def start_run(argv: list[str] | None, stop: StopSignals) -> tuple[Config, Task]:
    """Config and task, with the stop watches the config sets (a dead launcher's grace, the stall watchdog)."""
    cfg, task = prepare_inputs(argv, stop=stop)
    stop.orphan_grace_seconds = cfg.trainer.orphan_grace_seconds
    stop.watch_progress(cfg.trainer.stall_timeout)
    return cfg, task


def build_trainer(cfg: Config, task: Task, stop: StopSignals) -> Trainer:
    """(config, data and model) -> locked run dir, resume point -> (range test on every rank) -> prepared objects.

    ``stop`` is already installed: a signal in any stage ends the run at the next stage boundary.
    """
    accelerator = make_accelerator(cfg)
    run_dir = RunDir.open(cfg, accelerator)
    stop_if_requested(stop, accelerator, run_dir, "data loading")
    resume_from, resume_state = find_resume_point(cfg, task.model)
    layout = batch_layout(cfg, accelerator, resume_state)
    run_dir.record_config(cfg)
    console = RunConsole(cfg.console, accelerator.is_main_process, cfg.trainer.epochs)
    tracking = start_tracking(cfg, accelerator, resume_state.optimizer_steps if resume_state is not None else None)
    stop_if_requested(stop, accelerator, run_dir, "W&B start")
    console.banner(run_facts(cfg, accelerator, layout, task, tracking))
    model = prepare_model(cfg, accelerator, task.model)
    choice = resumed_choice(resume_state) or find_max_lr(cfg, accelerator, task, model, console)
    stop_if_requested(stop, accelerator, run_dir, "the LR range test")
    if choice.range_test is not None:
        tracking.log_range_test(choice, Path(cfg.output_dir) / "lr_finder.png")
    step_seconds = measure_step_seconds(cfg, accelerator, task, model, console, choice, resume_state)
    resume = (resume_from, resume_state) if resume_from is not None else None
    context = RunContext(cfg, accelerator, run_dir, console, tracking, stop, layout)
    return Trainer(context, task, model, choice, resume, step_seconds)


def measure_step_seconds(cfg: Config, accelerator: Accelerator, task: Task, model: torch.nn.Module, console: RunConsole,
                         choice: MaxLRChoice, resume_state: TrainState | None) -> float | None:  # fmt: skip
    """Seconds per global batch through the training step, for a budget's plan (None: no plan to make).

    The range test already ran that step on the real model at the global batch: its time per
    iteration (its first, slower steps included, so the plan errs short). A fixed max_lr has no
    range test, so a one-sweep range test of WARMUP_STEPS times it: it trains its own optimizer and
    puts the model back as it was, and the Trainer reseeds every RNG after it, so the run trains as
    it would have from the same weights.
    """
    if cfg.trainer.budget is None or (resume_state is not None and resume_state.budget):
        return None
    curve = choice.range_test
    if curve is None or curve.iterations_run == 0:
        timing = cfg.lr_finder.model_copy(update={"num_iter": WARMUP_STEPS, "sweep_iter": WARMUP_STEPS})
        curve = measure_curve(cfg.model_copy(update={"lr_finder": timing}), accelerator, task, model, console)
    return curve.seconds / max(curve.iterations_run, 1)


def batch_layout(cfg: Config, accelerator: Accelerator, resume_state: TrainState | None) -> BatchLayout:
    """The configured spread of the global batch; a resumed run keeps its checkpoint's global batch on the processes it
    has now (elastic resume: never a bigger micro-batch than data.batch_size) and says so when the spread changes."""
    world = accelerator.num_processes
    if resume_state is None or not resume_state.batch_layouts:
        return BatchLayout.configured(cfg, world)
    before = BatchLayout.from_record(resume_state.batch_layouts[-1])
    layout = BatchLayout.keeping(before.global_batch, world, cfg.data.batch_size, cfg.trainer.grad_accum_steps)
    accelerator.gradient_accumulation_steps = layout.accum
    if layout != before:
        say(
            f"resuming at the checkpoint's global batch of {layout.global_batch} on {layout.describe()} "
            f"(it ran on {before.describe()}); the schedule and data order continue unchanged"
        )
    return layout


def run_facts(cfg: Config, accelerator: Accelerator, layout: BatchLayout, task: Task, tracking: Tracking) -> dict:
    data, model = task.data, task.model
    sizes = "/".join(str(len(split)) if split is not None else "-" for split in (data.train, data.val, data.test))
    return {
        "world_size": layout.world,
        "device": accelerator.device.type,
        "precision": accelerator.mixed_precision,
        "compile": cfg.trainer.compile_mode if cfg.trainer.compile else "off",
        "channels_last": cfg.trainer.channels_last,
        "global_batch": layout.global_batch,
        "micro_batch": layout.micro,
        "grad_accum": layout.accum,
        "data": f"{cfg.data.name} train/val/test={sizes} workers={data.workers}",
        "model": f"{cfg.model.name} params={sum(p.numel() for p in model.parameters())}",
        "loss": cfg.loss.name + ("" if task.classifies else f" (monitor {task.monitor})"),
        "max_lr": cfg.schedule.max_lr,
        "run_dir": cfg.output_dir,
        "wandb": tracking.describe().replace(" ", ":"),
        **({"tensorboard": tracking.tensorboard_dir} if tracking.tensorboard_dir else {}),
    }


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
            return finished(summary, stop)  # stopped inside this candidate: the same command continues it
        if stop.agreed(accelerator):  # asked to stop during a candidate that then finished: before the next one
            say(f"stopped on {stop.reason} after the race's candidate {number}; the same command continues the race")
            return stop.exit_code
    return ExitCode.DONE


def finished(summary: RunSummary, stop: StopSignals) -> int:
    """The exit code of a run that ended with ``summary``; a preempted one says where it stopped."""
    if summary.stop_reason is not StopReason.PREEMPTED:
        return summary.stop_reason.exit_code
    say(
        f"stopped on {stop.reason} at optimizer step {summary.optimizer_steps} of {summary.total_optimizer_steps} "
        f"(checkpoint saved in {summary.run_dir}/checkpoints/last); the same command continues the run"
    )
    return stop.exit_code  # Ctrl-C's own code, else the requeue code


def main(argv: list[str] | None = None) -> int:
    """Train: range test (with schedule.max_lr=auto), one cycle, checkpoints; the same command resumes."""
    with StopSignals() as stop:
        try:
            cfg, task = start_run(argv, stop)
            if cfg.lr_finder.race:
                return run_race(cfg, task, stop)
            trainer = build_trainer(cfg, task, stop)
            summary = trainer.fit()
            trainer.close()
            return finished(summary, stop)
        except RaceLost as exc:
            report_error_on_every_rank(f"superconverge: error: {exc}")
            return StopReason.DIVERGED.exit_code
        except StoppedBeforeTraining as exc:
            say(str(exc))
            return stop.exit_code
        except UserError as exc:
            report_error_on_every_rank(f"superconverge: error: {exc}")
            return ExitCode.BAD_INPUT
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            report_error(f"superconverge: error: no space left on the device of {exc.filename or 'the run directory'}: free some "
                         "space and rerun to resume from the last checkpoint")  # fmt: skip
            return ExitCode.BAD_INPUT


def lr_find_main(argv: list[str] | None = None) -> int:
    """Run only the LR range test for a config (the same code path, distributed too) and print every rule's suggestion."""
    watch_closed, watches = threading.Event(), []
    try:
        cfg, task = prepare_inputs(argv, forced=FORCED["lr-find"], prog="lr-find")
        watches = [t for t in [ProgressWatchdog.start_if_wanted(cfg.trainer.stall_timeout, watch_closed)] if t is not None]
        accelerator = make_accelerator(cfg)
        run_dir = RunDir.open(cfg, accelerator)
        run_dir.record_config(cfg)
        model = prepare_model(cfg, accelerator, task.model)
        choice = find_max_lr(cfg, accelerator, task, model, RunConsole(cfg.console, accelerator.is_main_process))
        if accelerator.is_main_process:
            print_suggestions(choice, run_dir.path)
        run_dir.close()
        accelerator.end_training()
    except UserError as exc:
        report_error_on_every_rank(f"superconverge lr-find: error: {exc}")
        return ExitCode.BAD_INPUT
    finally:
        watch_closed.set()
        close_store_threads(watches)
    return ExitCode.DONE


def print_suggestions(choice: MaxLRChoice, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    curve, rule, probe = choice.range_test, choice.rule, choice.probe
    table = Table()
    for column in ("policy", "suggested max_lr", "chosen"):
        table.add_column(column)
    for name, lr in choice.suggestions.items():
        table.add_row(name, f"{lr:.3e}", "yes" if choice.policy == name else "")
    for lr, score in probe.scores.items() if probe is not None else ():
        shown = f"validation loss {score.loss:.4g}" + (f", accuracy {score.accuracy:.4f}" if score.accuracy is not None else "")
        table.add_row(f"probe ({shown})", f"{lr:.3e}", "yes" if lr == choice.max_lr else "")
    if choice.fallback_used:
        table.add_row("fallback", f"{choice.max_lr:.3e}", "yes")
    console = Console(soft_wrap=True)
    console.print(
        f"LR range test: global batch {curve.effective_batch_size} on {curve.world_size} process(es), "
        f"{curve.iterations_run} iterations in {curve.sweeps} sweep(s), {curve.seconds:.1f} s"
    )
    console.print(table)
    if rule.lr_at_minimum:
        console.print(f"lowest loss at lr {rule.lr_at_minimum:.3e}; every policy's suggestion lies below it"
                      + (f" (the probe's candidates may not; {probe.seconds:.1f} s)" if probe is not None else ""))  # fmt: skip
    console.print(f"curve and suggestions: {run_dir / 'lr_finder.json'} and {run_dir / 'lr_finder.png'}")


CONFIG_DOC = "docs/configuration.md"
COMMANDS = {"train": main, "lr-find": lr_find_main, "print-config": print_config_main, "launch": launch_main}
FORCED = {"train": (), "lr-find": ("schedule.max_lr=auto", "trainer.resume=none")}  # what each command sets, whatever the user's config
