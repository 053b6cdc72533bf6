"""A rank whose launcher dies while the rank is still starting (importing torch) must not carry on alone.

``StopSignals`` watches the parent pid from the start of the run, but importing torch takes seconds:
a launcher killed meanwhile has re-parented the rank (to init or a subreaper) before any watch could
record it. So the package's first import, under torchelastic, records the launcher then and asks
the kernel for ``LAUNCHER_GONE`` when it dies (``prctl(PR_SET_PDEATHSIG)``; torchelastic starts the
ranks from its main thread, whose death is the process's). Until ``StopSignals`` takes the signal
over (to checkpoint instead), it exits at once: there is nothing to save yet. A launcher gone even
before that first import has re-parented the rank to init, which is checked right after.
Light imports only: this runs before torch is imported.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

from superconverge.errors import ExitCode, say

LAUNCHER_GONE = getattr(signal, "SIGRTMIN", None)  # a real-time signal nobody else sends: here it means "the launcher died"
PR_SET_PDEATHSIG = 1
RANK_PID = "SUPERCONVERGE_RANK_PID"  # set in the rank, so its own children (a spawned loader worker) leave it be

_launcher: int | None = None


def launcher_pid() -> int | None:
    """The launcher's pid as recorded at this rank's first import, or None when not started by torchelastic."""
    return _launcher


def die_with_launcher() -> None:
    """Under torchelastic, from the first import on: stop when the launcher dies, and at once if it already has."""
    global _launcher
    if not _is_a_starting_rank():
        return  # StopSignals' watch alone, from its start
    os.environ[RANK_PID] = str(os.getpid())
    signal.signal(LAUNCHER_GONE, _exit_orphaned)
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(LAUNCHER_GONE), 0, 0, 0) != 0:
        return
    _launcher = os.getppid()
    if _launcher == 1 and not _runs_this_python(1):  # re-parented to init before the line above: no signal will come
        _launcher = None  # which pid it had is lost
        _exit_orphaned(LAUNCHER_GONE, None)


def _is_a_starting_rank() -> bool:
    """A process torchelastic started (not one its rank started), on Linux, importing from its main thread (handlers)."""
    env = os.environ
    return sys.platform.startswith("linux") and "TORCHELASTIC_RUN_ID" in env and env.get(RANK_PID) != str(os.getppid()) and \
        threading.current_thread() is threading.main_thread()  # fmt: skip


def _runs_this_python(pid: int) -> bool:
    """Whether ``pid`` runs this interpreter, as a launcher that is a container's pid 1 does (init does not)."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.readlink("/proc/self/exe")
    except OSError:  # another user's process (root's init): not this rank's launcher
        return False


def _exit_orphaned(signum: int, frame) -> None:
    launcher = f"the launcher (pid {_launcher})" if _launcher else "the launcher"
    say(f"{launcher} is gone and this rank has nothing to checkpoint: exiting", every_rank=True)
    os._exit(ExitCode.ORPHAN)
