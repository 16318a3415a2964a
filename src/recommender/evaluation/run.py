"""The evaluate stage's work: evaluate the trained bundle, write reports, log to its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recommender import tracking
from recommender.core.config import Params
from recommender.core.io import staged_dir, write_json
from recommender.evaluation.evaluate import activity_slices, evaluate, mlflow_metrics


def evaluate_and_log(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    history_path: str | Path,
) -> dict[str, Any]:
    """Evaluate ``model_dir``'s bundle on ``data_dir``'s test split; return ``metrics.json``."""
    import mlflow

    run = tracking.read_run(model_dir)
    tracking.connect()  # before any work: a store that is down fails the stage in seconds

    from recommender.dataset.processed import load_processed
    from recommender.evaluation import plots
    from recommender.scoring.bundle import ModelBundle

    processed = load_processed(data_dir)
    bundle = ModelBundle.load(Path(model_dir) / tracking.BUNDLE_DIR)
    evaluation = evaluate(bundle, processed, params.evaluate)
    result = evaluation.metrics

    activity = pd.DataFrame(
        [
            {"slice": name, **result["slices"]["user_train_ratings"][name]}
            for name, _, _ in activity_slices(params.evaluate.activity_bins)
        ]
    )
    with staged_dir(plots_dir) as tmp:
        activity.fillna(0).to_csv(tmp / "error_by_activity.csv", index=False)
        plots.learning_curves(pd.read_csv(history_path), tmp / "learning_curves.png")
        plots.error_by_activity(activity.fillna(0), tmp / "error_by_activity.png")
        plots.predicted_vs_actual(evaluation.rows, tmp / "predicted_vs_actual.png")
    write_json(result, metrics_path)

    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.set_tags(tracking.tag_owner())  # this process now holds the run (RUNNING)
        mlflow.log_metrics(mlflow_metrics(result))
        mlflow.log_artifact(str(metrics_path))
        mlflow.log_artifacts(str(plots_dir), artifact_path="plots")
    return result
