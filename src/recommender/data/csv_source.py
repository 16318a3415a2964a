"""The ``csv`` data source: a ratings file the user brings (and optionally a test and an items
file), read with :func:`~recommender.data.delimited.read_table`'s line-precise errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.core.config import CsvConfig, DataConfig, RatingScale
from recommender.core.errors import ConfigError
from recommender.core.schema import (
    GIVEN_SPLIT,
    ITEM,
    ITEM_COLUMNS,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
    Dataset,
    DatasetInfo,
)
from recommender.data.delimited import read_table

log = logging.getLogger(__name__)


def _read_ratings(path: Path, cfg: CsvConfig) -> pd.DataFrame:
    """One ratings file of the ``csv`` source, in canonical columns."""
    cols = cfg.columns
    stamp = [cols.timestamp] if cols.timestamp else []
    wanted = [cols.user_id, cols.item_id, cols.rating, *stamp]
    canonical = [USER, ITEM, RATING] + ([TIMESTAMP] if cols.timestamp else [])
    if cfg.header:
        table = read_table(
            path,
            sep=cfg.sep,
            encoding=cfg.encoding,
            header=True,
            required=wanted,
            what="a ratings file with a header naming " + ", ".join(wanted),
            sep_name="csv.sep",
        )
        names = dict(zip(canonical, wanted, strict=True))
    else:
        table = read_table(
            path,
            sep=cfg.sep,
            encoding=cfg.encoding,
            header=False,
            names=canonical,
            what="a ratings file with fields " + ", ".join(canonical),
            sep_name="csv.sep",
        )
        names = {c: c for c in canonical}
    ratings = pd.DataFrame(
        {
            USER: table.ids(names[USER], cfg.id_type),
            ITEM: table.ids(names[ITEM], cfg.id_type),
            RATING: table.floats(names[RATING], expected="a numeric rating (or nothing)"),
        }
    )
    if cols.timestamp:
        ratings[TIMESTAMP] = table.ints(names[TIMESTAMP], expected="Unix seconds (an integer)")
    else:
        # No timestamps in the file: 0 marks them missing (validate.allow_missing_timestamps).
        ratings[TIMESTAMP] = np.zeros(len(ratings), dtype="int64")
    return ratings[RATING_COLUMNS]


def _read_items(path: Path, cfg: CsvConfig, rated: pd.Series) -> pd.DataFrame:
    """The optional items file (``item_id``, ``title``, ``genres``, ``year``; header required)."""
    table = read_table(
        path,
        sep=cfg.sep,
        encoding=cfg.encoding,
        header=True,
        required=[ITEM],
        what="an items file with a header naming item_id, title, genres, year",
        sep_name="csv.sep",
    )
    n = len(table)
    items = pd.DataFrame({ITEM: table.ids(ITEM, cfg.id_type)})
    items["title"] = table.text("title") if "title" in table.names else items[ITEM].astype("str")
    items["genres"] = table.text("genres") if "genres" in table.names else pd.Series([""] * n)
    items["year"] = (
        table.optional_ints("year", expected="a year or nothing")
        if "year" in table.names
        else pd.array([pd.NA] * n, dtype="Int64")
    )
    missing = pd.Series(pd.unique(rated[~rated.isin(items[ITEM])]))
    if len(missing):
        # Rated items without a row would break the items <-> ratings join downstream.
        log.warning("%s: %d rated items have no row; adding them bare", path, len(missing))
        items = pd.concat([items, minimal_items(missing)], ignore_index=True)
    return items[ITEM_COLUMNS]


def minimal_items(item_ids: pd.Series | np.ndarray) -> pd.DataFrame:
    """An items table for ids with no metadata: title = the id, no genres, no year."""
    ids = pd.Series(pd.unique(pd.Series(item_ids))).sort_values(ignore_index=True)
    return pd.DataFrame(
        {
            ITEM: ids,
            "title": ids.astype("str"),
            "genres": pd.Series([""] * len(ids), dtype="str"),
            "year": pd.array([pd.NA] * len(ids), dtype="Int64"),
        }
    )


def load_csv(data: DataConfig, cfg: CsvConfig, scale: RatingScale) -> Dataset:
    """Read the ratings file the user brings (``data.source: csv``).

    Args:
        data: ``data.path`` is the ratings file.
        cfg: How to read it (separator, header, encoding, columns, id type, optional test and
            items files).
        scale: The rating scale to record in the dataset's info.

    Returns:
        Ratings (with ``given_split`` when ``csv.test_path`` is set), items, and no users.
    """
    if data.path is None:
        raise ConfigError("data.path: must name the ratings file when data.source is csv")
    ratings = _read_ratings(Path(data.path), cfg)
    if cfg.test_path:
        test = _read_ratings(Path(cfg.test_path), cfg)
        ratings[GIVEN_SPLIT] = "train"
        test[GIVEN_SPLIT] = "test"
        ratings = pd.concat([ratings, test], ignore_index=True)
        ratings[GIVEN_SPLIT] = ratings[GIVEN_SPLIT].astype("str")
    if cfg.items_path:
        items = _read_items(Path(cfg.items_path), cfg, ratings[ITEM])
    else:
        items = minimal_items(ratings[ITEM])
    info = DatasetInfo(
        source="csv",
        rating_scale=scale,
        id_type=cfg.id_type,
        has_users=False,
        has_given_split=cfg.test_path is not None,
    )
    return Dataset(ratings=ratings, items=items, users=None, info=info)
