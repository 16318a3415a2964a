"""DVC stage ``evaluate``: test-split metrics, baselines, ranking, slices and plots.

    python pipeline/evaluate.py --data data/processed --model models --metrics reports/metrics.json
        --plots reports/plots --history reports/train_history.csv

Writes the metrics (a DVC metric), PNG figures and plot data, and logs the same to the training
run in MLflow.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the preprocess stage's folder")
    parser.add_argument("--model", required=True, help="the train stage's folder")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--plots", required=True, help="folder for PNGs and plot data")
    parser.add_argument("--history", required=True, help="the train stage's per-epoch CSV")


def evaluate(params: Params, args: argparse.Namespace) -> None:
    from recommender.evaluation.run import evaluate_and_log

    result = evaluate_and_log(params, args.data, args.model, args.metrics, args.plots, args.history)
    test, base, rank = result["test"], result["baselines"], result["ranking"]
    k = params.evaluate.k
    log.info(
        "test RMSE %.4f (bias baseline %.4f, global mean %.4f), MAE %.4f, NDCG@%d %.4f",
        test["rmse"],
        base["bias"]["rmse"],
        base["global_mean"]["rmse"],
        test["mae"],
        k,
        rank[f"ndcg@{k}"] or 0.0,
    )


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", evaluate, configure))
