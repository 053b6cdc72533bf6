"""The one exception type that reaches the user as a clean message instead of a traceback, and how it is said."""

import json
import os
import sys
import time
from datetime import timedelta
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """What a run exits with, so a batch script can tell why it ended without reading summary.json."""

    DONE = 0
    BAD_INPUT = 2  # a config key, a data folder, a checkpoint: fix the input, rerunning will not help
    PEER_LOST = 69  # EX_UNAVAILABLE: another node (or rank) of the job is gone
    ORPHAN = 70  # EX_SOFTWARE: the launcher died; nobody waits for this status, it is for the record
    REQUEUE = 75  # EX_TEMPFAIL: stopped on a signal, checkpoint saved: run the same command again
    INTERRUPTED = 130  # the shell's code for Ctrl-C: a person stopped it, nothing requeues it


class UserError(Exception):
    """Bad input from the user: a config key, a data folder, a checkpoint. Exit code 2."""


def is_main_process() -> bool:
    """Rank 0 of the job, known from the launcher's environment before (and without) an Accelerator."""
    return os.environ.get("RANK", "0") == "0"


def say(message: str, *, every_rank: bool = False) -> None:
    """One line for the user on stderr, from the main process only unless ``every_rank`` (then marked with the rank)."""
    if every_rank or is_main_process():
        rank = os.environ.get("RANK")
        prefix = "" if rank in (None, "0") else f"[rank {rank}] "
        print(f"{prefix}superconverge: {message}", file=sys.stderr, flush=True)


def report_error(message: str, echo: bool = True) -> None:
    """The clean message on stderr (unless not ``echo``) and, under ``accelerate launch``, as the launcher's "Root Cause".

    torchelastic ends a failed job with its own traceback and a summary of failed ranks; a rank's
    error file (the path it passes in TORCHELASTIC_ERROR_FILE) is what that summary shows, so the
    message is also the last thing a user reads there.
    """
    rank = os.environ.get("RANK")
    if echo:
        print(f"{'' if rank in (None, '0') else f'[rank {rank}] '}{message}", file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        Path(error_file).parent.mkdir(parents=True, exist_ok=True)
        Path(error_file).write_text(json.dumps({"message": message, "timestamp": int(time.time())}))


def report_error_on_every_rank(message: str, grace_seconds: float = 20.0) -> None:
    """``report_error``, then wait (at most ``grace_seconds``) until every rank has reported too.

    Bad input fails on every rank before any process group exists, and torchelastic SIGTERMs the
    other ranks as soon as the first one exits: without this a slower rank (still importing, under
    load) dies before it has said what was wrong. No process group is formed yet, so the ranks count
    themselves in the launcher's rendezvous store instead; a rank that never fails (an error only one
    rank sees) costs the others the grace period, not a hang.
    """
    report_error(message)
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world < 2 or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    from torch.distributed import TCPStore

    key = f"superconverge/reported/{env.get('TORCHELASTIC_RUN_ID', 'run')}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    deadline = time.monotonic() + grace_seconds
    try:
        store = TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=timedelta(seconds=5))
        store.add(key, 1)
        while store.add(key, 0) < world and time.monotonic() < deadline:  # add 0: read without waiting
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - no store to count in (its launcher gone): the message is out, exit now
        return
