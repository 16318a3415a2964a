"""Helpers of the serving tests: a tiny packaged champion, and a real ``bentoml serve`` process.

Built once per session with the real components: synthetic data through ingest and preprocess,
3 epochs of training logged to a SQLite MLflow store, evaluation metrics on the same run, a
registered version with the ``champion`` alias (set with ``MlflowClient`` directly, as the register
stage would), then the package stage's own code: import into a BentoML store and ``bentoml build``.
Everything lives in a temporary folder; nothing touches the project's mlflow.db or bentoml/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recommender.telemetry import QUIET, TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "serving"
MODEL_NAME = "recommender-test"
SMALL = {"n_users": 150, "n_items": 200, "n_ratings": 6000}


@dataclass(frozen=True)
class Packaged:
    """What the session fixture built."""

    root: Path
    bentoml_home: Path
    tracking_uri: str
    params: Any
    processed: Any
    bundle: Any
    record: dict[str, Any]
    version: str


def env_for_children(packaged: Packaged) -> dict[str, str]:
    """The environment a ``bentoml`` subprocess needs to see the test stores, quietly."""
    env = {**os.environ, **TELEMETRY_OFF, **QUIET}
    env["BENTOML_HOME"] = str(packaged.bentoml_home)
    env["MLFLOW_TRACKING_URI"] = packaged.tracking_uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def build_packaged(root: Path, uri: str) -> Packaged:
    import mlflow
    from mlflow import MlflowClient

    from recommender.bundle import ModelBundle
    from recommender.config import parse_params
    from recommender.data import load_dataset
    from recommender.data.schema import write_dataset
    from recommender.evaluation_run import evaluate_and_log
    from recommender.packaging import package
    from recommender.preprocess import preprocess, read_interim, write_processed
    from recommender.training_run import BUNDLE_DIR, train_and_log

    params = parse_params(
        {
            "synthetic": SMALL,
            "train": {"epochs": 3},
            "tracking": {"experiment": "serving-test", "registered_model": MODEL_NAME},
        }
    )
    write_dataset(load_dataset(params), root / "interim")
    processed = preprocess(read_interim(root / "interim"), params.preprocess, params.seed)
    write_processed(processed, root / "processed")

    # Artifacts in the temporary folder, not ./mlruns of whatever the working directory is.
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("serving-test", artifact_location=(root / "artifacts").as_uri())
    run = train_and_log(processed, params, root / "processed", root / "models", root / "hist.csv")
    evaluate_and_log(
        params, root / "processed", root / "models", root / "metrics.json", root / "plots",
        root / "hist.csv",
    )  # fmt: skip

    client = MlflowClient(uri)
    version = mlflow.register_model(run["model_uri"], MODEL_NAME).version
    client.set_model_version_tag(MODEL_NAME, version, "gate", "passed")
    client.set_registered_model_alias(MODEL_NAME, "champion", version)

    record = package(
        params, SERVING, root / "package.json", root / "bentoml", ROOT / "requirements.lock"
    )
    bundle = ModelBundle.load(root / "models" / BUNDLE_DIR)
    return Packaged(root, root / "bentoml", uri, params, processed, bundle, record, str(version))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``bentoml serve`` process."""

    url: str
    proc: subprocess.Popen
    log: Path


def start_server(target: str, env: dict[str, str], log: Path, timeout: float = 120) -> Server:
    """``bentoml serve target`` on 127.0.0.1 and a free port; returns once /readyz says 200."""
    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        stop_server(server)  # never leave a server behind, whatever went wrong
        raise
    return server


def _wait_ready(server: Server, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(
                f"bentoml serve exited with {server.proc.returncode}:\n{server.log.read_text()}"
            )
        try:
            if requests.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or busy loading the model
            pass
        time.sleep(0.5)
    raise AssertionError(f"bentoml serve not ready after {timeout} s:\n{server.log.read_text()}")


def stop_server(server: Server) -> None:
    """Stop the server's whole process group (the arbiter and its workers)."""
    import signal

    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
