"""The pipeline against a real ``mlflow server`` backed by a real PostgreSQL, over HTTP.

The train, evaluate and register stages run as the processes DVC would start, with only
``MLFLOW_TRACKING_URI`` pointing them at the server; artifacts go through the server
(``--artifacts-destination``). The champion is then loaded back by its alias.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from integration_helpers import MlflowServer, Postgres, start_mlflow_server
from support import ROOT, child_env, run_checked, stop, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "recommender-pg"


@pytest.fixture(scope="module")
def server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    proc, srv = start_mlflow_server(postgres.sqlalchemy_uri, tmp_path_factory.mktemp("mlflow"))
    try:
        yield srv
    finally:
        stop(proc)


def _stage(name: str, cwd: Path, env: dict[str, str], *args: str) -> None:
    run_checked([sys.executable, str(ROOT / "pipeline" / f"{name}.py"), *args], cwd, env)


def test_train_evaluate_register_through_a_postgres_backed_server(
    server: MlflowServer, postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import sqlalchemy

    from recommender.data.synthetic import generate
    from recommender.preprocess.processed import write_processed
    from recommender.preprocess.split import preprocess
    from recommender.scoring.bundle import ModelBundle

    params = tiny_params(tracking={"registered_model": NAME})
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(params.model_dump(mode="json", by_alias=True))
    )
    dataset = generate(params.synthetic, params.seed)
    write_processed(preprocess(dataset, params.preprocess, params.seed), tmp_path / "processed")

    env = child_env(MLFLOW_TRACKING_URI=server.uri)
    common = ["--params", "params.yaml", "--data", "processed"]
    _stage("train", tmp_path, env, *common, "--out", "models", "--history", "history.csv")
    _stage(
        "evaluate",
        tmp_path,
        env,
        *common,
        "--model",
        "models",
        "--metrics",
        "metrics.json",
        "--plots",
        "plots",
        "--history",
        "history.csv",
    )
    _stage(
        "register",
        tmp_path,
        env,
        *common,
        "--model",
        "models",
        "--metrics",
        "metrics.json",
        "--out",
        "promotion.json",
    )

    promotion = json.loads((tmp_path / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion["reason"]
    assert promotion["candidate_version"] == 1

    # The registry lives in PostgreSQL: read the alias and the lineage straight from its tables.
    engine = sqlalchemy.create_engine(postgres.sqlalchemy_uri)
    try:
        with engine.connect() as db:
            alias = db.execute(
                sqlalchemy.text(
                    "SELECT version FROM registered_model_aliases WHERE name = :n AND alias = :a"
                ),
                {"n": NAME, "a": "champion"},
            ).scalar_one()
            tags = dict(
                db.execute(
                    sqlalchemy.text(
                        "SELECT key, value FROM model_version_tags WHERE name = :n AND version = 1"
                    ),
                    {"n": NAME},
                ).all()
            )
    finally:
        engine.dispose()
    run_id = json.loads((tmp_path / "models" / "run.json").read_text())["run_id"]
    assert alias == 1
    assert tags["training_run_id"] == run_id and tags["gate.decision"] == "promoted"

    # The model files went through the server into its artifact folder, not the client's disk.
    assert list(server.artifacts.rglob("model.keras")), "no bundle in the server's artifacts"
    assert not (tmp_path / "mlruns").exists()

    # Load the champion by alias, as the package stage and any consumer would, and score with it.
    # Set both (MLflow's set_*_uri write them to the environment; monkeypatch undoes that).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.uri)
    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    test = pd.read_parquet(tmp_path / "processed" / "test.parquet").head(50)
    served = np.asarray(model.predict(test[["user_id", "item_id"]]))
    local = ModelBundle.load(tmp_path / "models" / "bundle")
    expected = local.predict_raw(test["user_id"].to_numpy(), test["item_id"].to_numpy())
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    lo, hi = dataset.info.rating_scale.min, dataset.info.rating_scale.max
    assert ((served >= lo) & (served <= hi)).all()
