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

import os
import signal
import socket
import threading
import time
from datetime import timedelta

from accelerate import Accelerator

from superconverge.errors import ExitCode, report_error, say
from superconverge.orphan import LAUNCHER_GONE, launcher_pid

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def under_launcher() -> bool:
    """Started by torchelastic (``accelerate launch``/``torchrun``), whose death must stop this rank."""
    return "TORCHELASTIC_RUN_ID" in os.environ


class StopSignals:
    """Scoped stop requests: ``with StopSignals() as stop: ...``; ``stop.agreed(accelerator)`` at boundaries."""

    def __init__(self, orphan_grace_seconds: float = 120.0, poll_seconds: float = 0.5, watch_parent: bool | None = None) -> None:
        self.orphan_grace_seconds, self.poll_seconds = orphan_grace_seconds, poll_seconds
        self.watch_parent = under_launcher() if watch_parent is None else watch_parent
        self.signals_seen = 0
        self.reason: str | None = None
        self.training = False  # set by the trainer once its loop (and so a checkpoint) can answer a stop
        self._previous: dict[int, object] = {}
        self._closed = threading.Event()

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
        self._request(signal.Signals(signum).name)
        if self.signals_seen > 1:
            os._exit(128 + signum)  # a second signal: stop now (the last checkpoint stays whole)

    def watch_peer_nodes(self, timeout_seconds: float, interval_seconds: float = 2.0) -> None:
        """On a multi-node job, stop this node when another one stops answering (see NodeHeartbeat)."""
        if NodeHeartbeat.wanted():
            NodeHeartbeat(timeout_seconds, interval_seconds, self._closed).start()

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

    def start(self) -> None:
        threading.Thread(target=self._run, name="superconverge-node-heartbeat", daemon=True).start()

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
