"""Helpers of the integration tests: tiny params, ports, child processes, scratch DVC repos.

Everything here starts real processes on 127.0.0.1 and stops them again when the test is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recommender.config import Params, parse_params
from recommender.telemetry import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: The tiny dataset every integration test trains on (about 6 s per model on 2 cores).
TINY = {
    "synthetic": {"n_users": 150, "n_items": 200, "n_ratings": 6000},
    "validate": {"min_ratings": 100},
    "train": {"epochs": 4, "batch_size": 256, "learning_rate": 0.01},
    "register": {"bootstrap_resamples": 500},
}


def tiny_params(**overrides: dict) -> Params:
    """Params for the tiny dataset, with per-section overrides merged in (one level deep)."""
    raw: dict = {name: dict(values) for name, values in TINY.items()}
    for name, values in overrides.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_params(raw)


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs.

    The socket stays bound but never listens, so no other process (another test's server) can
    take the port meanwhile, and a client gets "connection refused" at once.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


_MLFLOW_TARGETS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for processes a test starts: telemetry off, loopback never proxied.

    MLflow's ``set_tracking_uri``/``set_registry_uri`` write ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` into this process's environment, so after any in-process MLflow use
    they may name another test's store: a child gets them only when ``extra`` names them.
    """
    env = {k: v for k, v in os.environ.items() if k not in _MLFLOW_TARGETS}
    env.update(TELEMETRY_OFF)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not ready after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True``, its workers included."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URI and where it keeps artifacts."""

    uri: str
    artifacts: Path


def start_mlflow_server(backend_uri: str, folder: Path) -> tuple[subprocess.Popen, MlflowServer]:
    """``mlflow server`` on a free loopback port, artifacts proxied into ``folder/artifacts``."""
    port = free_port()
    artifacts = folder / "artifacts"
    log = folder / "mlflow-server.log"
    args = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            args,
            cwd=folder,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, MlflowServer(uri, artifacts)


# --- scratch DVC repositories --------------------------------------------------------------------


def run_checked(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail the test with its output."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_scratch_repo(folder: Path) -> Path:
    """A git + DVC repository holding a copy of the project's pipeline and code."""
    repo = folder / "project"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("pipeline", "src", ".dvc"):
        shutil.copytree(
            ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache")
        )
    env = child_env()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run_checked(["git", "init", "-q"], repo, env)
    run_checked([*git, "add", "-A"], repo, env)
    run_checked([*git, "commit", "-qm", "init"], repo, env)
    return repo


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
