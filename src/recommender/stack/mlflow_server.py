"""``mlflow server`` on 127.0.0.1: runs and registry in PostgreSQL, proxied artifacts, a login.

The server proxies every artifact (``--artifacts-destination``: a folder, or ``s3://bucket`` with
the S3 endpoint and keys in the server's environment only), so clients need nothing but the
tracking URI and, with :class:`BasicAuth`, ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``.

With :class:`BasicAuth` the server runs MLflow's ``basic-auth`` app. Its user store lives in a
PostgreSQL database too (MLflow's default is a SQLite file, which several server workers or hosts
cannot share); MLflow creates and migrates its tables there on start. Database passwords reach the
server as ``PGPASSWORD`` (libpq reads it), so they appear neither on its command line nor in the
auth config file; the admin password is read only on the first start, to create the admin user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from recommender.core.processes import NotReady, free_port, start_in_group, stop_group, wait_http
from recommender.core.telemetry import QUIET, TELEMETRY_OFF
from recommender.stack.postgres import Postgres, StackError

#: How long a server may take to answer ``/health`` (it answers in ~15 s on 2 busy cores).
START_TIMEOUT_S = 180
#: The config keys of mlflow 3.17's basic-auth app (mlflow/server/auth/config.py).
AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


@dataclass(frozen=True)
class BasicAuth:
    """MLflow's basic-auth app: where its users live and who the first admin is.

    ``default_permission`` is what a user may do on an experiment or registered model nobody
    granted them anything on (READ, USE, EDIT, MANAGE or NO_PERMISSIONS).
    """

    database: Postgres
    admin_username: str
    admin_password: str
    #: Flask's secret key for the login page's CSRF token; the same in every worker.
    secret_key: str
    default_permission: str = "READ"
    #: Seconds a worker trusts a checked login. Each check is a scrypt hash (~0.4 s of CPU, seconds
    #: on a busy machine) and a register stage makes dozens of requests; the price is that a
    #: password change or a deleted user reaches the other workers only after this long. 0: off.
    login_cache_s: int = 60


@dataclass(frozen=True)
class S3Artifacts:
    """Artifacts in an S3 bucket the server (and only the server) writes with these keys."""

    destination: str  # s3://bucket[/prefix]
    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    #: boto3 wants a region to sign for; SeaweedFS accepts any.
    region: str = "us-east-1"

    def server_env(self) -> dict[str, str]:
        """The server's S3 settings and keys (MLflow's S3 store reads them; clients get none)."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }


@dataclass
class MlflowServer:
    """A running ``mlflow server``: where it answers, its process group and its log."""

    uri: str
    pid: int
    log: Path
    proc: subprocess.Popen | None = None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the server's process group (its workers too), SIGKILL if it lingers."""
        stop_group(self.proc if self.proc is not None else self.pid, timeout)


def write_auth_config(path: Path, auth: BasicAuth) -> Path:
    """The basic-auth app's ini (``MLFLOW_AUTH_CONFIG_PATH``); no password goes into it."""
    path.write_text(
        "# Written by recommender.stack. The admin password and the database password reach the\n"
        "# server through its environment (MLFLOW_AUTH_ADMIN_PASSWORD, PGPASSWORD), not here.\n"
        "[mlflow]\n"
        f"default_permission = {auth.default_permission}\n"
        f"database_uri = {auth.database.uri_without_password}\n"
        f"admin_username = {auth.admin_username}\n"
        f"authorization_function = {AUTHORIZATION_FUNCTION}\n"
        f"auth_cache_ttl_seconds = {auth.login_cache_s}\n"
    )
    os.chmod(path, 0o600)
    return path


def start_mlflow_server(
    backend: Postgres | str,
    folder: str | Path,
    *,
    port: int | None = None,
    artifacts: str | Path | S3Artifacts | None = None,
    auth: BasicAuth | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> MlflowServer:
    """Start ``mlflow server`` on 127.0.0.1 and return once ``/health`` answers.

    Args:
        backend: The runs and registry store: a PostgreSQL database, or any store URI (SQLite).
        folder: Where its log (``mlflow-server.log``) and auth config go.
        port: The port (default: a free one).
        artifacts: ``--artifacts-destination``: a folder (default ``folder/artifacts``) or S3.
        auth: Run the basic-auth app.
        workers: Server worker processes (with auth they share its PostgreSQL user store).
        env: The server's base environment (default: this process's); telemetry is turned off.
        timeout: Seconds to wait for ``/health``.

    The server runs in a session of its own (its pid leads the group :meth:`MlflowServer.stop`
    ends), so it outlives the caller unless stopped.

    Raises:
        StackError: It exited or did not answer in time (with the end of its log).
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    child = _server_env(env)
    if isinstance(backend, Postgres):
        backend_uri = backend.uri_without_password
        child["PGPASSWORD"] = backend.password
    else:
        backend_uri = backend
    if isinstance(artifacts, S3Artifacts):
        destination = artifacts.destination
        child.update(artifacts.server_env())
    else:
        destination = str(Path(artifacts or folder / "artifacts").resolve())

    args = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", destination,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    if auth is not None:
        if isinstance(backend, Postgres) and auth.database.password != backend.password:
            raise ValueError("the auth store and the backend store must share one PGPASSWORD")
        args += ["--app-name", "basic-auth"]
        config = write_auth_config(folder / "basic_auth.ini", auth)
        child.update(
            MLFLOW_AUTH_CONFIG_PATH=str(config),
            MLFLOW_AUTH_ADMIN_PASSWORD=auth.admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=auth.secret_key,
            PGPASSWORD=auth.database.password,
        )

    log = folder / "mlflow-server.log"
    proc = start_in_group(args, log, env=child, cwd=folder)
    server = MlflowServer(f"http://127.0.0.1:{port}", proc.pid, log, proc)
    try:
        _wait_healthy(server, proc, timeout)
    except BaseException:
        server.stop()  # never leave a half-started server behind
        raise
    return server


def _server_env(env: dict[str, str] | None) -> dict[str, str]:
    """``env`` (default: this process's) for the server: telemetry off, quiet, no client keys."""
    child = {**(os.environ if env is None else env), **TELEMETRY_OFF, **QUIET}
    # A client's settings are no business of the server (and its password no business of logs).
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        child.pop(key, None)
    child.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    # MLflow 3.17's server also starts a job runner (7 huey consumer processes, each importing
    # MLflow) for GenAI features this project does not use: it costs most of the start-up CPU.
    child.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return child


def _wait_healthy(server: MlflowServer, proc: subprocess.Popen, timeout: float) -> None:
    """Until ``/health`` answers 200; else a :class:`StackError` with the end of its log."""
    what = f"mlflow server at {server.uri}"
    try:
        wait_http(server.uri + "/health", timeout=timeout, proc=proc, what=what)
    except NotReady as exc:
        raise StackError(
            f"{exc}; the end of {server.log}:\n" + server.log.read_text()[-3000:]
        ) from None
