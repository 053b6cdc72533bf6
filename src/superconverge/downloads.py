"""Downloads shared by the ranks of a machine: data sets and pretrained weights.

They happen before the process group exists, so the ranks take turns on a file lock next to the
files: the first downloads, the others wait and then find what it wrote. Jobs sharing the folder
share the download too. urllib waits forever by default; a silent network must not hang every rank.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
from collections.abc import Iterator
from pathlib import Path

TIMEOUT_SECONDS = 60
LOCK_NAME = ".superconverge-download.lock"


@contextlib.contextmanager
def one_at_a_time(folder: Path) -> Iterator[None]:
    """Hold the machine-wide download lock of ``folder``, with a bounded wait for every socket."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    with open(folder / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        socket.setdefaulttimeout(TIMEOUT_SECONDS)
        try:
            yield
        finally:
            socket.setdefaulttimeout(previous)
