"""``make monitor``: a window of the service's inference log against the training data.

    python pipeline/monitor.py --out reports/monitor [--logs logs/inference]
        [--processed data/processed] [--until 2026-12-07T14:00] [--window-hours 168]

Writes ``--out`` (``index.html``, ``summary.json`` with ``retrain`` and ``reason``, the feedback's
Data Docs in ``validation/``) atomically, and logs an MLflow run in the ``monitoring`` experiment.
Not a DVC stage: the log grows outside the pipeline.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage

log = logging.getLogger("recommender")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="report folder (replaced atomically)")
    parser.add_argument("--logs", help="the inference log folder (default: params serve.log_dir)")
    parser.add_argument("--processed", default="data/processed", help="preprocess's folder")
    parser.add_argument(
        "--metrics",
        default="reports/metrics.json",
        help="evaluate's metrics: the offline NDCG when the registry does not answer",
    )
    parser.add_argument("--until", help="the window's end: ISO time, UTC (default: monitor.until)")
    parser.add_argument(
        "--window-hours", help="hours before --until, or 'all' (monitor.window_hours)"
    )


def monitor(params: Params, args: argparse.Namespace) -> None:
    from recommender.monitoring.run import run_monitor
    from recommender.monitoring.window import parse_hours, resolve_window

    cfg = params.monitor
    hours = cfg.window_hours if args.window_hours is None else parse_hours(args.window_hours)
    until, where = (args.until, "--until") if args.until else (cfg.until, "monitor.until")
    window = resolve_window(until, hours, until_from=where)
    logs = args.logs or params.serve.log_dir
    summary = run_monitor(params, logs, args.processed, args.out, window, args.metrics)
    word = "RETRAIN" if summary["retrain"] else "no retrain"
    log.info("%s: %s; report in %s/index.html", word, summary["reason"], args.out)


if __name__ == "__main__":
    sys.exit(run_stage("monitor", monitor, configure))
