"""The train and evaluate stages' MLflow records, against a real SQLite tracking store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.core.config import Params
from recommender.dataset.processed import Processed

pytestmark = pytest.mark.slow


@pytest.fixture()
def tracking_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # default artifact location: ./mlruns under tmp_path
    return uri


def test_train_and_evaluate_log_one_complete_run(
    tracking_db: str, processed: Processed, processed_dir: Path, params: Params, tmp_path: Path
) -> None:
    import mlflow

    from recommender.evaluation.run import evaluate_and_log
    from recommender.tracking import BUNDLE_DIR, read_run
    from recommender.training.run import train_and_log

    models, history = tmp_path / "models", tmp_path / "history.csv"
    summary = train_and_log(processed, params, processed_dir, models, history)
    record = read_run(models)
    assert record["run_id"] == summary["run_id"]

    client = mlflow.MlflowClient(tracking_db)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.model"] == "two_tower"  # the default family
    assert run.data.params["hyper.embedding_dim"] == str(params.train.two_tower.embedding_dim)
    assert run.data.params["hyper.rating.embedding_dim"] == str(
        params.train.biased_mf.embedding_dim
    )
    assert run.data.tags["data.source"] == "synthetic"
    assert len(run.data.tags["data.hash"]) == 64
    # One point per epoch for the learning curves.
    for name in ("val_rmse", "val_ndcg_at_10"):  # the rating head's and the towers' curves
        curve = client.get_metric_history(record["run_id"], name)
        assert [m.step for m in curve] == list(range(1, summary["epochs_run"] + 1)), name
    csv = pd.read_csv(history)
    assert list(csv["epoch"]) == list(range(1, summary["epochs_run"] + 1))
    # train.refit: the final model trained on train + val, continuing the fitted one for the
    # validation part's share of each head's epochs times train.refit_epochs_factor
    # (train.refit_from: fitted).
    assert params.train.refit_from == "fitted"
    share = params.train.refit_epochs_factor * len(processed.val) / len(processed.train)
    heads = [summary[f"best_epoch_{h}"] for h in ("ranking", "rating")]
    assert summary["refit_epochs"] == max(max(1, round(e * share)) for e in heads)
    refit_curve = client.get_metric_history(record["run_id"], "refit_loss")
    assert [m.step for m in refit_curve] == list(range(1, summary["refit_epochs"] + 1))
    known = (processed.val["user_idx"] != 0) & (processed.val["item_idx"] != 0)
    assert summary["refit_train_rows"] == len(processed.train) + int(known.sum())
    assert run.data.params["train.refit"] == "True"

    # The logged model is self-contained: loaded through MLflow it predicts what the bundle does.
    from recommender.scoring.bundle import ModelBundle

    bundle = ModelBundle.load(models / BUNDLE_DIR)
    # The refit model learnt from the validation ratings: its bundle counts them as rated, so
    # recommend leaves them out.
    learnt = processed.val[known]
    for user, item in zip(learnt["user_idx"].head(20), learnt["item_idx"].head(20), strict=True):
        assert item in bundle.seen.items_of(int(user))
    test = processed.test.head(200)
    loaded = mlflow.pyfunc.load_model(record["model_uri"])
    served = loaded.predict(test[["user_id", "item_id"]])
    np.testing.assert_allclose(
        served, bundle.predict_raw(test["user_id"], test["item_id"]), atol=1e-6
    )

    metrics_path = tmp_path / "metrics.json"
    result = evaluate_and_log(
        params, processed_dir, models, metrics_path, tmp_path / "plots", history
    )
    assert json.loads(metrics_path.read_text()) == result
    for png in ("learning_curves.png", "error_by_activity.png", "predicted_vs_actual.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    logged = client.get_run(record["run_id"]).data.metrics
    assert logged["test_mse"] == pytest.approx(result["test"]["mse"])
    assert logged["ranking_ndcg_at_10"] == pytest.approx(result["ranking"]["ndcg@10"])
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"metrics.json", "plots"} <= artifacts


def test_a_failed_training_run_leaves_the_previous_model_folder(
    tracking_db: str, processed: Processed, processed_dir: Path, params: Params, tmp_path: Path
) -> None:
    from recommender.core.errors import ConfigError
    from recommender.training.run import train_and_log

    models = tmp_path / "models"
    models.mkdir()
    (models / "run.json").write_text('{"run_id": "previous"}\n')
    bad = params.model_copy(
        update={"train": params.train.model_copy(update={"model": "ncf", "ncf": None})}
    )
    with pytest.raises((ConfigError, AttributeError, TypeError)):
        train_and_log(processed, bad, processed_dir, models, tmp_path / "h.csv")
    assert (models / "run.json").read_text() == '{"run_id": "previous"}\n'


def test_the_train_batch_failpoint_counts_batches_not_keras_executions() -> None:
    """``train.batch@150`` with 100-batch executions: alive after the first (batches 1-100),
    killed after the second, in the next epoch (batches 101-150), as a crash there would be."""
    import subprocess
    import sys

    from support import child_env

    code = """
import sys
from recommender.tracking import epoch_logger
logger = epoch_logger()
logger.on_epoch_begin(0)
logger.on_train_batch_end(99)  # Keras: one call per execution, the last batch's index
print("alive after 100 batches", flush=True)
logger.on_epoch_begin(1)
logger.on_train_batch_end(49)
print("alive after 150 batches", flush=True)
"""
    env = child_env(RECOMMENDER_FAILPOINT="train.batch@150")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.splitlines() == ["alive after 100 batches"]
