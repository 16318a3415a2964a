"""DVC stage ``register``: version the model in MLflow; move ``champion`` only through the gate.

    python pipeline/register.py --model models --data data/processed --metrics reports/metrics.json
        --lock dvc.lock --out reports/promotion.json

The registry is the one ``MLFLOW_TRACKING_URI`` names (default: the project's ``mlflow.db``); on a
server with a login, as ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. A 401 or 403
fails the stage in one line naming the user, what was refused and the grant to ask for.
Writes ``--out`` (a DVC metric): the decision and why, both models' test RMSE, the interval, and
the lineage that is also tagged on the model version. See ``recommender.registry`` for the rule.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the train stage's folder (run.json)")
    parser.add_argument("--data", required=True, help="the preprocess stage's folder")
    parser.add_argument("--metrics", required=True, help="the evaluate stage's metrics JSON")
    parser.add_argument("--lock", default=None, help="dvc.lock, hashed into the lineage")
    parser.add_argument("--out", required=True, help="promotion JSON to write")


def register(params: Params, args: argparse.Namespace) -> None:
    from recommender.registry.register import register_and_gate

    record = register_and_gate(params, args.model, args.data, args.metrics, args.out, args.lock)
    log.info(
        "%s version %s %s: %s",
        record["registered_model"],
        record["candidate_version"],
        record["decision"],
        record["reason"],
    )


if __name__ == "__main__":
    sys.exit(run_stage("register", register, configure))
