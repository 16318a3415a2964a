"""Feedback the service logged, as training data: the ``feedback`` stage's snapshot and its merge.

The service records every ``POST /feedback`` in its inference log (``serve.log_dir``). The
``feedback`` stage (:func:`recommender.monitoring.feedback.collect_feedback`, then
:func:`write_snapshot`) turns every logged rating into a row of the canonical ratings schema and
writes ``ratings.csv`` to ``data/feedback``: a DVC-cached output, so each retrain's feedback is a
versioned input. Events without a rating (``click``, ``view``...) are counted, not trained on: the
models learn from explicit ratings. The file's bytes depend only on the logged feedback (rows
sorted), so a stage run that found nothing new leaves ``ingest`` up to date.

``ingest`` appends the snapshot to its source's ratings (:func:`merge_feedback`) before
``ingest.duplicates`` resolves repeated (user, item) pairs, so a re-rating through the endpoint is
a duplicate like any other: ``keep_last`` trains on the newest one, ``error`` lets ``validate``
stop the run and name the pairs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recommender.core.errors import DataError
from recommender.core.io import staged_dir
from recommender.core.schema import (
    GIVEN_SPLIT,
    ITEM,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
)

if TYPE_CHECKING:
    from recommender.core.schema import Dataset

log = logging.getLogger(__name__)

#: The snapshot's table and its record, in the stage's output folder.
RATINGS_FILE = "ratings.csv"
SUMMARY_FILE = "summary.json"


def write_snapshot(ratings: pd.DataFrame, summary: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``ratings.csv`` and ``summary.json`` to ``out_dir``, replacing it atomically."""
    with staged_dir(out_dir) as tmp:
        ratings.to_csv(tmp / RATINGS_FILE, index=False, columns=RATING_COLUMNS)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def read_snapshot(folder: str | Path, id_type: str) -> pd.DataFrame:
    """The snapshot's ratings with ids of the dataset's type (``int`` or ``str``).

    Raises:
        DataError: The file is missing or unreadable, or an id is not of the dataset's type (the
            message names the file, line and column).
    """
    path = Path(folder) / RATINGS_FILE
    if not path.is_file():
        raise DataError(path, "no feedback snapshot", expected="the feedback stage's output")
    try:
        frame = pd.read_csv(path, dtype={USER: str, ITEM: str}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(path, f"cannot be read as CSV: {exc}") from None
    missing = [c for c in RATING_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}", expected=", ".join(RATING_COLUMNS))
    if id_type == "int":
        for column in (USER, ITEM):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = numbers.isna() | (numbers != numbers.round())
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    path,
                    f"id {frame[column].iloc[row]!r} is not an integer",
                    row=row + 2,  # 1-based, after the header line
                    column=column,
                    expected="integer ids, as the dataset's (a model trained on int ids)",
                )
            frame[column] = numbers.astype("int64")
    frame[RATING] = frame[RATING].astype("float64")
    frame[TIMESTAMP] = frame[TIMESTAMP].astype("int64")
    return frame[RATING_COLUMNS]


def merge_feedback(dataset: Dataset, feedback: pd.DataFrame) -> Dataset:
    """The dataset with the feedback ratings appended (before the duplicate policy runs).

    An item or user the source does not list gets a row of unknown attributes, so the items table
    still covers every rated item (``validate`` checks it). On a source with a canonical split,
    feedback is training data.
    """
    if feedback.empty:
        return dataset
    rows = feedback.copy()
    if GIVEN_SPLIT in dataset.ratings.columns:
        rows[GIVEN_SPLIT] = "train"
    ratings = pd.concat([dataset.ratings, rows[list(dataset.ratings.columns)]], ignore_index=True)
    items = with_unknown_ids(dataset.items, ITEM, rows[ITEM], {"title": "", "genres": ""})
    users = dataset.users
    if users is not None:
        users = with_unknown_ids(users, USER, rows[USER], {"gender": "", "occupation": ""})
    extra = dict(dataset.info.extra)
    extra["feedback_ratings"] = len(rows)
    info = dataclasses.replace(dataset.info, extra=extra)
    log.info(
        "feedback: %d ratings appended (%d new users, %d new items)",
        len(rows),
        int((~pd.Index(rows[USER].unique()).isin(dataset.ratings[USER].unique())).sum()),
        len(items) - len(dataset.items),
    )
    return dataclasses.replace(dataset, ratings=ratings, items=items, users=users, info=info)


def with_unknown_ids(
    table: pd.DataFrame, column: str, ids: pd.Series, text: dict[str, str]
) -> pd.DataFrame:
    """``table`` (items or users) with a row of unknown attributes for each id it lacks: ``text``
    columns get the given text, the others a missing value."""
    new = pd.Index(ids.unique()).difference(pd.Index(table[column]))
    if new.empty:
        return table
    filler = pd.DataFrame(
        {
            c: np.asarray(new, dtype=table[c].dtype)
            if c == column
            else [text[c]] * len(new)
            if c in text
            else pd.Series([pd.NA] * len(new), dtype=table[c].dtype)
            for c in table.columns
        }
    )
    return pd.concat([table, filler.astype(table.dtypes.to_dict())], ignore_index=True)
