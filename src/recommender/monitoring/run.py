"""``make monitor``: read a window of the inference log, write ``reports/monitor/``, log a run.

The report folder is staged beside the old one and swapped in whole
(:func:`recommender.core.io.staged_dir`): a run that fails anywhere leaves the previous report.

``summary.json``:

- ``retrain`` (bool), ``reason`` (one sentence), ``reasons`` (each ``kind``: ``drift``,
  ``volume`` or ``online``; ``metric``, ``value``, ``threshold``, ``message``);
- ``window`` (``since``/``until`` ISO UTC and unix, ``hours``), ``params`` (``monitor``),
  ``log_dir``, ``processed``, ``log`` (each endpoint's :class:`~.logs.LogStats`);
- ``traffic``: ``requests`` by endpoint, ``latency_ms`` p50/p95 by endpoint and ``all``,
  ``cold_start_share``, ``unknown_item_share`` (similar_items), ``predict_unknown_*_share``,
  ``malformed_lines``, ``truncated_lines``, ``feedback`` (events, ratings, positive, by event),
  ``recommend_model_versions``;
- ``drift``: ``feedback_ratings``, ``judged``, ``new_users_share``/``new_items_share`` (of the
  feedback ratings), ``new_users``/``new_items`` (distinct), and ``ratings``,
  ``item_popularity``, ``user_activity``: each ``psi``, ``js`` and its ``bins``;
- ``online``: ``served_lists``, ``followed_lists``, ``judged``, ``hit_rate@K``, ``ndcg@K``,
  ``offline_ndcg@K`` and ``offline_source``, ``coverage``, ``distinct_items_served``,
  ``catalog_items``, ``popularity_percentile``;
- ``validation``: the validate stage's summary of the feedback ratings (``success``, counts,
  ``failures``), ``rows``, ``duplicates_dropped``, ``suites``;
- ``mlflow`` (``experiment``, ``run_id``, ``error``), ``generated_at``, ``timings``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.config import Params
from recommender.core.io import staged_dir
from recommender.core.metric_names import flat_metrics
from recommender.monitoring import figures, logs, runlog
from recommender.monitoring.checks import canonical_ratings, validate_feedback
from recommender.monitoring.logs import (
    BOOL,
    COUNT,
    FLOAT,
    INT,
    ITEM,
    ITEMS,
    OPT_FLOAT,
    OPT_STR,
    STR,
    USER,
    Column,
    Interners,
    LogStats,
)
from recommender.monitoring.report import render
from recommender.monitoring.window import Window

log = logging.getLogger("recommender")

#: What the monitor keeps of each endpoint's records (see :data:`logs.CONTRACT`).
FIELDS: dict[str, dict[str, str]] = {
    "recommend": {"time": FLOAT, "latency_ms": FLOAT, "user_id": USER, "items": ITEMS,
                  "cold_start": BOOL, "model_version": STR},
    "similar_items": {"time": FLOAT, "latency_ms": FLOAT, "unknown_item": BOOL},
    "predict": {"time": FLOAT, "latency_ms": FLOAT, "user_ids": COUNT, "unknown_users": INT,
                "unknown_items": INT},
    "feedback": {"time": FLOAT, "latency_ms": FLOAT, "user_id": USER, "item_id": ITEM,
                 "rating": OPT_FLOAT, "event": OPT_STR, "event_time": FLOAT},
}  # fmt: skip

Scans = dict[str, tuple[dict[str, Column], LogStats]]


def read_window(
    log_dir: str | Path, window: Window, horizon_hours: float
) -> tuple[Scans, Interners]:
    """Every endpoint's records in the window; feedback also up to ``horizon_hours`` past it
    (what follows the window's last lists), counted as outside the window in its stats."""
    interners = Interners()
    scans: Scans = {}
    for endpoint, fields in FIELDS.items():
        until = window.until
        if endpoint == "feedback":
            until += horizon_hours * 3600.0
        scans[endpoint] = logs.scan_log(log_dir, endpoint, window.since, until, fields, interners)
    stats = scans["feedback"][1]
    after = int(np.count_nonzero(scans["feedback"][0]["time"].array() >= window.until))
    stats.records -= after
    stats.outside_window += after
    return scans, interners


def compute(
    params: Params, ref: figures.Reference, scans: Scans, interners: Interners, window: Window
) -> dict[str, Any]:
    """Traffic, drift and online figures (no verdict, no offline NDCG yet)."""
    cfg = params.monitor
    feedback = scans["feedback"][0]
    in_window = feedback["time"].array() < window.until
    threshold = params.evaluate.relevance_threshold
    window_fb = figures.feedback_rows(feedback, in_window, threshold)
    every_fb = figures.feedback_rows(feedback, np.ones_like(in_window), threshold)
    traffic = figures.traffic(scans, window.until)
    traffic["feedback"] = {
        "events": int(in_window.sum()),
        "ratings": int(window_fb.rated.sum()),
        "positive": int(window_fb.positive.sum()),
        "by_event": window_fb.events,
    }
    return {
        "traffic": traffic,
        "drift": figures.drift_figures(ref, window_fb, interners, cfg),
        "online": figures.online_figures(ref, scans["recommend"][0], every_fb, interners, cfg),
        "_feedback": window_fb,
    }


def metrics_of(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's numbers as MLflow metrics (``drift.item_popularity.psi`` ->
    ``drift_item_popularity_psi``; ``@`` -> ``_at_``); lists, text and nulls left out."""
    flat: dict[str, float] = {}
    for section in ("traffic", "drift", "online"):
        flat.update(flat_metrics(summary[section], section))
    validation = {k: summary["validation"].get(k) for k in ("rows", "success")}
    flat.update(flat_metrics(validation, "validation"))
    flat["retrain"] = float(summary["retrain"])
    return flat


def _run_params(summary: dict[str, Any]) -> dict[str, Any]:
    w = summary["window"]
    out = {f"monitor.{k}": v for k, v in summary["params"].items()}
    out.update({"window.since": w["since"], "window.until": w["until"], "window.hours": w["hours"]})
    out.update({"log_dir": summary["log_dir"], "processed": summary["processed"]})
    return out


def _write(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out / "index.html").write_text(render(summary), encoding="utf-8")


def publish(
    params: Params,
    summary: dict[str, Any],
    fb: figures.Feedback,
    ref: figures.Reference,
    interners: Interners,
    out_dir: Path,
    tracking_error: str | None,
) -> None:
    """Validate the feedback (Data Docs), write the report, log the run; swap the folder in."""
    ratings, dropped = canonical_ratings(
        interners.user.raw()[fb.user], interners.item.raw()[fb.item], fb.rating, fb.event_time
    )
    with staged_dir(out_dir) as tmp:
        started = time.perf_counter()
        summary["validation"] = validate_feedback(
            ratings, ref.catalog, ref.info, params.validate_, tmp / "validation"
        )
        summary["validation"]["duplicates_dropped"] = dropped
        summary["timings"]["validate_s"] = round(time.perf_counter() - started, 3)
        summary["mlflow"] = {"experiment": runlog.EXPERIMENT, "run_id": None,
                             "error": tracking_error}  # fmt: skip
        if tracking_error is not None:
            _write(tmp, summary)
            return
        tags = {"retrain": str(summary["retrain"]).lower()}
        summary["mlflow"]["run_id"] = runlog.start_run(_run_params(summary), tags)
        ok = False
        try:
            _write(tmp, summary)
            ok = True
        finally:
            runlog.finish_run(tmp, metrics_of(summary), ok)


def run_monitor(
    params: Params,
    log_dir: str | Path,
    processed_dir: str | Path,
    out_dir: str | Path,
    window: Window,
    metrics_path: str | Path = "reports/metrics.json",
) -> dict[str, Any]:
    """The whole monitor run; returns ``summary.json``'s content.

    Raises:
        DataError: ``processed_dir`` (or one of its files) is missing; the previous report stays.
    """
    cfg = params.monitor
    started = time.perf_counter()
    ref = figures.load_reference(processed_dir)
    scans, interners = read_window(log_dir, window, cfg.horizon_hours)
    read_s = time.perf_counter() - started
    if not any(stats.files for _, stats in scans.values()):
        log.warning("no inference log files under %s (the service writes them there when "
                    "serve.inference_log is true and serve.inference_log_exporter is file)",
                    log_dir)  # fmt: skip
    log.info("read %s log records in %.1f s", f"{sum(s.records for _, s in scans.values()):,}",
             read_s)  # fmt: skip
    result = compute(params, ref, scans, interners, window)
    fb = result.pop("_feedback")
    figures_s = time.perf_counter() - started - read_s
    tracking_error = runlog.connect()
    if tracking_error:
        log.warning("no MLflow run: %s", tracking_error)
    offline = runlog.offline_ndcg(
        params.tracking.registered_model, cfg.k, metrics_path, tracking_error
    )
    result["online"][f"offline_ndcg@{cfg.k}"] = offline.ndcg
    result["online"]["offline_source"] = offline.source
    retrain, reasons, reason = figures.verdict(result["drift"], result["online"], cfg)
    summary: dict[str, Any] = {
        "retrain": retrain,
        "reason": reason,
        "reasons": reasons,
        "window": window.to_dict(),
        "params": cfg.model_dump(),
        "log_dir": str(log_dir),
        "processed": str(processed_dir),
        "log": {ep: stats.to_dict() for ep, (_, stats) in scans.items()},
        **result,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "timings": {"read_s": round(read_s, 3), "figures_s": round(figures_s, 3),
                    "tracking_s": round(time.perf_counter() - started - read_s - figures_s, 3)},
    }  # fmt: skip
    publish(params, summary, fb, ref, interners, Path(out_dir), tracking_error)
    summary["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    return summary
