"""DVC stage ``ingest``: read the configured data source into the canonical tables.

    python pipeline/ingest.py --out data/interim [--feedback data/feedback] [--params params.yaml]

With ``--feedback``, the ratings the service's users sent back (the ``feedback`` stage's snapshot)
are appended to the source's before ``ingest.duplicates`` applies. Writes ``ratings.parquet``,
``items.parquet``, ``users.parquet`` and ``dataset.json`` to ``--out``, replacing the folder
atomically: a failure leaves the previous output untouched.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (e.g. data/interim)")
    parser.add_argument("--feedback", help="the feedback stage's snapshot folder (data/feedback)")


def ingest(params: Params, args: argparse.Namespace) -> None:
    if params.data.engine == "spark":
        return ingest_on_spark(params, args)
    from recommender.core import memory
    from recommender.core.schema import write_dataset
    from recommender.data import ingest_estimate, load_dataset

    estimate = ingest_estimate(params)
    if estimate is not None:
        memory.check(estimate)
    dataset = load_dataset(params, feedback=args.feedback)
    write_dataset(dataset, args.out)
    r = dataset.ratings
    log.info(
        "%s: %d ratings, %d users, %d items -> %s",
        dataset.info.source,
        len(r),
        r["user_id"].nunique(),
        r["item_id"].nunique(),
        args.out,
    )


def ingest_on_spark(params: Params, args: argparse.Namespace) -> None:
    """``data.engine: spark``: the duplicate policy and the interim ratings on Spark."""
    from recommender.core.spark import spark_session
    from recommender.data.spark_ingest import ingest_spark

    with spark_session(params.spark, "ingest") as spark:
        ingest_spark(spark, params, args.out, feedback=args.feedback)


if __name__ == "__main__":
    sys.exit(run_stage("ingest", ingest, configure))
