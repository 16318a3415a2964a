"""The window's feedback ratings as canonical ratings, checked by the validate stage's GX suites.

Rows with a rating become ``user_id``, ``item_id``, ``rating``, ``timestamp`` (the ``event_time``,
whole seconds), the schema every source is turned into (:mod:`recommender.core.schema`); a pair
rated twice keeps its latest rating, as a ratings table has one per pair. The items table is the
preprocessed catalog. The suites are the validate stage's own
(:func:`recommender.validation.validate_dataset`, Data Docs made offline the same way), with one
change said in the report (and items new to the catalog join its table, as ``ingest`` adds them
from the feedback snapshot): the table-size floors (``min_ratings``, ``min_users``, ``min_items``)
are for a training set, and a window's size is judged by ``monitor.min_feedback`` instead.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.config import ValidateConfig
from recommender.core.schema import (
    ITEM,
    ITEM_COLUMNS,
    TIMESTAMP,
    USER,
    Dataset,
    DatasetInfo,
)
from recommender.data.feedback import with_unknown_ids
from recommender.monitoring.feedback import rated_rows

#: What the report says about the suites' size floors.
SIZE_NOTE = (
    "the validate stage's suites, with min_ratings, min_users and min_items set to 1 "
    "(table-size floors for a training set; a window's size is judged by monitor.min_feedback), "
    "items new to the catalog added to its table as ingest's merge adds them"
)


def canonical_ratings(
    user_ids: np.ndarray, item_ids: np.ndarray, ratings: np.ndarray, event_time: np.ndarray
) -> tuple[pd.DataFrame, int]:
    """:func:`rated_rows` with one rating per pair, its latest, and how many repeats it dropped."""
    frame = rated_rows(user_ids, item_ids, ratings, event_time)
    # The latest rating of a pair wins (a stable sort keeps log order among equal times).
    frame = frame.sort_values(TIMESTAMP, kind="stable")
    deduped = frame.drop_duplicates([USER, ITEM], keep="last").sort_index()
    return deduped.reset_index(drop=True), len(frame) - len(deduped)


def validate_feedback(
    ratings: pd.DataFrame,
    catalog: pd.DataFrame,
    info: DatasetInfo,
    cfg: ValidateConfig,
    docs_dir: Path,
    now: float | None = None,
) -> dict[str, Any]:
    """Run the validate stage's suites on the window's ratings; Data Docs into ``docs_dir``.

    Returns:
        The validation summary (``success``, counts, each failed expectation) with ``rows``
        and ``suites``; ``success`` is ``None`` and nothing is written when there is no rating.
    """
    if ratings.empty:
        return {"success": None, "rows": 0, "suites": SIZE_NOTE, "note": "no feedback ratings"}
    from recommender.validation import validate_dataset

    relaxed = cfg.model_copy(update={"min_ratings": 1, "min_users": 1, "min_items": 1})
    items = catalog[[c for c in ITEM_COLUMNS if c in catalog.columns]].reset_index(drop=True)
    # An item new to the catalog is what feedback brings, not an error: it joins the items
    # table as ingest's merge would add it (the drift figures count new items).
    items = with_unknown_ids(items, ITEM, ratings[ITEM], {"title": "", "genres": ""})
    # Feedback has no given train/test split, whatever the training source had.
    dataset = Dataset(
        ratings=ratings, items=items, users=None, info=replace(info, has_given_split=False)
    )
    report = validate_dataset(dataset, relaxed, docs_dir=docs_dir, now=now)
    summary = report.summary()
    summary["rows"] = len(ratings)
    summary["suites"] = SIZE_NOTE
    summary["failures_text"] = report.format_failures() if not report.success else ""
    return summary
