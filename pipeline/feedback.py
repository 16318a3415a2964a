"""DVC stage ``feedback``: the ratings the service's ``POST /feedback`` logged, as a snapshot.

    python pipeline/feedback.py --out data/feedback [--logs <serve.log_dir>] [--params params.yaml]

Reads every feedback record of the inference log (``serve.log_dir``, see
:mod:`recommender.data.feedback`) and writes ``ratings.csv`` (the canonical ratings schema) and
``summary.json`` to ``--out``, replacing the folder atomically. No log yet is an empty snapshot.
Ratings whose time ``validate`` would refuse (``validate.timestamp_min`` .. ``timestamp_max``)
are left out, counted and warned about.
DVC runs it on every ``dvc repro`` (``always_changed``: the log grows outside the pipeline); when
no new rating came in, the snapshot's bytes are the same and ``ingest`` stays up to date.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (e.g. data/feedback)")
    parser.add_argument("--logs", help="the inference log's folder (default: serve.log_dir)")


def feedback(params: Params, args: argparse.Namespace) -> None:
    from recommender.data.feedback import write_snapshot
    from recommender.monitoring.feedback import collect_feedback
    from recommender.validation.suites import timestamp_bounds

    log_dir = args.logs or params.serve.log_dir
    bounds = timestamp_bounds(params.validate_)
    ratings, summary = collect_feedback(log_dir, bounds)
    write_snapshot(ratings, summary, args.out)
    log.info(
        "%s: %d feedback ratings (%d users, %d items; %d events without a rating, %d malformed "
        "lines skipped) -> %s",
        log_dir,
        summary["ratings"],
        summary["users"],
        summary["items"],
        summary["events_without_rating"],
        summary["malformed_lines"],
        args.out,
    )
    if summary["out_of_time_range"]:
        log.warning(
            "%s: %d feedback ratings left out: their time is outside validate.timestamp_min .. "
            "timestamp_max (%s .. %s), which validate would refuse",
            log_dir,
            summary["out_of_time_range"],
            params.validate_.timestamp_min,
            params.validate_.timestamp_max or "now + 1 day",
        )


if __name__ == "__main__":
    sys.exit(run_stage("feedback", feedback, configure))
