"""DVC stage ``validate``: check the canonical tables with the Great Expectations suite.

GX runs on pandas in this process, or with ``data.engine: spark`` on a Spark session of its own
(``params.spark``), through GX's Spark engine: the same checks and messages.

On success: Data Docs in ``--docs``, the summary (a DVC metric) in ``--summary``. On failure: exit 1
with each failed expectation on stderr; the last good reports stay and this run's go to
``validation_failed/`` beside ``--docs``.
"""

from __future__ import annotations

import argparse
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder written by ingest")
    parser.add_argument("--docs", required=True, help="Data Docs folder to write")
    parser.add_argument("--summary", required=True, help="summary JSON (a DVC metric)")


def validate(params: Params, args: argparse.Namespace) -> None:
    # Imported here so that --help does not pay for the library's imports.
    from pathlib import Path

    from recommender.validation import run_validate

    if params.data.engine == "spark":
        # Spark holds the rows (spark.driver_memory bounds its heap): no estimate for this process.
        from recommender.core.spark import spark_session

        with spark_session(params.spark, "validate") as spark:
            report = run_validate(args.data, args.docs, args.summary, params.validate_, spark=spark)
    else:
        from recommender.core import memory
        from recommender.core.io import parquet_rows

        rows = parquet_rows(Path(args.data) / "ratings.parquet")
        memory.check(memory.rows_estimate("validate", rows, "ratings"))
        report = run_validate(args.data, args.docs, args.summary, params.validate_)
    print(f"validate: OK, {report.evaluated} expectations passed; Data Docs in {args.docs}")


if __name__ == "__main__":
    sys.exit(run_stage("validate", validate, configure))
