"""Helpers of the integration tests: an ``mlflow server``, PostgreSQL (the rest: ``support``).

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

from support import BIN, child_env, start_server


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URI and where it keeps artifacts."""

    uri: str
    artifacts: Path


def start_mlflow_server(backend_uri: str, folder: Path) -> tuple[subprocess.Popen, MlflowServer]:
    """``mlflow server`` on a free loopback port, artifacts proxied into ``folder/artifacts``."""
    artifacts = folder / "artifacts"
    args = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--workers",
        "1",
    ]
    server = start_server(args, "/health", child_env(), folder / "mlflow-server.log")
    return server.proc, MlflowServer(server.url, artifacts)


@dataclass(frozen=True)
class Postgres:
    """A running private PostgreSQL cluster and a database for MLflow in it."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def sqlalchemy_uri(self) -> str:
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}"
            f"/{self.database}"
        )


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
