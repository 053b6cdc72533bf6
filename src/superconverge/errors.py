"""The one exception type that reaches the user as a clean message instead of a traceback, and how it is said."""

import json
import os
import sys
import time
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: a config key, a data folder, a checkpoint. Exit code 2."""


def report_error(message: str) -> None:
    """The clean message on stderr and, under ``accelerate launch``, as the launcher's "Root Cause".

    torchelastic ends a failed job with its own traceback and a summary of failed ranks; a rank's
    error file (the path it passes in TORCHELASTIC_ERROR_FILE) is what that summary shows, so the
    message is also the last thing a user reads there.
    """
    rank = os.environ.get("RANK")
    print(f"{'' if rank in (None, '0') else f'[rank {rank}] '}{message}", file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        Path(error_file).parent.mkdir(parents=True, exist_ok=True)
        Path(error_file).write_text(json.dumps({"message": message, "timestamp": int(time.time())}))
