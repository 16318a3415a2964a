"""Helpers of the integration tests: an ``mlflow server``, PostgreSQL (the rest: ``support``).

Everything here starts real processes on 127.0.0.1 and stops them again when the test is done.
"""

from __future__ import annotations

import subprocess
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
