"""DVC stage ``preprocess``: split the ratings, encode ids, build features.

Usage (see dvc.yaml):
``python pipeline/preprocess.py --data DIR --out DIR --summary FILE [--validation FILE]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the ingest stage's folder")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--summary", required=True, help="JSON metrics file for DVC")
    parser.add_argument(
        "--validation",
        help="the validate stage's summary (reports/validation.json): if it passed on these very "
        "ratings, the Spark engine does not repeat its checks (nulls, one rating per pair)",
    )


def preprocess(params: Params, args: argparse.Namespace) -> None:
    if params.data.engine == "spark":
        return preprocess_on_spark(params, args)
    from recommender.core import memory
    from recommender.core.io import parquet_rows
    from recommender.dataset.processed import write_processed
    from recommender.preprocess import split

    rows = parquet_rows(Path(args.data) / "ratings.parquet")
    memory.check(memory.rows_estimate("preprocess", rows, "ratings"))
    dataset = split.read_interim(args.data)
    processed = split.preprocess(
        dataset, params.preprocess, params.seed, ratings_path=Path(args.data) / "ratings.parquet"
    )
    write_processed(processed, args.out, args.summary)
    split_rows = (processed.summary or {}).get("rows")
    log.info("%s split: %s -> %s", params.preprocess.split, split_rows, args.out)


def preprocess_on_spark(params: Params, args: argparse.Namespace) -> None:
    """``data.engine: spark``: the ratings go from the interim Parquet to the split folders
    without passing through this process."""
    import tempfile

    from recommender.core.spark import spark_session
    from recommender.core.validated import passed_on
    from recommender.dataset.processed import write_processed
    from recommender.preprocess.split_spark import preprocess_spark

    validated = args.validation is not None and passed_on(args.validation, args.data)
    if validated:
        log.info("%s passed validate (%s): its checks are not repeated", args.data, args.validation)
    out = Path(args.out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        spark_session(params.spark, "preprocess") as spark,
        tempfile.TemporaryDirectory(prefix=f".{out.name}-splits-", dir=out.parent) as scratch,
    ):
        processed, write_splits = preprocess_spark(
            spark, args.data, params.preprocess, params.seed, Path(scratch), validated=validated
        )
        write_processed(processed, args.out, args.summary, write_splits=write_splits)
    assert processed.summary is not None
    log.info(
        "%s split on Spark: %s -> %s", params.preprocess.split, processed.summary["rows"], args.out
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("preprocess", preprocess, configure, argv)


if __name__ == "__main__":
    sys.exit(main())
