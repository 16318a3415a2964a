"""The train stage's work: fit, bundle, and record it all as one MLflow run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from recommender import tracking
from recommender.core import imports
from recommender.core.config import FAMILIES, Params
from recommender.core.io import staged_dir, staged_file
from recommender.dataset.processed import Processed, with_val_in_train

if TYPE_CHECKING:
    from recommender.scoring.bundle import ModelBundle
    from recommender.training.search import SearchResult

BUNDLE_DIR, RUN_FILE = tracking.BUNDLE_DIR, tracking.RUN_FILE


def dataset_tags(processed: Processed, data_dir: str | Path) -> dict[str, str]:
    """What identifies the training data: source, sizes and a hash of the processed files."""
    return {
        "data.source": processed.info.source,
        "data.hash": tracking.file_digest([data_dir]),
        "data.rows.train": str(len(processed.train)),
        "data.rows.val": str(len(processed.val)),
        "data.rows.test": str(len(processed.test)),
        "data.n_users": str(len(processed.user_vocab) - 1),
        "data.n_items": str(len(processed.item_vocab) - 1),
    }


def write_history(history: dict[str, list[float]], path: str | Path) -> None:
    """Per-epoch metrics as CSV (epoch, loss, rmse, val_loss, val_rmse), for ``dvc plots``."""
    names = sorted(history)
    with staged_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", *names])
        for epoch in range(len(history["loss"])):
            writer.writerow([epoch + 1, *(f"{history[n][epoch]:.6f}" for n in names)])


def train_and_log(
    processed: Processed,
    params: Params,
    data_dir: str | Path,
    out_dir: str | Path,
    history_path: str | Path,
    verbose: int = 0,
) -> dict[str, Any]:
    """Fit ``params.train.model``, log the run and the model to MLflow, write ``out_dir``.

    The output folder is staged and swapped in only after MLflow has the model, so a failure
    anywhere leaves the previous model folder as it was.
    """
    import mlflow

    tracking.connect()  # before TensorFlow's import: a store that is down fails in seconds
    imports.keras()  # the first import of Keras (and TensorFlow), the cheaper way

    from recommender.scoring.bundle import ModelBundle
    from recommender.training.fit import refit
    from recommender.training.search import search

    cfg = params.train
    mlflow.set_experiment(params.tracking.experiment)
    tracking.end_stale_runs(params.tracking.experiment)
    run_params = _run_params(params)
    tags = _run_tags(processed, data_dir, cfg.model)

    # The searched knob is logged once chosen (an MLflow param is written once).
    searched = f"hyper.{cfg.search.knob}" if cfg.search.budget_seconds > 0 else None
    with mlflow.start_run(run_name=f"{cfg.model}", tags=tags) as run, staged_dir(out_dir) as tmp:
        mlflow.log_params({k: v for k, v in run_params.items() if k != searched})
        found = search(processed, cfg, params.seed, [tracking.epoch_logger()], verbose)
        result, cfg = found.fitted, found.cfg
        if searched in run_params:
            value = found.chosen if found.knob else run_params[searched]
            mlflow.log_param(searched, value)
        mlflow.set_tag("search.ended", found.ended)
        if found.trials:  # each trial logged to its nested run: the chosen one's curves here
            tracking.log_history(result.history)
            mlflow.log_dict(found.to_json(), "search.json")
        summary = _fit_summary(found)
        model, learnt_from = result.model, processed
        if cfg.refit and len(processed.val):
            final = refit(
                processed,
                cfg,
                params.seed,
                result,
                [tracking.epoch_logger("refit_")],
                verbose,
            )
            # Its seen items and popularity include the validation ratings it learnt from.
            model, learnt_from = final.model, with_val_in_train(processed)
            summary["refit_seconds"] = round(final.seconds, 3)
            summary["refit_epochs"] = final.epochs_run
            summary["refit_train_rows"] = final.train_rows
            summary["refit_train_rmse"] = _best(final.history, "rmse", at=final.epochs_run)
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})

        bundle = ModelBundle.from_training(
            model, learnt_from, {"model": cfg.model, "hyper": cfg.hyper(), **summary}
        )
        model_uri = _save_and_log_bundle(bundle, processed, tmp / BUNDLE_DIR, data_dir)
        record = write_run_file(
            tmp,
            {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "model_uri": model_uri,
                "model": cfg.model,
                "tracking_uri": mlflow.get_tracking_uri(),
            },
        )
        write_history(result.history, history_path)
    return {**summary, **record}


def _run_params(params: Params) -> dict[str, Any]:
    """The run's MLflow params: seed, data, preprocess and train (with the family's own
    learning rate, batch size and patience), and the family's knobs, flattened."""
    cfg = params.train
    return tracking.flatten(
        {
            "seed": params.seed,
            "data": params.data.model_dump(),
            "preprocess": params.preprocess.model_dump(),
            "train": {k: v for k, v in cfg.model_dump().items() if k not in FAMILIES}
            | {  # the family's own, where it has them
                "learning_rate": cfg.family_learning_rate,
                "batch_size": cfg.family_batch_size,
                "patience": cfg.family_patience,
            },
            "hyper": cfg.hyper(),
        }
    )


def _run_tags(processed: Processed, data_dir: str | Path, family: str) -> dict[str, str]:
    """The run's tags: the dataset's, the family, the owner and the git commit (if known)."""
    tags = {**dataset_tags(processed, data_dir), "model.family": family, **tracking.tag_owner()}
    commit = tracking.git_commit()
    if commit:
        tags["git.commit"] = commit
    return tags


def _fit_summary(found: SearchResult) -> dict[str, Any]:
    """The fit's figures (the search's chosen fit): its best epoch and validation scores,
    each head's own best epoch, how long it and the search took."""
    result = found.fitted
    summary = {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "fit_seconds": round(result.seconds, 3),
        "fit_ratings_per_second": round(result.ratings_per_second or 0.0, 1),
        "search_trials": len(found.trials),
        "search_seconds": round(found.seconds, 3),
        "best_val_rmse": _best(result.history, "val_rmse", at=result.best_epoch),
        "best_train_rmse": _best(result.history, "rmse", at=result.best_epoch),
    }
    if "val_ndcg_at_10" in result.history:  # a family trained to rank: what stopped it
        summary["best_val_ndcg_at_10"] = _best(
            result.history, "val_ndcg_at_10", at=result.best_epoch
        )
    for head, epoch in result.head_epochs.items():  # heads that stopped apart
        summary[f"best_epoch_{head}"] = epoch
    if "rating" in result.head_epochs:  # the rating head's own best, not the towers' epoch
        summary["best_val_rmse"] = _best(
            result.history, "val_rmse", at=result.head_epochs["rating"]
        )
    return summary


def _save_and_log_bundle(
    bundle: ModelBundle, processed: Processed, bundle_dir: Path, data_dir: str | Path
) -> str:
    """Save ``bundle`` to ``bundle_dir`` and log it to the run as an MLflow model, with five
    test pairs as its input example; return the model's URI."""
    bundle.save(bundle_dir, data_dir)
    sample = processed.test.head(5)
    example = {
        "user_id": sample["user_id"].to_numpy(),
        "item_id": sample["item_id"].to_numpy(),
    }
    prediction = bundle.predict_raw(example["user_id"], example["item_id"])
    return tracking.log_bundle_model(bundle_dir, example, prediction)


def write_run_file(
    folder: str | Path, record: dict[str, Any], project_dir: str | Path = "."
) -> dict[str, Any]:
    """Write ``run.json`` (what evaluate and register read) into ``folder``; return what it holds.

    ``run.json`` is a DVC output (``dvc push`` copies it to the remote), so its ``tracking_uri``
    goes through :func:`portable_tracking_uri` first. The stages that read the file use only the
    run id and model URI; the store itself always comes from ``MLFLOW_TRACKING_URI``.
    """
    record = {**record, "tracking_uri": portable_tracking_uri(record["tracking_uri"], project_dir)}
    (Path(folder) / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def portable_tracking_uri(uri: str, project_dir: str | Path = ".") -> str:
    """``uri`` without credentials or absolute machine paths, to name the store in an output.

    A password becomes ``***`` (:func:`recommender.tracking.redact`) and the query and fragment
    go (database URIs may carry ``?password=...``). A local store (``sqlite:``, ``file:`` or a
    plain path) is named relative to ``project_dir``, as DVC names every path it records, so
    ``sqlite:////home/me/proj/mlflow.db`` becomes ``sqlite:///mlflow.db``, still a working URI
    from the project root. A store outside the project keeps only its file name
    (``sqlite:///.../mlflow.db``): where it sits is a fact about one machine.
    """
    uri = tracking.redact(uri.strip())
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().split("+")[0]  # sqlite+pysqlite: a driver named too
    if scheme == "sqlite":
        prefix, _, path = uri.partition(":///")
        path = path.split("?", 1)[0].split("#", 1)[0]
        return f"{prefix}:///{_project_relative(path, project_dir)}" if path else uri
    if scheme == "file":
        return f"file:{_project_relative(parts.path, project_dir)}"
    if not scheme:  # a plain path, which MLflow reads as a file store
        return _project_relative(uri, project_dir)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _project_relative(path: str, project_dir: str | Path) -> str:
    root = Path(project_dir).resolve()
    full = (root / path).resolve()  # an absolute path stays itself
    try:
        return full.relative_to(root).as_posix()
    except ValueError:
        return f".../{full.name}"


def _best(history: dict[str, list[float]], key: str, at: int | None = None) -> float:
    values = history.get(key)
    if not values:
        return float("nan")
    return float(values[at - 1]) if at else float(np.min(values))
