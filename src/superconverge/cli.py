"""Entry point: ``superconverge launch [ACCELERATE OPTIONS] [train|lr-find] --config X.yaml key=value ...`` (launcher.py),
or ``accelerate launch -m superconverge ...`` with the same arguments (``train.py`` and ``lr_find.py`` at the
repository's root call the same functions).

Everything that can be wrong with the user's input is checked on every rank before the
process group forms, so a bad key fails every rank at once instead of leaving one in a barrier.
The stages after that (run directory, resume point, range test, prepared objects) are startup.py's;
a race's (lr_finder.race) are race.py's.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import shutil
import sys
import threading
from pathlib import Path

import torch

from superconverge.checkpoint import resolve_resume
from superconverge.config import Config, ConfigError, config_yaml, load_config
from superconverge.console import RunConsole
from superconverge.errors import ExitCode, UserError, report_error, report_error_on_every_rank, say
from superconverge.launcher import launch_main
from superconverge.lr_finder import MaxLRChoice, find_max_lr
from superconverge.race import RaceLost, run_race
from superconverge.records import StopReason
from superconverge.run_dir import RunDir
from superconverge.signals import ProgressWatchdog, StopSignals, close_store_threads
from superconverge.startup import StoppedBeforeTraining, build_trainer, exit_code, make_accelerator, uses_cpu
from superconverge.task import Task, build_task
from superconverge.trainer import prepare_model


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


def start_run(argv: list[str] | None, stop: StopSignals) -> tuple[Config, Task]:
    """Config and task, with the stop watches the config sets (a dead launcher's grace, the stall watchdog)."""
    cfg, task = prepare_inputs(argv, stop=stop)
    stop.orphan_grace_seconds = cfg.trainer.orphan_grace_seconds
    stop.watch_progress(cfg.trainer.stall_timeout)
    return cfg, task


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
            return exit_code(summary, stop)
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
