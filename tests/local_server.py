"""A real HTTP server on 127.0.0.1 for download tests: serves a folder and counts the downloads."""

from __future__ import annotations

import collections
import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that closes early (torchvision probes for redirects with a GET it drops) is not a test failure


class CountingServer:
    """``served[path]``: downloads of each file (torchvision's redirect probes not counted)."""

    def __init__(self, folder: Path, delay: float = 1.0) -> None:
        self.served: collections.Counter[str] = collections.Counter()
        counts, lock = self.served, threading.Lock()

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                # torchvision first probes for redirects with a GET marked "Method: HEAD" that it drops
                if self.headers.get("Method") != "HEAD":
                    with lock:
                        counts[self.path] += 1
                    time.sleep(delay)  # a slow network: ranks that did not wait for one another would all download
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
