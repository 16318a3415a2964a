"""Inference-log records in the contract's format, for the monitor's tests.

Each endpoint's record has exactly the contract's columns (``recommender.monitoring.CONTRACT``)
plus the three BentoML adds, as the service's ``bentoml.monitor`` log-file exporter writes them:
one JSON object a line in ``<log_dir>/<endpoint>/data/data.<worker>.log[.<date>]``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recommender.monitoring import CONTRACT

_ids = itertools.count(1)
#: Values of the columns a test does not set.
DEFAULTS: dict[str, dict[str, Any]] = {
    "recommend": {"user_id": 1, "k": 10, "exclude_rated": True, "genres": None, "items": [],
                  "scores": [], "cold_start": False},
    "similar_items": {"item_id": 1, "k": 10, "items": [], "scores": [], "unknown_item": False},
    "predict": {"user_ids": [1], "item_ids": [1], "scores": [3.5], "unknown_users": 0,
                "unknown_items": 0},
    "feedback": {"user_id": 1, "item_id": 1, "rating": None, "event": "rate", "event_time": None,
                 "served_request_id": None},
}  # fmt: skip


def record(endpoint: str, time: float, **values: Any) -> dict[str, Any]:
    """One record of ``endpoint`` logged at unix ``time`` (``event_time`` defaults to it)."""
    rid = next(_ids)
    out: dict[str, Any] = {
        "x_request_id": f"req{rid}",
        "time": time,
        "latency_ms": 2.5,
        "model_name": "recommender",
        "model_version": "1",
        **DEFAULTS[endpoint],
        "timestamp": "2026-12-07T14:00:00.000000",
        "request_id": str(rid),
        "trace_id": str(rid * 7),
    }
    if endpoint == "feedback":
        out["event_time"] = time
    if endpoint == "recommend" and "items" in values and "scores" not in values:
        out["scores"] = [1.0 / (i + 1) for i in range(len(values["items"]))]
    out.update(values)
    unknown = set(values) - set(CONTRACT[endpoint])
    assert not unknown, f"{endpoint} has no column(s) {unknown}"
    return out


def write_log(
    log_dir: Path,
    endpoint: str,
    records: Iterable[dict[str, Any]],
    *,
    worker: int = 0,
    rotated: str = "",
    tail: str = "",
) -> Path:
    """Append ``records`` as JSON lines to a data file (``rotated``: a date suffix), then
    ``tail`` as is (say a line cut mid-write, with no newline)."""
    folder = log_dir / endpoint / "data"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"data.{worker}.log{'.' + rotated if rotated else ''}"
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write(tail)
    schema = log_dir / endpoint / "schema" / f"schema.{worker}.log"
    schema.parent.mkdir(parents=True, exist_ok=True)
    schema.write_text(json.dumps({"meta_data": {}, "columns": list(CONTRACT[endpoint])}) + "\n")
    return path
