"""Helpers of the serving tests: a tiny champion made by the real stages, and a real server.

Built once per session with the real components, in a temporary folder (nothing touches the
project's mlflow.db or bentoml/): synthetic data through ingest and preprocess, a short training
run logged to a SQLite MLflow store, evaluation metrics on the same run, then the register stage
(which versions the model and, with no champion yet, promotes it through the gate) and the
package stage's own code: import into a BentoML store and ``bentoml build``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def build_packaged(root: Path, uri: str) -> Packaged:
    import mlflow

    from recommender import tracking
    from recommender.core.schema import write_dataset
    from recommender.data import load_dataset
    from recommender.evaluation.run import evaluate_and_log
    from recommender.preprocess.processed import write_processed
    from recommender.preprocess.split import preprocess, read_interim
    from recommender.registry.register import register_and_gate
    from recommender.scoring.bundle import ModelBundle
    from recommender.serving.packaging import package
    from recommender.training.run import train_and_log

    params = tiny_params(
        train={"epochs": 3},
        tracking={"experiment": "serving-test", "registered_model": MODEL_NAME},
    )
    write_dataset(load_dataset(params), root / "interim")
    processed = preprocess(read_interim(root / "interim"), params.preprocess, params.seed)
    write_processed(processed, root / "processed")

    # Artifacts in the temporary folder, not ./mlruns of whatever the working directory is.
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("serving-test", artifact_location=(root / "artifacts").as_uri())
    train_and_log(processed, params, root / "processed", root / "models", root / "hist.csv")
    evaluate_and_log(
        params, root / "processed", root / "models", root / "metrics.json", root / "plots",
        root / "hist.csv",
    )  # fmt: skip
    gate = register_and_gate(
        params, root / "models", root / "processed", root / "metrics.json",
        root / "promotion.json", lock_path=None, project_dir=root,
    )  # fmt: skip
    if gate["decision"] != "promoted":
        raise AssertionError(f"the register stage did not promote the first model: {gate}")

    record = package(
        params, SERVING, root / "package.json", root / "bentoml", ROOT / "requirements.lock"
    )
    bundle = ModelBundle.load(root / "models" / tracking.BUNDLE_DIR)
    version = str(gate["candidate_version"])
    return Packaged(root, root / "bentoml", uri, params, processed, bundle, record, version)


def serve(packaged: Packaged, log: Path) -> Server:
    """The built Bento served by a real ``bentoml serve`` process, ready (``/readyz`` 200)."""
    args = [sys.executable, "-m", "bentoml", "serve", packaged.record["bento"]]
    return start_server(args, "/readyz", env_for_children(packaged), log, timeout=120)
