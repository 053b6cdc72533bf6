"""A real HTTP server on 127.0.0.1 for download tests: serves a folder and counts the requests."""

from __future__ import annotations

import collections
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class CountingServer:
    def __init__(self, folder: Path) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        counts, lock = self.requests, threading.Lock()

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with lock:
                    counts[self.path] += 1
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
