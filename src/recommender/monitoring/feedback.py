"""Logged feedback as canonical ratings: what the ``feedback`` stage snapshots, and what the
monitor validates (:func:`rated_rows`, one conversion for both).

Kept apart from :mod:`recommender.data.feedback` (the snapshot's file and ``ingest``'s merge) so
that ``ingest`` does not depend on the log reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.schema import ITEM, RATING, TIMESTAMP, USER
from recommender.monitoring.logs import read_log


def rated_rows(
    user_ids: np.ndarray, item_ids: np.ndarray, ratings: np.ndarray, event_time: np.ndarray
) -> pd.DataFrame:
    """The feedback rows with a rating, in the canonical ratings schema (log order, repeats kept).

    Args:
        user_ids, item_ids: Raw ids, one per feedback row.
        ratings: The rows' ratings (NaN: no rating; those rows are left out).
        event_time: The rows' ``event_time`` in unix seconds (whole seconds in ``timestamp``).
    """
    rated = ~np.isnan(ratings)
    return pd.DataFrame(
        {
            USER: _ids(user_ids[rated]),
            ITEM: _ids(item_ids[rated]),
            RATING: ratings[rated].astype(np.float64),
            TIMESTAMP: np.floor(event_time[rated]).astype(np.int64),
        }
    )


def _ids(values: np.ndarray) -> Any:
    """Raw ids as the canonical column: int64 when every id is an int, else text."""
    if values.dtype != object or all(type(v) is int for v in values):
        try:
            return values.astype(np.int64)
        except OverflowError:  # past 64 bits: GX reports the type, the row stays
            return values
    return values


def collect_feedback(
    log_dir: str | Path, timestamps: tuple[int, int] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every rating ``POST /feedback`` logged under ``log_dir``, as canonical ratings.

    Ids stay as the service received them (JSON numbers or strings):
    :func:`recommender.data.feedback.read_snapshot` gives them the dataset's id type. Rows are
    sorted by time, user and item, so the same log gives the same bytes.

    Args:
        log_dir: The inference log's folder (``serve.log_dir``).
        timestamps: ``[min, max]`` unix seconds a rating's time must fall in (``validate``'s, see
            :func:`recommender.validation.suites.timestamp_bounds`); the others are left out
            and counted: a client's clock or a replayed old event would otherwise stop the
            next retrain at ``validate``, with every good rating of the snapshot.

    Returns:
        The ratings (``user_id``, ``item_id``, ``rating``, ``timestamp``) and what was read: files,
        records, malformed lines, events without a rating, ratings out of the time range.
    """
    records, stats = read_log(log_dir, "feedback")
    ratings = rated_rows(
        records[USER].to_numpy(),
        records[ITEM].to_numpy(),
        records[RATING].to_numpy(dtype=np.float64),
        records["event_time"].to_numpy(dtype=np.float64),
    )
    rated = len(ratings)
    if timestamps is not None:
        low, high = timestamps
        ratings = ratings[ratings[TIMESTAMP].between(low, high)]
    # Repeats are kept (ingest's duplicate policy decides); ids order as text, whatever their type.
    ratings = ratings.sort_values(
        [TIMESTAMP, USER, ITEM],
        kind="stable",
        key=lambda c: c if c.name == TIMESTAMP else c.astype(str),
    ).reset_index(drop=True)
    summary = {
        "log_dir": str(log_dir),
        "files": stats.files,
        "records": stats.records,
        "malformed_lines": stats.malformed,
        "ratings": len(ratings),
        "events_without_rating": int(stats.records - rated),
        "out_of_time_range": int(rated - len(ratings)),
        "users": int(ratings[USER].nunique()),
        "items": int(ratings[ITEM].nunique()),
    }
    return ratings, summary
