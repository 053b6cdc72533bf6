"""Stop requests for the whole run: preemption signals and a launcher that died.

SIGUSR1 (SLURM's early warning), SIGTERM and SIGINT (Ctrl-C, which torchelastic passes on to every
rank) only set a flag; the ranks agree on it at step boundaries (and between the start-up stages)
through one small all-reduce, checkpoint, and stop. A second signal stops at once.
The handlers are installed before any work and restored when the run ends, like Lightning's
signal connector, so a run can be made in-process and leave the process as it found it.

Under ``accelerate launch`` each rank runs in a session of its own: a launcher killed by SIGKILL
or the OOM killer, or by a SIGUSR1 it does not handle, leaves its ranks training unattended.
No library watches for that, so a thread here notices the parent pid change (the rank is
re-parented; the launcher is the one ``superconverge.orphan`` recorded at the first import, since it may die while
torch is imported) and asks for the same checkpoint-and-stop; if the ranks cannot agree within a grace
period (another rank died too, a rank is stuck in a rendezvous) the process exits hard, which
loses only the work since the last checkpoint: checkpoints are written atomically.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import timedelta

from accelerate import Accelerator

from superconverge.errors import ExitCode, report_error, say
from superconverge.orphan import LAUNCHER_GONE, launcher_pid

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
# The same signal again this soon after the first is one request delivered twice (SLURM signals every process of a
# step, a `scancel` TERM reaches the batch shell's whole process group, a launcher passes on what its ranks also got);
# a person's second Ctrl-C to stop at once comes later.
DUPLICATE_SECONDS = 1.0


def under_launcher() -> bool:
    """Started by torchelastic (``accelerate launch``/``torchrun``), whose death must stop this rank."""
    return "TORCHELASTIC_RUN_ID" in os.environ


# A thread still inside a TCPStore call when the interpreter finalizes is ended by pthread_exit, whose forced unwind
# through C++ frames aborts the process ("terminate called without an active exception", exit -6 after a finished
# run). So the watches that use the store are told to stop (their event) and joined before the process exits; a
# store call returns within its timeout (5 s or the watch's interval).
STORE_THREAD_JOIN_SECONDS = 15.0


def close_store_threads(threads: list[threading.Thread]) -> None:
    """Join the store-using watch threads, whose stop event is already set."""
    for thread in threads:
        thread.join(STORE_THREAD_JOIN_SECONDS)
    threads.clear()


class StopSignals:
    """Scoped stop requests: ``with StopSignals() as stop: ...``; ``stop.agreed(accelerator)`` at boundaries."""

    def __init__(self, orphan_grace_seconds: float = 120.0, poll_seconds: float = 0.5, watch_parent: bool | None = None) -> None:
        self.orphan_grace_seconds, self.poll_seconds = orphan_grace_seconds, poll_seconds
        self.watch_parent = under_launcher() if watch_parent is None else watch_parent
        self.signals_seen = 0
        self._first: tuple[int, float] | None = None  # the first stop signal and when it came
        self.reason: str | None = None
        self.training = False  # set by the trainer once its loop (and so a checkpoint) can answer a stop
        self._previous: dict[int, object] = {}
        self._closed = threading.Event()
        self._store_threads: list[threading.Thread] = []  # joined on exit (see close_store_threads)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python lets only the main thread set handlers
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            if self.watch_parent and launcher_pid() is not None:  # the watch below answers the launcher's death from now on
                self._previous[LAUNCHER_GONE] = signal.signal(LAUNCHER_GONE, signal.SIG_IGN)
        if self.watch_parent:
            parent = launcher_pid() or os.getppid()  # recorded at the first import: the launcher may have died since
            threading.Thread(target=self._watch, args=(parent,), name="superconverge-parent-watch", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closed.set()
        close_store_threads(self._store_threads)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signals_seen > 0

    @property
    def exit_code(self) -> int:
        """What a run stopped by this request exits with: Ctrl-C's own code, else the requeue code."""
        return ExitCode.INTERRUPTED if self.reason == signal.SIGINT.name else ExitCode.REQUEUE

    def _on_signal(self, signum: int, frame) -> None:
        first = self._first
        if first is not None and first[0] == signum and time.monotonic() - first[1] < DUPLICATE_SECONDS:
            return  # the same request delivered twice (by the launcher or batch script and directly): one request
        self._first = self._first or (signum, time.monotonic())
        self._request(signal.Signals(signum).name)
        if self.signals_seen > 1:
            os._exit(128 + signum)  # a second signal: stop now (the last checkpoint stays whole)

    def watch_peer_nodes(self, timeout_seconds: float, interval_seconds: float = 2.0) -> None:
        """On a multi-node job, stop this node when another one stops answering (see NodeHeartbeat)."""
        if NodeHeartbeat.wanted():
            self._store_threads.append(NodeHeartbeat(timeout_seconds, interval_seconds, self._closed).start())

    def _request(self, reason: str) -> None:
        self.signals_seen += 1
        self.reason = self.reason or reason

    def _watch(self, parent: int) -> None:
        while not self._closed.wait(self.poll_seconds):
            if os.getppid() != parent:
                break
        else:
            return
        if not self.training:  # nothing to checkpoint yet, and a rank may be stuck in a rendezvous: go now
            say(f"the launcher (pid {parent}) is gone before training: exiting", every_rank=True)
            os._exit(ExitCode.ORPHAN)
        say(f"the launcher (pid {parent}) is gone: checkpointing and stopping", every_rank=True)
        self._request("launcher gone")
        if not self._closed.wait(self.orphan_grace_seconds):
            say("could not stop cleanly without the launcher: exiting", every_rank=True)
            os._exit(ExitCode.ORPHAN)

    def agreed(self, accelerator: Accelerator) -> bool:
        """True on every rank once any rank has a stop request (a collective: call it on all ranks alike)."""
        if self.requested:
            accelerator.set_trigger()
        return accelerator.check_trigger()

    def watch_progress(self, stall_timeout_setting: float | str) -> None:
        """Under a multi-process launch, stop every rank when one stalls (see ProgressWatchdog) until this scope ends."""
        thread = ProgressWatchdog.start_if_wanted(stall_timeout_setting, self._closed)
        self._store_threads += [thread] if thread is not None else []


class NodeHeartbeat:
    """A node that dies before its peers' collectives can fail leaves them waiting for
    ``trainer.collective_timeout_minutes``: a rendezvous, a broadcast or a range-test all-reduce
    that never completes. So each node's local rank 0 bumps a counter of its own in the rendezvous
    store (served by node rank 0's launcher from before any worker starts) every few seconds, from a
    thread that runs whatever the main thread waits on, and reads the others'. A counter that has not
    moved for ``timeout`` seconds (or a store that has not answered for as long) names the node that
    is gone, and this node exits; its launcher then stops its other ranks. torchelastic's own health
    checks watch its agents, not a job whose agents are alive but whose ranks wait forever.
    """

    def __init__(self, timeout: float, interval: float, closed: threading.Event) -> None:
        self.timeout, self.interval, self.closed = timeout, interval, closed
        self.node, self.nodes = int(os.environ["GROUP_RANK"]), int(os.environ["GROUP_WORLD_SIZE"])
        run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.prefix = f"superconverge/heartbeat/{run}"

    @staticmethod
    def wanted() -> bool:
        """More than one node, this process is its node's first, and node rank 0's launcher serves the store."""
        env = os.environ
        return under_launcher() and int(env.get("GROUP_WORLD_SIZE", "1")) > 1 and env.get("LOCAL_RANK") == "0" and \
            env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # fmt: skip

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="superconverge-node-heartbeat", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        from torch.distributed import TCPStore

        heard = {node: (-1, time.monotonic()) for node in range(self.nodes) if node != self.node}
        store_heard, store = time.monotonic(), None
        while not self.closed.wait(self.interval):
            try:
                if store is None:
                    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                     timeout=timedelta(seconds=max(5.0, self.interval)))  # fmt: skip
                    store.set(f"{self.prefix}/host/{self.node}", socket.gethostname())
                store.add(f"{self.prefix}/{self.node}", 1)
                counts = {node: store.add(f"{self.prefix}/{node}", 0) for node in heard}  # add 0: read without waiting
                store_heard = now = time.monotonic()
            except Exception:  # noqa: BLE001 - the store (node rank 0's launcher) not answering
                store = None
                if time.monotonic() - store_heard > self.timeout and not self.closed.is_set():
                    self._lost(f"the rendezvous store at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} (machine rank 0's "
                               f"launcher) has not answered for {self.timeout:.0f} s")  # fmt: skip
                continue
            for node, count in counts.items():
                if count != heard[node][0]:
                    heard[node] = (count, now)
                elif now - heard[node][1] > self.timeout and not self.closed.is_set():
                    host = store.get(f"{self.prefix}/host/{node}").decode() if store.check([f"{self.prefix}/host/{node}"]) else "?"
                    self._lost(f"machine rank {node} (host {host}) has not answered for {self.timeout:.0f} s "
                               "(trainer.heartbeat_timeout_seconds): its launcher or its node is gone")  # fmt: skip

    @staticmethod
    def _lost(what: str) -> None:
        report_error(f"superconverge: error: {what}. Stopping this node too; rerunning the job continues from the last checkpoint")
        os._exit(ExitCode.PEER_LOST)


# The stall rule (trainer.stall_timeout=auto). A rank's work all ranks share (range test, training,
# evaluation) advances in micro-batches whose time the rank measures itself: a rank making no progress
# for STALL_FACTOR times its slowest recent interval is stuck, not slow, since a step's time varies far less
# than that between neighbours; STALL_MINIMUM_SECONDS keeps fast steps (0.1 s) clear of a pause for a plot
# or a garbage collection, and still ends a stuck job within minutes. Before a phase's first whole interval
# (its loader's workers starting, compilation) the slowest start that phase had before counts, and a phase
# never started before gets STALL_FIRST_SECONDS, below the collective timeout's 120 minutes.
STALL_MINIMUM_SECONDS = 120.0
STALL_FACTOR = 10.0
STALL_FIRST_SECONDS = 1800.0
RECENT_INTERVALS = 50


def stall_timeout(fixed: float | None, slowest: float | None) -> float:
    """Seconds without progress that make a rank stalled: ``fixed`` (trainer.stall_timeout in seconds) or the auto rule."""
    if fixed is not None:
        return fixed
    if slowest is None:
        return STALL_FIRST_SECONDS
    return max(STALL_MINIMUM_SECONDS, STALL_FACTOR * slowest)


@dataclass(frozen=True)
class ProgressRecord:
    """What a rank publishes: its place in the shared work (``seq``-th phase, ``count``-th batch of it) and how long it
    may go without progress there (None: between phases or saving, where it is not judged)."""

    seq: int = 0
    count: int = 0
    phase: str = ""
    unit: str = ""
    step: int = 0
    timeout: float | None = None

    @property
    def place(self) -> tuple[int, int]:
        return self.seq, self.count


class Progress:
    """This rank's progress, written by the main thread (hooks in the range test, training and evaluation loops) and
    read by ProgressWatchdog's thread. Every rank runs the same phases with the same number of batches each
    (Accelerate's even batches, RankSampler's padding), so ranks compare by place."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.fixed = clock, None  # fixed: trainer.stall_timeout in seconds, None for auto
        self.record = ProgressRecord()
        self.intervals: deque[float] = deque(maxlen=RECENT_INTERVALS)
        self.starts: dict[str, float] = {}  # each phase's slowest start: from entering it to its second batch
        self.entered = self.last = 0.0

    def enter(self, phase: str, unit: str) -> None:
        """A phase of shared work begins; a stall in it is named with its ``unit`` and the step of the last ``bump``."""
        self.entered = self.last = self.clock()
        self.intervals.clear()
        timeout = stall_timeout(self.fixed, self.starts.get(phase))
        self.record = ProgressRecord(self.record.seq + 1, 0, phase, unit, 0, timeout)

    def bump(self, step: int) -> None:
        """A batch of the phase has arrived (so a rank stuck reading its data stays behind its peers)."""
        now, record = self.clock(), self.record
        if record.count == 1:
            self.starts[record.phase] = max(self.starts.get(record.phase, 0.0), now - self.entered)
        elif record.count > 1:
            self.intervals.append(now - self.last)
        self.last = now
        slowest = max(self.intervals) if self.intervals else self.starts.get(record.phase)
        self.record = replace(record, count=record.count + 1, step=step, timeout=stall_timeout(self.fixed, slowest))

    def leave(self) -> None:
        self.record = replace(self.record, timeout=None)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Inside a phase, work that is not its batches (a checkpoint save): not judged, and not an interval."""
        held, self.record = self.record, replace(self.record, timeout=None)
        try:
            yield
        finally:
            self.last, self.record = self.clock(), held


PROGRESS = Progress()  # this process's: the loops' hooks write it whether or not a watchdog reads it


def find_stalled(records: dict[int, ProgressRecord], seen: dict[int, tuple[ProgressRecord, float]], now: float) -> int | None:
    """The rank that is behind another one and has not moved for its own timeout; ``seen``: when each record last changed.

    Only a rank behind is named: its peers wait for it in a collective (and make no progress either).
    """
    for rank, record in records.items():
        if seen.get(rank, (None, 0.0))[0] != record:
            seen[rank] = (record, now)
    lead = max(record.place for record in records.values())
    for rank, record in sorted(records.items()):
        if record.timeout is not None and record.place < lead and now - seen[rank][1] > record.timeout:
            return rank
    return None


class ProgressWatchdog:
    """A rank that stops progressing without dying (a data reader blocked on a hung file system) leaves its peers in
    a collective for ``trainer.collective_timeout_minutes``. So a thread on every rank publishes PROGRESS in the
    rendezvous store every ``interval`` seconds and reads the other ranks'; the first to see a rank stalled (see
    find_stalled) claims the verdict, says it in one line and exits 69; every other rank, the stalled one too, reads
    the verdict and exits 69 as well. An exit during a save is safe: checkpoints are written to a hidden folder and
    renamed (checkpoint.CheckpointStore). A rank whose own thread cannot run is killed by the launcher once its
    peers have exited.
    """

    def __init__(self, progress: Progress, closed: threading.Event, interval: float) -> None:
        self.progress, self.closed, self.interval = progress, closed, interval
        self.rank, self.world, self.host = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), socket.gethostname()
        run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.prefix = f"superconverge/progress/{run}"
        self.hosts: dict[int, str] = {}

    @staticmethod
    def wanted() -> bool:
        env = os.environ
        return under_launcher() and int(env.get("WORLD_SIZE", "1")) > 1 and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"

    @classmethod
    def start_if_wanted(cls, stall_timeout_setting: float | str, closed: threading.Event) -> threading.Thread | None:
        PROGRESS.fixed = None if stall_timeout_setting == "auto" else float(stall_timeout_setting)
        if not cls.wanted():
            return None
        interval = min(2.0, (PROGRESS.fixed or STALL_MINIMUM_SECONDS) / 5)
        thread = threading.Thread(target=cls(PROGRESS, closed, interval)._run, name="superconverge-progress-watch", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        store, seen = None, {}
        while not self.closed.is_set():  # at once, then every interval: a rank that blocks soon after it starts is seen
            try:
                store = store if store is not None else self._connect()
                records = self._exchange(store)
            except Exception:  # noqa: BLE001 - the store not answering: the heartbeat and the orphan watch handle a lost launcher
                store = None
            else:
                stalled = find_stalled(records, seen, time.monotonic())
                if stalled is not None and not self.closed.is_set():
                    self._declare(store, stalled, records[stalled], time.monotonic() - seen[stalled][1])
            self.closed.wait(self.interval)

    def _connect(self):
        from torch.distributed import TCPStore

        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=max(5.0, self.interval)))  # fmt: skip
        store.set(f"{self.prefix}/host/{self.rank}", self.host)
        return store

    def _exchange(self, store) -> dict[int, ProgressRecord]:
        """Publish this rank's record, exit on a verdict, and read every rank's record."""
        store.set(f"{self.prefix}/{self.rank}", json.dumps(asdict(self.progress.record)))
        if store.check([f"{self.prefix}/verdict"]):
            self._exit(store, store.get(f"{self.prefix}/verdict").decode(), said=False)
        return self._read(store)

    def _read(self, store) -> dict[int, ProgressRecord]:
        records = {self.rank: self.progress.record}
        for rank in range(self.world):
            key = f"{self.prefix}/{rank}"
            if rank != self.rank and store.check([key]):
                records[rank] = ProgressRecord(**json.loads(store.get(key)))
        return records

    def _declare(self, store, rank: int, record: ProgressRecord, silent: float) -> None:
        host_key = f"{self.prefix}/host/{rank}"
        host = store.get(host_key).decode() if store.check([host_key]) else "?"
        rule = f"{self.progress.fixed:g} s" if self.progress.fixed is not None else \
            f"auto: {STALL_FACTOR:g} x its slowest recent batch, at least {STALL_MINIMUM_SECONDS:.0f} s"  # fmt: skip
        message = (f"superconverge: error: rank {rank} (host {host}) has made no progress for {silent:.0f} s in {record.phase} at "
                   f"{record.unit} {record.step} (trainer.stall_timeout={rule}): its data reading or its device is stuck. "
                   "Stopping every rank; rerunning continues from the last checkpoint")  # fmt: skip
        if store.add(f"{self.prefix}/claim", 1) == 1:  # one rank says it
            store.set(f"{self.prefix}/verdict", message)
            self._exit(store, message, said=True)

    def _exit(self, store, message: str, said: bool) -> None:
        """Exit 69 together: a rank leaving first breaks its peers' collectives, which would raise (and print) before
        their own watch reads the verdict. So stderr goes quiet once the verdict is said, and every rank whose watch can
        run counts itself in and waits (a few seconds at most) for the others before exiting."""
        report_error(message, echo=False)  # every rank's error file holds it: the launcher's summary shows it as the cause
        if said:  # to the file descriptor: the range test redirects sys.stderr while torch-lr-finder runs
            os.write(2, f"{'' if self.rank == 0 else f'[rank {self.rank}] '}{message}\n".encode())
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        try:
            key, deadline = f"{self.prefix}/exiting", time.monotonic() + 2 * self.interval + 5
            store.add(key, 1)
            while store.add(key, 0) < self.world and time.monotonic() < deadline:  # add 0: read without waiting
                time.sleep(0.01)
        finally:
            os._exit(ExitCode.PEER_LOST)
