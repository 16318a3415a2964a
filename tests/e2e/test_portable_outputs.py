"""End to end: what `dvc repro train` leaves for DVC and MLflow to keep names no credential and no
absolute path of the machine (the scratch repo's folder, the project checkout).

The tracking store is a SQLite file outside the project, as a shared store would be. SQLite URIs
carry no password; the redaction of one that does is tested on the writer
(tests/unit/test_run_record.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support import ROOT, child_env, make_scratch_repo, tiny_raw

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Trained:
    base: Path  # every path of this test lies under it
    repo: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    base = tmp_path_factory.mktemp("portable")
    repo = make_scratch_repo(base)
    params = repo / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    for name, values in tiny_raw(train={"epochs": 2}).items():
        raw[name] = {**(raw.get(name) or {}), **values}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    (base / "store").mkdir()
    env = child_env(MLFLOW_TRACKING_URI=f"sqlite:///{base / 'store' / 'mlflow.db'}")
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "train"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Trained(base, repo, env)


def _model_files(trained: Trained, model_uri: str) -> dict[str, str]:
    """The logged model's folder in the store's artifact root, each file's text (bytes decoded)."""
    model_id = model_uri.removeprefix("models:/")
    (mlmodel,) = trained.base.rglob(f"models/{model_id}/artifacts/MLmodel")
    folder = mlmodel.parent
    return {
        str(p.relative_to(folder)): p.read_bytes().decode("utf-8", "replace")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _machine_paths(text: str, trained: Trained) -> list[str]:
    return [str(p) for p in (trained.base, ROOT) if str(p) in text]


def test_run_json_names_the_store_without_machine_paths(trained: Trained) -> None:
    text = (trained.repo / "models" / "run.json").read_text()
    assert _machine_paths(text, trained) == []
    run = json.loads(text)
    assert run["tracking_uri"] == "sqlite:///.../mlflow.db"  # outside the project: its name only
    assert run["model_uri"].startswith("models:/") and run["run_id"]


def test_the_model_train_logs_holds_no_machine_paths(trained: Trained) -> None:
    run = json.loads((trained.repo / "models" / "run.json").read_text())
    leaks = {
        name: found
        for name, text in _model_files(trained, run["model_uri"]).items()
        if (found := _machine_paths(text, trained))
    }
    assert leaks == {}


LOG = """
import json, sys
import mlflow
from mlflow.models import infer_signature
import recommender
from recommender import tracking
from recommender.scoring.bundle import ModelBundle
from recommender.tracking import pyfunc

bundle_dir, test = sys.argv[1], __import__("pandas").read_parquet(sys.argv[2]).head(20)
tracking.configure()
bundle = ModelBundle.load(bundle_dir)
example = {"user_id": test["user_id"].to_numpy(), "item_id": test["item_id"].to_numpy()}
expected = bundle.predict_raw(example["user_id"], example["item_id"])
mlflow.set_experiment("portable")
with mlflow.start_run():
    info = pyfunc.log_model(
        name="model",
        python_model=pyfunc.__file__,
        artifacts={"bundle": bundle_dir},
        code_paths=[recommender.__path__[0]],
        signature=infer_signature(example, expected),
        input_example=example,
        pip_requirements=tracking.pip_requirements(),
    )
served = mlflow.pyfunc.load_model(info.model_uri).predict(test[["user_id", "item_id"]])
assert abs(served - expected).max() < 1e-6
print(json.dumps({"model_uri": info.model_uri}))
"""


def test_pyfunc_log_model_writes_a_portable_model_that_loads(trained: Trained) -> None:
    # The logger log_bundle_model should use, on the model the train stage just made, by
    # absolute paths (the tests' way of calling it).
    bundle = trained.repo / "models" / "bundle"
    test = trained.repo / "data" / "processed" / "test.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", LOG, str(bundle), str(test)],
        cwd=trained.repo,
        env=trained.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    model_uri = json.loads(proc.stdout.strip().splitlines()[-1])["model_uri"]
    files = _model_files(trained, model_uri)
    leaks = {
        name: found for name, text in files.items() if (found := _machine_paths(text, trained))
    }
    assert leaks == {}
    mlmodel = yaml.safe_load(files["MLmodel"])
    conf = mlmodel["flavors"]["python_function"]
    assert conf["model_code_path"] == "pyfunc.py"
    assert conf["artifacts"] == {"bundle": {"path": "artifacts/bundle"}}
    assert "artifact_path" not in mlmodel
