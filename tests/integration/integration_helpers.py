"""Helpers of the integration tests: an ``mlflow server``, a 503 server (the rest: ``support``).

Everything here starts real processes on 127.0.0.1 and stops them again when the test is done.
"""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import child_env

from recommender.stack.postgres import Postgres

__all__ = ["MlflowServer", "Postgres", "start_mlflow_server", "unavailable_server"]


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URI and where it keeps artifacts."""

    uri: str
    artifacts: Path


def start_mlflow_server(
    backend_uri: str | Postgres, folder: Path, **options: Any
) -> tuple[subprocess.Popen, MlflowServer]:
    """``mlflow server`` on a free loopback port, artifacts proxied into ``folder/artifacts``
    (or ``artifacts=``): :func:`recommender.stack.mlflow_server.start_mlflow_server`, the one the
    ``python -m recommender.stack`` CLI runs, with ``options`` passed on (``auth=``, ...)."""
    from recommender.stack.mlflow_server import start_mlflow_server as start

    server = start(backend_uri, folder, env=child_env(), **options)
    assert server.proc is not None
    destination = options.get("artifacts")
    local = Path(destination) if isinstance(destination, str | Path) else folder / "artifacts"
    return server.proc, MlflowServer(server.uri, local)


@contextlib.contextmanager
def unavailable_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback answering every request 503; yields its URI and the paths
    it was asked for, so a test can count requests (fast failure measured without a clock)."""
    seen: list[str] = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
