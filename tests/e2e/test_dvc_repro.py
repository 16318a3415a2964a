"""End to end: real `dvc repro` in a scratch git repository, on small data.

The scratch repo gets a copy of the project's pipeline definition and code, so DVC sees the same
dependency graph a user's clone has; the code it runs is the installed `recommender` package.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import TINY_SYNTHETIC, child_env, make_scratch_repo, tiny_raw

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

SMALL = TINY_SYNTHETIC


def _env(cwd: Path) -> dict[str, str]:
    # The scratch project's own tracking store, as a user's clone would have; the stage commands
    # say `python ...` and `dvc`, and child_env puts this environment's first on PATH.
    return child_env(MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'mlflow.db'}")


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "dvc", *args], repo, check)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _set_params(repo: Path, **sections: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        params[name] = {**(params.get(name) or {}), **values}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture()
def scratch_repo(tmp_path: Path) -> Path:
    repo = make_scratch_repo(tmp_path)
    _set_params(repo, **tiny_raw(train={"epochs": 3, "batch_size": 512}))
    return repo


DATA_STAGES = ["ingest", "validate", "preprocess"]


def test_repro_runs_data_stages_and_is_idempotent(scratch_repo: Path) -> None:
    _dvc(scratch_repo, "repro", *DATA_STAGES)

    processed = scratch_repo / "data" / "processed"
    for name in ("train.parquet", "val.parquet", "test.parquet", "vocab.json", "dataset.json"):
        assert (processed / name).is_file(), name
    validation = json.loads((scratch_repo / "reports" / "validation.json").read_text())
    assert validation["success"] is True
    assert (scratch_repo / "reports" / "validation" / "index.html").is_file()
    data = json.loads((scratch_repo / "reports" / "data.json").read_text())
    assert data["rows"]["total"] == SMALL["n_ratings"]
    assert data["rows"]["train"] + data["rows"]["val"] + data["rows"]["test"] == SMALL["n_ratings"]

    again = _dvc(scratch_repo, "repro", *DATA_STAGES)
    assert "didn't change, skipping" in again.stdout or "up to date" in again.stdout
    status = _dvc(scratch_repo, "status", "preprocess")
    assert "up to date" in status.stdout

    metrics = _dvc(scratch_repo, "metrics", "show", "--json")
    assert "reports/validation.json" in metrics.stdout


def test_failed_stages_keep_the_last_good_outputs(scratch_repo: Path) -> None:
    _dvc(scratch_repo, "repro", *DATA_STAGES)
    interim = _digest(scratch_repo / "data" / "interim")
    processed = _digest(scratch_repo / "data" / "processed")
    report = (scratch_repo / "reports" / "validation.json").read_bytes()

    # A file ingest cannot parse: ingest fails, and nothing downstream (or its own output) changes.
    bad = scratch_repo / "ratings.csv"
    bad.write_text("user_id;item_id;rating;timestamp\n1;2;3;978300760\n")
    _set_params(scratch_repo, data={"source": "csv", "path": str(bad)})
    failed = _dvc(scratch_repo, "repro", *DATA_STAGES, check=False)
    assert failed.returncode != 0
    assert "ratings.csv" in failed.stderr + failed.stdout
    assert _digest(scratch_repo / "data" / "interim") == interim
    assert _digest(scratch_repo / "data" / "processed") == processed

    # A file that parses but breaks the rules: validate stops the DAG before preprocess.
    rows = ["user_id,item_id,rating,timestamp"]
    pairs = [(u, i) for u in range(1, 21) for i in range(1, 21)]
    rows += [f"{u},{i},{1 + (u * i) % 5},{978300760 + u * 1000 + i}" for u, i in pairs]
    rows.append("3,999,7,978300760")
    bad.write_text("\n".join(rows) + "\n")
    failed = _dvc(scratch_repo, "repro", *DATA_STAGES, check=False)
    assert failed.returncode != 0
    output = failed.stderr + failed.stdout
    assert "rating" in output and "expect_column_values_to_be_in_set" in output
    assert (scratch_repo / "reports" / "validation.json").read_bytes() == report
    assert _digest(scratch_repo / "data" / "processed") == processed


def test_repro_on_movielens_100k_canonical_split(scratch_repo: Path, ml100k_dir: Path) -> None:
    _set_params(
        scratch_repo,
        data={"source": "movielens-100k", "path": str(ml100k_dir), "download": False},
        preprocess={"split": "given"},
    )
    _dvc(scratch_repo, "repro", *DATA_STAGES)
    data = json.loads((scratch_repo / "reports" / "data.json").read_text())
    # u1.base / u1.test: 80,000 ratings to fit on (train + val) and 20,000 to test on.
    assert data["rows"]["train"] + data["rows"]["val"] == 80_000
    assert data["rows"]["test"] == 20_000
    validation = json.loads((scratch_repo / "reports" / "validation.json").read_text())
    assert validation["success"] is True


def test_repro_trains_evaluates_and_tracks_in_mlflow(scratch_repo: Path) -> None:
    import mlflow

    _dvc(scratch_repo, "repro", "evaluate")
    metrics = json.loads((scratch_repo / "reports" / "metrics.json").read_text())
    assert metrics["test"]["rmse"] < metrics["baselines"]["global_mean"]["rmse"]
    assert {"precision@10", "recall@10", "ndcg@10", "map@10"} <= set(metrics["ranking"])
    for png in ("learning_curves.png", "error_by_activity.png", "predicted_vs_actual.png"):
        assert (scratch_repo / "reports" / "plots" / png).is_file()

    shown = _dvc(scratch_repo, "metrics", "show", "--json").stdout
    assert "reports/metrics.json" in shown and '"rmse"' in shown

    run = json.loads((scratch_repo / "models" / "run.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{scratch_repo / 'mlflow.db'}")
    logged = client.get_run(run["run_id"]).data
    assert logged.metrics["test_mse"] == pytest.approx(metrics["test"]["mse"])
    assert logged.params["train.epochs"] == "3"
    assert "up to date" in _dvc(scratch_repo, "status", "evaluate").stdout

    # Code deps are per module: an edit reruns the stages that run the edited code, no others.
    def stale_after_editing(module: str) -> set[str]:
        path = scratch_repo / "src" / "recommender" / module
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            return set(json.loads(_dvc(scratch_repo, "status", "--json").stdout))
        finally:
            path.write_text(original)

    # This test stops at evaluate; the feedback stage reads the service's log, which grows outside
    # the pipeline, so DVC always reruns it (`always_changed`).
    never_run = {"register", "package", "feedback"}
    assert stale_after_editing("evaluation/plots.py") - never_run == {"evaluate"}
    assert stale_after_editing("models/two_tower.py") - never_run == {"train", "evaluate"}
    assert stale_after_editing("data/movielens.py") - never_run == {"ingest"}
    assert stale_after_editing("data/feedback.py") - never_run == {"ingest"}


def test_repro_on_a_users_own_csv(scratch_repo: Path) -> None:
    ratings = scratch_repo / "my_ratings.tsv"
    pairs = [(u, i) for u in range(1, 31) for i in range(1, 41) if (u + i) % 3]
    lines = ["user\titem\tstars\twhen"]
    lines += [f"u{u}\tm{i}\t{1 + (u * i) % 5}\t{1_600_000_000 + u * 997 + i}" for u, i in pairs]
    ratings.write_text("\n".join(lines) + "\n")
    _set_params(
        scratch_repo,
        data={"source": "csv", "path": str(ratings)},
        csv={
            "sep": "\t",
            "id_type": "str",
            "columns": {
                "user_id": "user",
                "item_id": "item",
                "rating": "stars",
                "timestamp": "when",
            },
        },
        preprocess={"split": "temporal"},
    )
    _dvc(scratch_repo, "repro", *DATA_STAGES)
    data = json.loads((scratch_repo / "reports" / "data.json").read_text())
    assert data["rows"]["total"] == len(pairs)
    vocab = json.loads((scratch_repo / "data" / "processed" / "vocab.json").read_text())
    assert vocab["user"][0] is None and all(isinstance(u, str) for u in vocab["user"][1:])
