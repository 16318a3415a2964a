"""The whole pipeline with ``data.engine: spark`` on a real standalone Spark cluster on
127.0.0.1 (a master and a worker started here): ``dvc repro`` through ``package`` in a scratch
repository, the data stages' jobs run by the cluster's executor, the Spark-written splits read by
train and evaluate as pandas' are, and equal to what pandas makes of the same interim tables."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import child_env, make_scratch_repo, run_checked, tiny_raw

from recommender.core.config import PreprocessConfig
from recommender.preprocess import split
from recommender.stack.spark_cluster import start_standalone_cluster

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _apps(web_url: str) -> list[dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(web_url + "/json/", timeout=10) as resp:
        state = json.load(resp)
    return state["activeapps"] + state["completedapps"]


def test_dvc_repro_through_package_on_a_standalone_cluster(tmp_path: Path) -> None:
    repo = make_scratch_repo(tmp_path)
    env = child_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", BENTOML_HOME=str(repo / "bentoml")
    )
    with start_standalone_cluster(cores=2, memory="1g") as cluster:
        raw = tiny_raw(
            data={"engine": "spark"},
            spark={"master": cluster.master_url, "driver_memory": "1g", "executor_memory": "1g"},
            train={"epochs": 3},
        )
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for name, values in raw.items():
            params[name] = {**(params.get(name) or {}), **values}
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_checked([sys.executable, "-m", "dvc", "repro", "package"], repo, env)
        apps = {app["name"] for app in _apps(cluster.web_url)}
    assert {"ingest", "validate", "preprocess"} <= apps, apps

    processed = repo / "data" / "processed"
    assert (processed / "train.parquet").is_dir()  # Spark's part files
    assert json.loads((repo / "reports" / "validation.json").read_text())["success"] is True
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["test"]["rmse"] > 0
    package = json.loads((repo / "reports" / "package.json").read_text())
    assert package["bento"]
    # What pandas makes of the same interim tables, row for row.
    cfg = PreprocessConfig(**params["preprocess"])
    reference = split.preprocess(split.read_interim(repo / "data" / "interim"), cfg, params["seed"])
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(processed / f"{name}.parquet"), getattr(reference, name), obj=name
        )
