"""The ingest stage on Spark: the source's ratings through ``ingest.duplicates`` on Spark.

Raw files are parsed by the same reader as the pandas path (:func:`recommender.data.read_source`:
one implementation of the formats and of the broken-file messages naming file, line and column),
then handed to Spark as canonical Parquet; the duplicate policy and the interim ratings folder
are Spark's. :func:`resolve_duplicates_spark` keeps what :func:`recommender.data.resolve_duplicates`
keeps, rows in the same (first-seen) order.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.core.io import staged_dir
from recommender.core.schema import ITEM, RATING, TIMESTAMP, USER, Dataset, empty_users
from recommender.core.spark import read_parquet_rows, scale_shuffle
from recommender.data import read_source, with_merged

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from recommender.core.config import Params

log = logging.getLogger(__name__)

#: The row's position in the source's file order (from :func:`read_parquet_rows`).
ROW = "_row"


def resolve_duplicates_spark(ratings: DataFrame, policy: str) -> tuple[DataFrame, int]:
    """``ingest.duplicates`` on Spark; ``ratings`` carries :data:`ROW` (file order), kept.

    keep_first / keep_last keep the earliest / latest rating by timestamp (ties: file order);
    mean keeps the latest row with the mean rating, placed where its pair first appeared.
    """
    from pyspark.sql import functions as F

    n = ratings.count()
    scale_shuffle(ratings.sparkSession, n)
    merged = n - ratings.select(USER, ITEM).distinct().count()
    if merged == 0:
        return ratings, 0
    if policy == "error":
        log.warning("%d duplicate (user, item) ratings left in place for validate", merged)
        return ratings, 0
    columns = [c for c in ratings.columns if c != ROW]
    row, order = F.struct(*columns, ROW), F.struct(TIMESTAMP, ROW)
    pick = F.min_by(row, order) if policy == "keep_first" else F.max_by(row, order)
    grouped = ratings.groupBy(USER, ITEM).agg(
        pick.alias("kept"), F.avg(RATING).alias("_mean"), F.min(ROW).alias("_first")
    )
    kept = grouped.select("kept.*", "_mean", "_first")
    if policy == "mean":
        kept = kept.withColumn(RATING, F.col("_mean").cast("double")).withColumn(
            ROW, F.col("_first")
        )
    elif policy not in ("keep_first", "keep_last"):
        raise ValueError(f"unknown duplicates policy {policy!r}")
    log.info("ingest.duplicates=%s: merged %d duplicate (user, item) ratings", policy, merged)
    return kept.select(*columns, ROW), merged


#: Rows converted to Arrow at a time when the source is handed to Spark: a slice's copy, not the
#: table's (100M synthetic ratings: 3.2 GB).
SLICE_ROWS = 4_000_000


def _write_in_slices(ratings: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(ratings.iloc[:0], preserve_index=False)
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, len(ratings), SLICE_ROWS):
            piece = ratings.iloc[lo : lo + SLICE_ROWS]
            writer.write_table(pa.Table.from_pandas(piece, schema=schema, preserve_index=False))


def ingest_spark(
    spark: SparkSession, params: Params, out_dir: str | Path, feedback: str | Path | None = None
) -> Dataset:
    """Read the source, apply the duplicate policy on Spark, write the interim folder atomically.

    Returns the dataset's catalog tables and info (its ``ratings`` empty: they are in
    ``out_dir/ratings.parquet``, a folder of parts in file order).
    """
    source = read_source(params, feedback)
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=Path(out_dir).parent) as scratch:
        raw = Path(scratch) / "ratings.parquet"
        _write_in_slices(source.ratings, raw)
        ratings = read_parquet_rows(spark, raw)
        kept, merged = resolve_duplicates_spark(ratings, params.ingest.duplicates)
        info = with_merged(source.info, merged)
        with staged_dir(out_dir) as tmp:
            kept.orderBy(ROW).drop(ROW).write.parquet(str(tmp / "ratings.parquet"))
            source.items.to_parquet(tmp / "items.parquet", index=False)
            users = source.users if source.users is not None else empty_users()
            users.to_parquet(tmp / "users.parquet", index=False)
            (tmp / "dataset.json").write_text(info.to_json())
    counts = source.ratings[[USER, ITEM]].nunique()
    log.info(
        "%s on Spark: %d ratings, %d users, %d items -> %s",
        info.source, len(source.ratings) - merged, counts[USER], counts[ITEM], out_dir,
    )  # fmt: skip
    return Dataset(
        ratings=source.ratings.iloc[:0], items=source.items, users=source.users, info=info
    )
