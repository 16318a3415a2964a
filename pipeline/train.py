"""DVC stage ``train``: fit ``train.model`` and log the run (params, curves, model) to MLflow.

    python pipeline/train.py --data data/processed --out models --history reports/train_history.csv

Under ``train.distribute: multi_worker`` start this same command once per worker, each with its
own ``TF_CONFIG`` (``recommender.training.distributed``); only the chief writes the outputs.

Writes ``--out`` atomically: ``bundle/`` (the model with its vocabularies, see
``recommender.scoring.bundle``) and ``run.json`` (the MLflow run and model URI, for evaluate
and register).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the preprocess stage's folder")
    parser.add_argument("--out", required=True, help="model folder to write (replaced atomically)")
    parser.add_argument("--history", required=True, help="per-epoch CSV (a DVC plot)")


def keras_verbosity() -> int:
    """A progress bar in a terminal, a line per epoch in a log, nothing in CI."""
    if os.environ.get("CI"):
        return 0
    return 1 if sys.stdout.isatty() else 2


def train(params: Params, args: argparse.Namespace) -> None:
    from recommender.dataset.processed import load_processed
    from recommender.models.sizing import check_train
    from recommender.training.run import train_and_log

    processed = load_processed(args.data)
    check_train(processed, params.train)
    if params.train.distribute == "multi_worker":  # one process per worker, each its TF_CONFIG
        from recommender.training import distributed, strategy

        if not strategy.is_chief("multi_worker"):  # the chief logs, saves and writes
            distributed.follow_chief(processed, params.train, params.seed)
            log.info("%s: trained in step with the chief; it writes the model", params.train.model)
            return
    result = train_and_log(processed, params, args.data, args.out, args.history, keras_verbosity())
    ndcg = result.get("best_val_ndcg_at_10")
    log.info(
        "%s: best epoch %d of %d, val RMSE %.4f%s, %.1f s; MLflow run %s",
        params.train.model,
        result["best_epoch"],
        result["epochs_run"],
        result["best_val_rmse"],
        "" if ndcg is None else f", val NDCG@10 {ndcg:.4f}",
        result["fit_seconds"],
        result["run_id"],
    )
    if "refit_seconds" in result:
        log.info(
            "%s: refit on train + val (%d rows, from %s) for %d epochs, %.1f s: the model "
            "evaluate sees",
            params.train.model,
            result["refit_train_rows"],
            "the fitted model" if params.train.refit_from == "fitted" else "scratch",
            result["refit_epochs"],
            result["refit_seconds"],
        )


if __name__ == "__main__":
    sys.exit(run_stage("train", train, configure))
