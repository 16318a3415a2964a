"""Fixtures of the integration tests: a private PostgreSQL cluster (helpers in
``integration_helpers.py``)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_helpers import Postgres
from support import free_port

# --- PostgreSQL: a private cluster for one test module -------------------------------------------


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).resolve().parent
    pytest.fail(
        "PostgreSQL server binaries not found: run `bash scripts/ensure_postgres.sh` "
        "(installs Debian's postgresql package)"
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """initdb + pg_ctl in a temporary folder, 127.0.0.1 only, a free port, password auth.

    PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user
    the Debian package creates.
    """
    try:
        import psycopg2
    except ImportError:
        pytest.fail("psycopg2 is missing: it is pinned in requirements.lock (make install)")

    pg = _pg_bin()
    as_root = os.geteuid() == 0
    runas = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="pg-test-"))
    data, password = base / "data", "test-" + os.urandom(8).hex()
    (base / "pw").write_text(password + "\n")
    if as_root:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(base / "pw", "postgres", "postgres")
    port = free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*runas, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")

    run(
        str(pg / "initdb"),
        "-D",
        str(data),
        "-U",
        "mlflow",
        f"--pwfile={base / 'pw'}",
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "-E",
        "UTF8",
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base}"
    run(
        str(pg / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "pg.log"),
        "-o",
        options,
        "-w",
        "start",
    )
    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="mlflow", password=password, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        yield Postgres("127.0.0.1", port, "mlflow", password, "mlflow")
    finally:
        subprocess.run(
            [*runas, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)
