"""``make tune``: search ``tune.family``'s knobs on the validation split, write the best back.

    python pipeline/tune.py --data data/processed --report reports/tune.json \
        --write-params params.yaml

Not a DVC stage (it edits ``params.yaml``, which the stages read): run it, look at the report and
the MLflow parent run, then ``dvc repro`` retrains with the written values. Without
``--write-params`` nothing but the report and the MLflow runs is written.
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
    parser.add_argument("--report", required=True, help="JSON summary of every trial to write")
    parser.add_argument("--write-params", help="params file to update with the best values")


def tune(params: Params, args: argparse.Namespace) -> None:
    from recommender.core.io import write_json
    from recommender.dataset.processed import load_processed
    from recommender.models.sizing import check_train
    from recommender.training import tuning

    processed = load_processed(args.data)
    trial = params.train.model_copy(update={"model": params.tune.family})
    check_train(processed, trial)
    result = tuning.tune(processed, params)
    write_json(result.to_json(), args.report)
    log.info(
        "%s: best %s %.4f in %d trials with %s (MLflow parent run %s)",
        result.family,
        result.metric,
        result.best_value,
        len(result.trials),
        result.best_params,
        result.parent_run_id,
    )
    if args.write_params:
        tuning.write_best_params(result, args.write_params)
        log.info("wrote them into %s (train.model is unchanged)", args.write_params)


if __name__ == "__main__":
    sys.exit(run_stage("tune", tune, configure))
