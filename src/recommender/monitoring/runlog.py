"""The monitor's side of MLflow: the champion's offline NDCG@K, and the ``monitoring`` run.

The tracking URI is chosen as the pipeline's stages choose it (:func:`recommender.tracking.connect`:
``MLFLOW_TRACKING_URI``, else the project's ``mlflow.db``). A store that does not answer does not
stop the monitor: the offline figure then comes from ``reports/metrics.json`` (the evaluate
stage's, which is the champion's only when the last trained model was promoted; the report says
which source it used) and the report is written without a run, saying why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recommender import tracking
from recommender.core.errors import RecommenderError, first_line

log = logging.getLogger("recommender")

#: The MLflow experiment of the monitor's runs.
EXPERIMENT = "monitoring"


@dataclass(frozen=True)
class Offline:
    """The champion's offline NDCG@K and where it was read (``ndcg`` None: nowhere)."""

    ndcg: float | None
    source: str


def connect() -> str | None:
    """Point MLflow at the pipeline's store; the reason it cannot be used, or None."""
    try:
        tracking.connect()
    except RecommenderError as exc:
        return str(exc)
    return None


def offline_ndcg(
    model_name: str, k: int, metrics_path: str | Path, tracking_error: str | None
) -> Offline:
    """NDCG@K of the ``@champion`` version's run, else of ``metrics_path``, else unknown."""
    metric = f"ranking_ndcg_at_{k}"
    why = tracking_error
    if why is None:
        try:
            import mlflow

            from recommender.tracking.registry import CHAMPION, alias_version

            client = mlflow.MlflowClient()
            with tracking.no_retries():
                version = alias_version(client, model_name, CHAMPION)
                if version is None:
                    why = f"registered model {model_name!r} has no @{CHAMPION} alias"
                else:
                    value = client.get_run(version.run_id).data.metrics.get(metric)
                    if value is not None:
                        source = f"registry: {model_name}@{CHAMPION} (version {version.version}, "
                        source += f"run {version.run_id}, metric {metric})"
                        return Offline(float(value), source)
                    why = f"the @{CHAMPION} run {version.run_id} has no metric {metric!r}"
        except Exception as exc:  # noqa: BLE001 (MLflow raises many kinds; all mean "unusable")
            why = f"could not read @champion from the registry ({first_line(exc)})"
    return _from_metrics_file(Path(metrics_path), k, why)


def _from_metrics_file(path: Path, k: int, why: str | None) -> Offline:
    try:
        value = json.loads(path.read_text())["ranking"][f"ndcg@{k}"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Offline(None, f"unknown: {why}; and {path} gave no ranking.ndcg@{k} ({exc!r})")
    if value is None:
        return Offline(None, f"unknown: {why}; and {path} has ranking.ndcg@{k} = null")
    return Offline(float(value), f"{path} (ranking.ndcg@{k}), since {why}")


def start_run(params: dict[str, Any], tags: dict[str, str]) -> str:
    """Start the monitor's run (so the report can name it); :func:`finish_run` ends it."""
    import mlflow

    mlflow.set_experiment(EXPERIMENT)
    tracking.end_stale_runs(EXPERIMENT)
    run = mlflow.start_run(run_name="monitor", tags={**tags, **tracking.tag_owner()})
    mlflow.log_params({k: str(v) for k, v in params.items()})
    return str(run.info.run_id)


def finish_run(out_dir: Path, metrics: dict[str, float], ok: bool) -> None:
    """Log the figures and the report folder to the active run and end it."""
    import mlflow

    try:
        if ok:
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(out_dir), artifact_path="report")
    finally:
        mlflow.end_run(status="FINISHED" if ok else "FAILED")
