"""Logged feedback as canonical ratings: what the ``feedback`` stage snapshots.

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


def collect_feedback(log_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every rating ``POST /feedback`` logged under ``log_dir``, as canonical ratings.

    Ids stay as the service received them (JSON numbers or strings):
    :func:`recommender.data.feedback.read_snapshot` gives them the dataset's id type. Rows are
    sorted by time, user and item, so the same log gives the same bytes.

    Returns:
        The ratings (``user_id``, ``item_id``, ``rating``, ``timestamp``) and what was read: files,
        records, malformed lines, events without a rating.
    """
    records, stats = read_log(log_dir, "feedback")
    rated = records[records[RATING].notna()]
    ratings = pd.DataFrame(
        {
            USER: rated[USER].astype(str),
            ITEM: rated[ITEM].astype(str),
            RATING: rated[RATING].astype("float64"),
            TIMESTAMP: np.floor(rated["event_time"].astype("float64")).astype("int64"),
        }
    )
    ratings = ratings.sort_values([TIMESTAMP, USER, ITEM], kind="stable").reset_index(drop=True)
    summary = {
        "log_dir": str(log_dir),
        "files": stats.files,
        "records": stats.records,
        "malformed_lines": stats.malformed,
        "ratings": len(ratings),
        "events_without_rating": int(stats.records - len(ratings)),
        "users": int(ratings[USER].nunique()),
        "items": int(ratings[ITEM].nunique()),
    }
    return ratings, summary
