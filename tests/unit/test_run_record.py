"""``models/run.json`` (a DVC output, pushed by ``dvc push``) names the tracking store without
credentials or absolute machine paths, and still gives evaluate and register what they read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recommender.tracking import read_run
from recommender.training.run import portable_tracking_uri, write_run_file

RECORD = {
    "run_id": "0123456789abcdef",
    "experiment_id": "1",
    "model_uri": "models:/m-0123456789abcdef",
    "model": "two_tower",
}


def test_run_json_keeps_no_password(tmp_path: Path) -> None:
    uri = "postgresql://mlflow:s3cret-Pa55@127.0.0.1:5/mlflow?sslmode=require&password=s3cret-Pa55"
    written = write_run_file(tmp_path, {**RECORD, "tracking_uri": uri}, project_dir=tmp_path)

    text = (tmp_path / "run.json").read_text()
    assert "s3cret" not in text
    assert written["tracking_uri"] == "postgresql://mlflow:***@127.0.0.1:5/mlflow"
    assert json.loads(text) == written
    # What evaluate and register read is all there.
    assert read_run(tmp_path) == {**RECORD, "tracking_uri": written["tracking_uri"]}


def test_run_json_keeps_no_absolute_path(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "stores" / "shared"
    project.mkdir()
    for uri, stored in [
        (f"sqlite:///{project / 'mlflow.db'}", "sqlite:///mlflow.db"),
        (f"sqlite:///{elsewhere / 'mlflow.db'}", "sqlite:///.../mlflow.db"),
    ]:
        written = write_run_file(project, {**RECORD, "tracking_uri": uri}, project_dir=project)
        text = (project / "run.json").read_text()
        assert str(tmp_path) not in text
        assert written["tracking_uri"] == stored


@pytest.mark.parametrize(
    ("uri", "stored"),
    [
        # A store in the project: relative to it, a URI that still works from the project root.
        ("sqlite:///{project}/mlflow.db", "sqlite:///mlflow.db"),
        ("sqlite:///{project}/stores/a.db?mode=ro", "sqlite:///stores/a.db"),
        ("sqlite+pysqlite:///{project}/mlflow.db", "sqlite+pysqlite:///mlflow.db"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("file://{project}/mlruns", "file:mlruns"),
        ("{project}/mlruns", "mlruns"),
        # Outside it: only the file name.
        ("sqlite:///{outside}/mlflow.db", "sqlite:///.../mlflow.db"),
        ("sqlite:///../elsewhere/mlflow.db", "sqlite:///.../mlflow.db"),
        ("file://{outside}/mlruns", "file:.../mlruns"),
        # Servers and databases: the password redacted, the query string dropped.
        ("http://user:pw@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
        ("https://mlflow.example.org/", "https://mlflow.example.org/"),
        ("mysql+pymysql://u:p%40ss@db:3306/ml?ssl_key=k", "mysql+pymysql://u:***@db:3306/ml"),
        ("databricks", "databricks"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_portable_tracking_uri(tmp_path: Path, uri: str, stored: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    uri = uri.format(project=project, outside=tmp_path / "outside")
    assert portable_tracking_uri(uri, project) == stored
