"""The interim tables as Spark DataFrames, for GX's Spark engine (``data.engine: spark``).

GX's Spark engine has no row index: each table is read with a column ``_row``, the row's 0-based
position in the Parquet table (part files in name order, as pandas reads them; see
:func:`recommender.core.spark.read_parquet_rows`). GX reports offending rows by it
(``unexpected_index_column_names``) and the report calls it ``row``, as pandas' index is. The
suites check named columns only, so ``_row`` is none of theirs; it is never shown.

Nothing here brings a table to the driver: counts are Spark aggregates, the items' ids join the
ratings on the executors, and example rows are a handful looked up by ``_row``. pyspark is
imported inside the functions only.
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recommender.core.schema import ITEM, USER
from recommender.core.spark import ROW, read_parquet_rows
from recommender.validation.suites import ITEM_KNOWN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: The tables GX validates, as ``<name>.parquet`` in the interim folder.
TABLES = ("ratings", "items")
#: What GX reports unexpected rows by on Spark (it has no index): the row's position.
SPARK_RESULT_FORMAT = {"unexpected_index_column_names": [ROW]}


def read_tables(spark: SparkSession, data_dir: str | Path) -> dict[str, DataFrame]:
    """The ratings and items of ``data_dir`` with ``_row``; the ratings with :data:`ITEM_KNOWN`.

    ``<table>.parquet`` may be a file or a folder of part files (as Spark writes them).
    """
    frames = {
        table: read_parquet_rows(spark, Path(data_dir) / f"{table}.parquet") for table in TABLES
    }
    ratings, items = frames["ratings"], frames["items"]
    if ITEM in ratings.columns and ITEM in items.columns:
        frames["ratings"] = with_item_known(ratings, items)
    # In row order (read_parquet_rows' partitions are, and the broadcast join keeps them), GX
    # meets the offending rows as pandas does, so the first 20 it keeps (the examples' source)
    # are the table's first. GX persists each frame it validates (``add_spark(persist=True)``).
    return frames


def clustered_by_pair(ratings: DataFrame) -> DataFrame:
    """``ratings`` hash-partitioned by ``struct(user_id, item_id)`` and sorted by it within each
    partition.

    GX checks the pairs' uniqueness with a count over a window partitioned by that struct, in
    three jobs (the count, the examples, their positions). Spark sees the cached frame already
    partitioned and sorted by the same expression, so none of them shuffles or sorts the ratings
    (10M ratings: 1.8 s a job instead of 4-7). Offending rows come in pair order here, not in
    row order.
    """
    from pyspark.sql import functions as F

    if USER not in ratings.columns or ITEM not in ratings.columns:
        return ratings
    pair = F.struct(USER, ITEM)  # the expression GX's window is partitioned by
    return ratings.repartition(pair).sortWithinPartitions(pair)


def with_item_known(ratings: DataFrame, items: DataFrame) -> DataFrame:
    """``ratings`` plus :data:`ITEM_KNOWN`: is the row's ``item_id`` among the items' ids?

    A left join with the items' distinct ids, broadcast (a catalogue, not a ratings table), so the
    ratings are not shuffled and keep their partitions. Null-safe, as pandas' ``isin`` matches a
    missing id to a missing id. The ratings' columns keep their order.
    """
    from pyspark.sql import functions as F

    known = (
        items.select(F.col(ITEM).alias("_known_id")).distinct().withColumn("_known", F.lit(True))
    )
    joined = ratings.join(F.broadcast(known), ratings[ITEM].eqNullSafe(known["_known_id"]), "left")
    flag = F.coalesce(known["_known"], F.lit(False)).alias(ITEM_KNOWN)
    return joined.select(*(ratings[c] for c in ratings.columns), flag)


def table_counts(
    frames: dict[str, DataFrame], observed: dict[str, dict[str, int]] | None = None
) -> dict[str, dict[str, int]]:
    """Rows per table and distinct users and items rated (nulls not counted), as pandas counts.

    ``observed``: the counts GX's expectations measured already (the ratings' row count and
    distinct users and items); the rest take one aggregate job for the ratings (none when GX
    observed them all: a distinct count shuffles), one count for the items.
    """
    from pyspark.sql import functions as F

    ratings = frames["ratings"]
    wanted = {"rows": None} | {
        key: column
        for column, key in ((USER, "users"), (ITEM, "items"))
        if column in ratings.columns
    }
    known = {k: v for k, v in ((observed or {}).get("ratings") or {}).items() if k in wanted}
    missing = [key for key in wanted if key not in known]
    if missing:
        measures = {"rows": F.count(F.lit(1))} | {
            key: F.countDistinct(column) for key, column in wanted.items() if column is not None
        }
        counted = ratings.agg(*(measures[key].alias(key) for key in missing)).first()
        assert counted is not None  # an aggregate without grouping has one row
        known |= {key: int(value) for key, value in counted.asDict().items()}
    return {
        "ratings": {key: known[key] for key in wanted},
        "items": {"rows": frames["items"].count()},
    }


class SparkRows:
    """:class:`~recommender.validation.failures.Rows` of a Spark DataFrame read with ``_row``."""

    index_key = ROW

    def __init__(self, frame: DataFrame) -> None:
        self.frame = frame

    def at(self, positions: list[int]) -> list[dict[str, Any]]:
        """The rows at ``positions`` (one filtered scan, a few rows back), without ``_row`` and
        :data:`ITEM_KNOWN`."""
        if not positions:
            return []
        from pyspark.sql import functions as F

        found = self.frame.where(F.col(ROW).isin(positions)).drop(ITEM_KNOWN).collect()
        by_position = {r[ROW]: {k: v for k, v in r.asDict().items() if k != ROW} for r in found}
        return [by_position[p] for p in positions]

    def not_integer(self, column: str, limit: int) -> list[int]:
        """The first ``limit`` positions: a Spark column has one type, so when it is not an
        integer type none of its values is an integer."""
        if column not in self.frame.columns:
            return []
        first = self.frame.select(ROW).orderBy(ROW).limit(limit).collect()  # a top-k, no sort
        return [r[ROW] for r in first]

    def first_duplicates(self, columns: list[str], limit: int) -> list[int]:
        """The first ``limit`` positions of rows whose ``columns`` repeat another row's, as GX
        counts them: rows with every one of ``columns`` null are left out, and nulls are equal.

        GX's Spark engine finds them after grouping the rows by key, so the ones it reports are
        not the first by position once there are more than it keeps.
        """
        from pyspark.sql import functions as F

        present = functools.reduce(operator.or_, (F.col(c).isNotNull() for c in columns))
        rows = self.frame.where(present)
        keys = [F.col(c).alias(f"_key{i}") for i, c in enumerate(columns)]
        repeated = rows.groupBy(*keys).count().where(F.col("count") > 1)
        same = [rows[c].eqNullSafe(repeated[f"_key{i}"]) for i, c in enumerate(columns)]
        found = rows.join(repeated, functools.reduce(operator.and_, same), "left_semi")
        return [r[ROW] for r in found.select(ROW).orderBy(ROW).limit(limit).collect()]
