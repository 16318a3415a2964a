"""A private PostgreSQL cluster on 127.0.0.1, for the shared tracking server and the tests.

``initdb`` + ``pg_ctl`` from Debian's ``postgresql`` package (``scripts/ensure_debian_package.sh``
installs it), in a folder of our own: listening on 127.0.0.1 only, on a free port, no Unix
socket, password (SCRAM) authentication for every connection. No system cluster is touched.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user the
Debian package creates, and the folder is handed to it.

    cluster = start_postgres(databases=("mlflow",))     # a temporary folder, removed on stop
    engine = sqlalchemy.create_engine(cluster.database("mlflow").sqlalchemy_uri)
    cluster.stop()

Given a folder, the cluster persists there: a later :func:`start_postgres` on the same folder
starts it again with its data (the password is kept in ``<folder>/password``, mode 0600).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recommender.core.errors import RecommenderError
from recommender.core.processes import free_port

#: The cluster's superuser (also the owner of every database the stack creates).
SUPERUSER = "mlflow"
#: How long initdb, pg_ctl start and pg_ctl stop may take.
TIMEOUT_S = 120


class StackError(RecommenderError):
    """A service of the local stack cannot be started or stopped (the message says why)."""


@dataclass(frozen=True)
class Postgres:
    """How to reach one database of a running cluster."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def sqlalchemy_uri(self) -> str:
        """The URI with the password in it (for in-process use; never log or store it)."""
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}"
            f"/{self.database}"
        )

    @property
    def uri_without_password(self) -> str:
        """The URI for a process that gets the password as ``PGPASSWORD`` (libpq reads it), so
        the password stays off command lines (``ps``) and config files."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.database}"


def pg_bin() -> Path:
    """The folder of Debian's PostgreSQL server binaries (the newest version installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).resolve().parent
    raise StackError(
        "PostgreSQL server binaries (pg_ctl, initdb) not found under /usr/lib/postgresql/*/bin "
        "or on PATH: install Debian's postgresql package (`make test` does it through "
        "scripts/ensure_debian_package.sh)"
    )


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(args: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(
        [*_as_server_user(), *args], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if proc.returncode != 0:
        tail = log.read_text()[-2000:] if log and log.is_file() else ""
        raise StackError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")


class PostgresCluster:
    """A running cluster started by :func:`start_postgres`; :meth:`stop` ends it."""

    def __init__(self, folder: Path, port: int, password: str, temporary: bool) -> None:
        self.folder = folder
        self.port = port
        self.password = password
        self._temporary = temporary

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def database(self, name: str) -> Postgres:
        return Postgres("127.0.0.1", self.port, SUPERUSER, self.password, name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended); a temporary folder goes."""
        stop_postgres(self.folder)
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


def _hand_over(path: Path) -> None:
    """Under root, make ``path`` the server user's (PostgreSQL will not run as root)."""
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def start_postgres(
    folder: str | Path | None = None,
    databases: tuple[str, ...] = ("mlflow",),
    port: int | None = None,
) -> PostgresCluster:
    """Start a cluster in ``folder`` (a new temporary one when None) and create ``databases``.

    The cluster is initialised on first use; the databases that do not exist yet are created.
    Returns once it accepts connections.

    Raises:
        StackError: The binaries are missing, or initdb / the server failed (with its log).
    """
    import psycopg2

    binaries = pg_bin()
    temporary = folder is None
    base = Path(tempfile.mkdtemp(prefix="pg-")) if folder is None else Path(folder).resolve()
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    _hand_over(base)
    password_file, data, log = base / "password", base / "data", base / "postgres.log"
    try:
        if not (data / "PG_VERSION").is_file():
            password_file.write_text(f"{secrets.token_urlsafe(24)}\n")
            os.chmod(password_file, 0o600)
            _hand_over(password_file)
            _run(
                [
                    str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER,
                    f"--pwfile={password_file}", "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256", "-E", "UTF8",
                ],
                "initdb",
            )  # fmt: skip
        password = password_file.read_text().strip()
        port = port or free_port()
        # No Unix socket: a long folder path would exceed its 107-byte limit, and nothing here
        # connects locally; TCP on loopback only.
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories="
        _run(
            [
                str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                "-w", "-t", str(TIMEOUT_S), "start",
            ],
            f"starting PostgreSQL in {data}",
            log,
        )  # fmt: skip
        cluster = PostgresCluster(base, port, password, temporary)
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user=SUPERUSER, password=password, dbname="postgres"
            )
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                for name in databases:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
            conn.close()
        except BaseException:
            cluster.stop()
            raise
        return cluster
    except BaseException:
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
        raise


def postgres_running(folder: str | Path) -> bool:
    """Whether the cluster in ``folder`` has a live server (``pg_ctl status``)."""
    data = Path(folder) / "data"
    if not (data / "postmaster.pid").is_file():
        return False
    proc = subprocess.run(
        [*_as_server_user(), str(pg_bin() / "pg_ctl"), "-D", str(data), "status"],
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    return proc.returncode == 0


def stop_postgres(folder: str | Path) -> None:
    """Stop the cluster in ``folder`` if it runs (fast: open sessions are ended)."""
    if postgres_running(folder):
        data = Path(folder) / "data"
        _run(
            [str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            f"stopping PostgreSQL in {data}",
        )
