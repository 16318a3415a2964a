"""Data sources, read into the canonical tables of :mod:`recommender.core.schema`.

:func:`load_dataset` is what the ``ingest`` stage calls: it picks the reader for
``data.source``, applies the rating scale and the ``ingest.duplicates`` policy, and returns a
:class:`~recommender.core.schema.Dataset`.

Importing this package is cheap (the readers load on first use) and never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.core import memory

if TYPE_CHECKING:
    import pandas as pd

    from recommender.core.config import Params
    from recommender.core.schema import Dataset, DatasetInfo

__all__ = ["ingest_estimate", "load_dataset", "read_source", "resolve_duplicates", "with_merged"]

log = logging.getLogger(__name__)


def resolve_duplicates(ratings: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, int]:
    """Apply ``ingest.duplicates`` to repeated (user, item) pairs.

    Args:
        ratings: Canonical ratings, in file order.
        policy: ``error`` leaves them for the ``validate`` stage to reject; ``keep_first`` /
            ``keep_last`` keep the earliest / latest rating by timestamp (ties: file order);
            ``mean`` keeps one row with the mean rating and the latest timestamp (and that latest
            row's ``given_split``).

    Returns:
        The ratings (first-seen order kept) and how many rows were merged away.
    """
    from recommender.core.schema import ITEM, RATING, TIMESTAMP, USER

    pair = [USER, ITEM]
    n_dup = int(ratings.duplicated(pair).sum())
    if n_dup == 0:
        return ratings, 0
    if policy == "error":
        log.warning("%d duplicate (user, item) ratings left in place for validate", n_dup)
        return ratings, 0
    by_time = ratings.sort_values(TIMESTAMP, kind="stable")
    if policy in ("keep_first", "keep_last"):
        keep = "first" if policy == "keep_first" else "last"
        out = by_time.drop_duplicates(pair, keep=keep).sort_index()
    elif policy == "mean":
        latest = by_time.drop_duplicates(pair, keep="last")
        mean = by_time.groupby(pair, sort=False)[RATING].mean()
        latest = latest.join(mean.rename("_mean"), on=pair)
        latest[RATING] = latest.pop("_mean").astype("float64")
        # Place each merged pair where it first appeared in the file.
        first_seen = ratings.reset_index().drop_duplicates(pair)[[*pair, "index"]]
        latest = latest.merge(first_seen, on=pair, how="left")
        out = latest.sort_values("index", kind="stable").drop(columns="index")
    else:
        raise ValueError(f"unknown duplicates policy {policy!r}")
    out = out.reset_index(drop=True)[list(ratings.columns)]
    merged = len(ratings) - len(out)
    log.info("ingest.duplicates=%s: merged %d duplicate (user, item) ratings", policy, merged)
    return out, merged


def load_dataset(params: Params, feedback: str | Path | None = None) -> Dataset:
    """Read ``params.data.source`` into canonical tables, ``ingest.duplicates`` applied.

    See :func:`read_source` for the arguments and errors; the info's ``extra`` counts the
    merged duplicates.
    """
    dataset = read_source(params, feedback)
    ratings, merged = resolve_duplicates(dataset.ratings, params.ingest.duplicates)
    return dataclasses.replace(dataset, ratings=ratings, info=with_merged(dataset.info, merged))


def with_merged(info: DatasetInfo, merged: int) -> DatasetInfo:
    """``info`` with the number of duplicates merged away under ``extra`` (when there were)."""
    extra = dict(info.extra)
    if merged:
        extra["duplicates_merged"] = merged
    return dataclasses.replace(info, extra=extra)


def read_source(params: Params, feedback: str | Path | None = None) -> Dataset:
    """Read ``params.data.source`` into canonical tables, duplicates as they come.

    Args:
        params: Reads ``seed``, ``data``, ``synthetic``, ``csv`` and ``ingest``.
        feedback: The ``feedback`` stage's snapshot folder: its ratings are appended to the
            source's before the duplicate policy applies (:mod:`recommender.data.feedback`).

    Returns:
        The dataset, its info carrying the rating scale (``data.rating_scale`` if set, else the
        source's own).

    Raises:
        DataError: A file is missing or cannot be parsed (the message names file, line, column).
        ConfigError: The source's settings cannot be met.
    """
    from recommender.core.schema import SOURCE_SCALES

    source = params.data.source
    scale = params.data.rating_scale or SOURCE_SCALES[source]
    if source == "synthetic":
        from recommender.data.synthetic import generate

        dataset = generate(params.synthetic, seed=params.seed, scale=scale)
    elif source == "csv":
        from recommender.data.csv_source import load_csv

        dataset = load_csv(params.data, params.csv, scale)
    else:
        from recommender.data.movielens import load_movielens

        dataset = load_movielens(
            source,
            params.data.path,
            scale,
            download=params.data.download,
            fold=params.ingest.ml100k_fold,
        )
    if feedback is not None:
        from recommender.data.feedback import merge_feedback, read_snapshot

        dataset = merge_feedback(dataset, read_snapshot(feedback, dataset.info.id_type))
    return dataclasses.replace(dataset, info=dataclasses.replace(dataset.info, rating_scale=scale))


#: Bytes per line of a ratings text file, at the short end (ML-100K's u.data: 20.0; ML-25M's
#: ratings.csv: 27): rows = file bytes / this, an upper estimate.
MIN_BYTES_PER_LINE = 20


def ingest_estimate(params: Params) -> memory.Estimate | None:
    """The ingest stage's peak for the sources whose size is known before reading them: the
    synthetic generator (``synthetic.n_ratings``) and a ``csv`` file (its bytes /
    :data:`MIN_BYTES_PER_LINE`); None for MovieLens (fixed sizes, checked again by validate and
    preprocess once they are tables)."""
    source = params.data.source
    if source == "synthetic":
        rows = params.synthetic.n_ratings
        return memory.rows_estimate("ingest", rows, "synthetic ratings")
    if source == "csv" and params.data.path:
        files = [params.data.path, params.csv.test_path]
        size = sum(Path(f).stat().st_size for f in files if f and Path(f).is_file())
        return memory.rows_estimate(
            "ingest", size // MIN_BYTES_PER_LINE, "csv ratings, ~1 per 20 bytes"
        )
    return None
