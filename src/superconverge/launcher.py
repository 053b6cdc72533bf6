"""``superconverge launch [ACCELERATE OPTIONS] [train|lr-find] --config X.yaml key=value ...``

``accelerate launch -m superconverge`` with three differences a batch script and a person at a terminal need:

- the config is checked first, in the launcher: bad input is one line and exit 2 before any worker starts;
- the launcher exits with the ranks' own code (0 done, 2 bad input, 69 a peer lost, 75 preempted, 130 Ctrl-C),
  where torchelastic makes any failure its exit 1;
- torchelastic's failure summary and tracebacks are not printed: the ranks print their own line on stderr.

The workers are started by Accelerate's own ``launch_command`` (torchelastic for several processes). SIGINT and
SIGTERM to the launcher are passed on to its workers, which checkpoint and exit with their code, instead of making
torchelastic raise ``SignalException`` in the launcher (a traceback and exit 130/143 whatever the ranks did).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress

import psutil

from superconverge.budget import LAUNCHER_PID
from superconverge.errors import ExitCode, UserError, report_error

RUN_COMMANDS = ("train", "lr-find")
USAGE = "superconverge launch [ACCELERATE OPTIONS] [train|lr-find] --config X.yaml [key.sub=value ...]"
FORWARDED = (signal.SIGINT, signal.SIGTERM)
HELP = (
    "Accelerate's launcher (`accelerate launch -m superconverge`, the options below) with the config checked before any worker "
    "starts and the ranks' exit code as its own: 0 done, 2 bad input, 69 a peer lost, 75 preempted (rerun to resume), "
    "130 Ctrl-C. The run's arguments follow Accelerate's options, from a command, --config or --: see `superconverge train --help`."
)


class LaunchUsageError(UserError):
    """The launch command line itself is wrong (not the run's config)."""


def launch_main(argv: list[str] | None = None) -> int:
    """Start the ranks like `accelerate launch -m superconverge` (same options), the config checked first; exits with the ranks' code."""
    argv = sys.argv[1:] if argv is None else argv
    accelerate_argv, run_argv = split_argv(argv)
    try:
        args = launch_args(accelerate_argv, run_argv)
        if args is None:
            return ExitCode.DONE  # --help
        check_run(args, run_argv)
    except SystemExit as exc:  # argparse: --help, or a usage error it has printed
        return exit_status(exc)
    except LaunchUsageError as exc:
        report_error(f"superconverge launch: error: {exc}")
        return ExitCode.BAD_INPUT
    except UserError as exc:
        report_error(f"{error_prefix(run_argv)}: error: {exc}")
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return start_ranks(args)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Accelerate's options, then the run's arguments from a command, ``--config`` or ``--`` on."""
    for index, token in enumerate(argv):
        if token == "--":
            return argv[:index], argv[index + 1 :]
        if token in RUN_COMMANDS or token == "--config" or token.startswith("--config="):
            return argv[:index], argv[index:]
    return argv, []


def launch_args(accelerate_argv: list[str], run_argv: list[str]) -> argparse.Namespace | None:
    """Accelerate's own parser, given ``-m superconverge`` and the run's arguments as its training script; None after --help."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    parser.prog, parser.usage, parser.description = "superconverge launch", USAGE, HELP
    for action in parser._actions:  # the script is always -m superconverge: its arguments are the run's
        if action.dest in ("training_script", "training_script_args"):
            action.help = argparse.SUPPRESS
    if {"-h", "--help"} & set(accelerate_argv):
        print(parser.format_help())
        return None
    return parser.parse_args([*accelerate_argv, "--module", "superconverge", *run_argv])


def check_run(args: argparse.Namespace, run_argv: list[str]) -> None:
    """The checks every rank makes on the config before any work (data and model are left to the ranks)."""
    from superconverge.cli import FORCED, check_inputs  # cli names this module as a command

    if args.training_script != "superconverge" or not run_argv:
        found = f"unexpected argument {args.training_script!r} among Accelerate's options" if run_argv else "no run arguments"
        raise LaunchUsageError(f"{found}; usage: {USAGE}")
    command, rest = (run_argv[0], run_argv[1:]) if run_argv[0] in RUN_COMMANDS else ("train", run_argv)
    check_inputs(rest, FORCED[command], prog=command)


def error_prefix(run_argv: list[str]) -> str:
    """The ranks' own prefix for the command, so the launcher's line reads like theirs."""
    return "superconverge lr-find" if run_argv[:1] == ["lr-find"] else "superconverge"


def exit_status(exc: SystemExit) -> int:
    code = exc.code
    return code if isinstance(code, int) else (ExitCode.DONE if code is None else 1)


def start_ranks(args: argparse.Namespace) -> int:
    """Accelerate's launcher, in this process; the ranks' exit code, said in a line only when the ranks could not say it."""
    from accelerate.commands.launch import launch_command
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args.quiet = False  # a failure comes back as an exception to read the ranks' codes from, not as Accelerate's exit 1
    args.signals_to_handle = "SIGHUP,SIGQUIT"  # torchelastic leaves SIGINT and SIGTERM to forwarded_stops
    try:
        with quiet_torchelastic(), forwarded_stops(), own_single_process_runner():
            launch_command(args)
    except ChildFailedError as exc:
        return ranks_exit_code({rank: failure.exitcode for rank, failure in exc.failures.items()})
    except subprocess.CalledProcessError as exc:  # one process, no torchelastic
        return ranks_exit_code({0: exc.returncode})
    except (ValueError, FileNotFoundError) as exc:  # Accelerate's checks of its own options (before any worker)
        report_error(f"superconverge launch: error: {exc}")
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except SystemExit as exc:  # Accelerate's own exit: torchelastic stopped on SIGHUP or SIGQUIT
        return exit_status(exc)
    return ExitCode.DONE


def ranks_exit_code(codes: Mapping[int, int]) -> int:
    """The code of the first rank (by rank) that exited on its own, else of one that a signal killed (128 + the signal).

    A rank that exits with an ``ExitCode`` has said why on stderr; any other code is a crash (its traceback above)
    or a kill, named here in one line.
    """
    rank, code = min(codes.items(), key=lambda item: (item[1] <= 0, item[0]))
    if code < 0:
        tell(f"rank {rank} was killed by {signal.Signals(-code).name}")
        return 128 - code
    if code not in set(ExitCode):
        tell(f"rank {rank} failed with exit code {code} (its traceback is above)")
    return code


def tell(message: str) -> None:
    print(f"superconverge launch: {message}", file=sys.stderr, flush=True)


@contextmanager
def quiet_torchelastic() -> Iterator[None]:
    """torchelastic logs each failed rank and each rank it stops; the ranks' own lines say what happened."""
    import torch.distributed.run  # noqa: F401 - creates torchelastic's loggers, each with its own level

    names = [name for name in list(logging.Logger.manager.loggerDict) if name.startswith("torch.distributed.elastic")]
    levels = {logger: logger.level for logger in map(logging.getLogger, names)}
    for logger in levels:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


@contextmanager
def forwarded_stops() -> Iterator[None]:
    """SIGINT and SIGTERM to the launcher go to its workers (its children, each in a session of its own, so a terminal's
    Ctrl-C reaches them only through here): they checkpoint and exit 130 or 75, and their code becomes the launcher's.
    Before any worker has started there is nothing to pass it to: the launch stops there. SIGUSR1 is left to the ranks."""

    def forward(signum: int, frame: object) -> None:
        workers = psutil.Process().children()
        if not workers:
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(ExitCode.REQUEUE)
        for worker in workers:
            with suppress(psutil.NoSuchProcess):
                worker.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    # SLURM's early warning reaches the ranks from the batch scripts (pkill -P) and, with proctrack/pgid, this process
    # too: passing it on would make it a second signal, which stops a rank without its checkpoint; dying would orphan them.
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def own_single_process_runner() -> Iterator[None]:
    """One process (no torchelastic): Accelerate's command and environment, run by ``run_single_process``."""
    from accelerate.commands import launch as accelerate_launch

    accelerate_runner = accelerate_launch.simple_launcher
    accelerate_launch.simple_launcher = run_single_process
    try:
        yield
    finally:
        accelerate_launch.simple_launcher = accelerate_runner


def run_single_process(args: argparse.Namespace) -> None:
    """Accelerate's ``simple_launcher`` shares the terminal's process group with its child and, on Ctrl-C, sends it
    SIGTERM too and SIGKILL 5 s later: a second signal stops a rank at once, without its checkpoint. Here the child
    runs in a session of its own, like torchelastic's workers, and hears a signal once, from forwarded_stops."""
    from accelerate.utils import prepare_simple_launcher_cmd_env

    command, env = prepare_simple_launcher_cmd_env(args)
    env[LAUNCHER_PID] = str(os.getpid())  # trainer.budget counts from this command's start
    process = subprocess.Popen(command, env=env, start_new_session=True)
    if process.wait() != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
