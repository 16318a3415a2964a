"""The pipeline against a real ``mlflow server`` backed by a real PostgreSQL, over HTTP.

The train, evaluate and register stages run as the processes DVC would start, with only
``MLFLOW_TRACKING_URI`` pointing them at the server; artifacts go through the server
(``--artifacts-destination``) into an S3 bucket on a real SeaweedFS, whose keys only the server
has. The champion is then loaded back by its alias.
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

from recommender.stack.mlflow_server import S3Artifacts
from recommender.stack.seaweedfs import SeaweedFS, start_seaweedfs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "recommender-pg"
BUCKET = "mlflow"
#: Where the server puts artifacts in the bucket.
PREFIX = "artifacts"
#: No client here (stages, the test's own MLflow calls) may hold S3 keys: the server does.
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), bucket=BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    postgres: Postgres, s3: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    artifacts = S3Artifacts(
        destination=f"s3://{BUCKET}/{PREFIX}",
        endpoint_url=s3.endpoint_url,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
    )
    proc, srv = start_mlflow_server(
        postgres.sqlalchemy_uri, tmp_path_factory.mktemp("mlflow"), artifacts=artifacts
    )
    try:
        yield srv
    finally:
        stop(proc)


def _without_s3_keys(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in AWS_KEYS}


def _stage(name: str, cwd: Path, env: dict[str, str], *args: str) -> None:
    run_checked([sys.executable, str(ROOT / "pipeline" / f"{name}.py"), *args], cwd, env)


def test_train_evaluate_register_through_a_postgres_backed_server(
    server: MlflowServer,
    postgres: Postgres,
    s3: SeaweedFS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    import mlflow
    import sqlalchemy

    from recommender.data.synthetic import generate
    from recommender.dataset.processed import write_processed
    from recommender.preprocess.split import preprocess
    from recommender.scoring.bundle import ModelBundle

    params = tiny_params(tracking={"registered_model": NAME})
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(params.model_dump(mode="json", by_alias=True))
    )
    dataset = generate(params.synthetic, params.seed)
    write_processed(preprocess(dataset, params.preprocess, params.seed), tmp_path / "processed")

    env = _without_s3_keys(child_env(MLFLOW_TRACKING_URI=server.uri))
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
    run = json.loads((tmp_path / "models" / "run.json").read_text())
    run_id = run["run_id"]
    assert alias == 1
    assert tags["training_run_id"] == run_id and tags["gate.decision"] == "promoted"

    # The test's own MLflow client: no S3 keys, both URIs set (MLflow's set_*_uri write them to
    # the environment; monkeypatch undoes that).
    for key in AWS_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.uri)
    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)

    # The champion's files went through the server into the bucket: not onto the server's disk,
    # nor the client's. (A logged model's files live under its id, models:/<id>.)
    champion = mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert champion.source == run["model_uri"]
    model_id = run["model_uri"].removeprefix("models:/")
    pages = boto3.client("s3", **s3.boto3_kwargs()).get_paginator("list_objects_v2")
    keys = [o["Key"] for page in pages.paginate(Bucket=BUCKET) for o in page.get("Contents", [])]
    bundles = [k for k in keys if k.endswith("/model.keras")]
    assert bundles and all(k.startswith(f"{PREFIX}/") for k in bundles), keys
    assert any(f"/{model_id}/" in k for k in bundles), (model_id, bundles)
    assert not list(server.artifacts.parent.rglob("model.keras")), "artifacts on the server's disk"
    assert not (tmp_path / "mlruns").exists()

    # Load the champion by alias, as the package stage and any consumer would, and score with it.
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    test = pd.read_parquet(tmp_path / "processed" / "test.parquet").head(50)
    served = np.asarray(model.predict(test[["user_id", "item_id"]]))
    local = ModelBundle.load(tmp_path / "models" / "bundle")
    expected = local.predict_raw(test["user_id"].to_numpy(), test["item_id"].to_numpy())
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    lo, hi = dataset.info.rating_scale.min, dataset.info.rating_scale.max
    assert ((served >= lo) & (served <= hi)).all()
