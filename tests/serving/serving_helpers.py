"""Helpers of the serving tests: a tiny champion made by the real stages, and a real server.

Built once per session with the real components, in a temporary folder (nothing touches the
project's mlflow.db or bentoml/): synthetic data through ingest and preprocess, a short training
run logged to a SQLite MLflow store, evaluation metrics on the same run, then the register stage
(which versions the model and, with no champion yet, promotes it through the gate) and the
package stage's own code: import into a BentoML store and ``bentoml build``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from support import ROOT, Server, child_env, start_server, tiny_params

SERVING = ROOT / "serving"
MODEL_NAME = "recommender-test"


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
    return child_env(
        BENTOML_HOME=str(packaged.bentoml_home), MLFLOW_TRACKING_URI=packaged.tracking_uri
    )


@contextmanager
def serving_env(root: Path, uri: str) -> Iterator[Path]:
    """Telemetry off, MLflow on ``uri`` and BentoML's store under ``root``; yields the store.

    BentoML fixes its store once per process: a module fixture that comes after the session's
    packaged champion in the same worker shares that store (its model has a name of its own).
    """
    import pytest

    from recommender.core.telemetry import QUIET, TELEMETRY_OFF

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**TELEMETRY_OFF, **QUIET}.items():
            mp.setenv(key, value)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.setenv("BENTOML_HOME", str(root / "bentoml"))
        from recommender.serving.bentoml_internals import bentoml_home

        yield bentoml_home()


def build_packaged(
    root: Path, uri: str, store: Path, params: Any = None, *, must_promote: bool = True
) -> Packaged:
    """Ingest -> preprocess -> train -> evaluate -> register -> package, in ``root``.

    With ``must_promote`` off, a first version that loses the gate (a test whose subject is not
    the gate) is made champion by hand, so the package stage has one to package.
    """
    import mlflow
    from mlflow import MlflowClient

    from recommender import tracking
    from recommender.core.schema import write_dataset
    from recommender.data import load_dataset
    from recommender.dataset.processed import write_processed
    from recommender.evaluation.run import evaluate_and_log
    from recommender.preprocess.split import preprocess, read_interim
    from recommender.registry.register import register_and_gate
    from recommender.scoring.bundle import ModelBundle
    from recommender.serving.packaging import package
    from recommender.training.run import train_and_log

    if params is None:
        params = tiny_params(
            train={"epochs": 3},
            tracking={"experiment": "serving-test", "registered_model": MODEL_NAME},
        )
    write_dataset(load_dataset(params), root / "interim")
    processed = preprocess(read_interim(root / "interim"), params.preprocess, params.seed)
    write_processed(processed, root / "processed")

    # Artifacts in the temporary folder, not ./mlruns of whatever the working directory is.
    mlflow.set_tracking_uri(uri)
    experiment = params.tracking.experiment
    mlflow.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
    train_and_log(processed, params, root / "processed", root / "models", root / "hist.csv")
    evaluate_and_log(
        params, root / "processed", root / "models", root / "metrics.json", root / "plots",
        root / "hist.csv",
    )  # fmt: skip
    gate = register_and_gate(
        params, root / "models", root / "processed", root / "metrics.json",
        root / "promotion.json", lock_path=None, project_dir=root,
    )  # fmt: skip
    version = str(gate["candidate_version"])
    if gate["decision"] != "promoted":
        if must_promote:
            raise AssertionError(f"the register stage did not promote the first model: {gate}")
        MlflowClient().set_registered_model_alias(
            params.tracking.registered_model, "champion", version
        )

    record = package(params, SERVING, root / "package.json", store, ROOT / "requirements.lock")
    bundle = ModelBundle.load(root / "models" / tracking.BUNDLE_DIR)
    return Packaged(root, store, uri, params, processed, bundle, record, version)


def serve(packaged: Packaged, log: Path) -> Server:
    """The built Bento served by a real ``bentoml serve`` process, ready (``/readyz`` 200)."""
    args = [sys.executable, "-m", "bentoml", "serve", packaged.record["bento"]]
    return start_server(args, "/readyz", env_for_children(packaged), log, timeout=120)


def bento_with(packaged: Packaged, **serve: Any) -> str:
    """The packaged champion in a Bento built (by the package stage's code) with these ``serve``
    settings changed; returns its tag."""
    from recommender.serving.packaging import build_bento

    settings = packaged.params.serve.model_copy(update=serve)
    bento, _ = build_bento(
        SERVING, packaged.record["bento_model"], settings, ROOT / "requirements.lock"
    )
    return bento


def serve_in(packaged: Packaged, folder: Path, bento: str | None = None) -> Server:
    """``bento`` (default: the packaged one) served from ``folder`` (so a relative
    ``serve.log_dir`` is under ``folder``), with a copy of the BentoML store of its own: a
    ``bentoml serve`` empties its store's Prometheus folder, another server's metrics included."""
    home = folder / "bentoml"
    shutil.copytree(
        packaged.bentoml_home, home, ignore=shutil.ignore_patterns("prometheus_multiproc_dir")
    )
    env = {**env_for_children(packaged), "BENTOML_HOME": str(home)}
    args = [sys.executable, "-m", "bentoml", "serve", bento or packaged.record["bento"]]
    return start_server(args, "/readyz", env, folder / "serve.log", timeout=120)


def errors_counted(server: Server) -> float:
    """``recommender_inference_log_errors_total`` on the server's ``/metrics`` (0 before any)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("recommender_inference_log_errors_total "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
