"""The ingest stage on Spark: the source's ratings through ``ingest.duplicates`` on Spark.

Large synthetic sets are generated on Spark's executors, block by block. Raw files are parsed by
the same reader as the pandas path (:func:`recommender.data.read_source`: one implementation of
the formats and of the broken-file messages naming file, line and column), then handed to Spark
as canonical Parquet; the duplicate policy and the interim ratings folder
are Spark's. :func:`resolve_duplicates_spark` keeps what :func:`recommender.data.resolve_duplicates`
keeps, rows in the same (first-seen) order.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.core.io import parquet_rows, staged_dir
from recommender.core.schema import (
    ITEM,
    RATING,
    TIMESTAMP,
    USER,
    Dataset,
    empty_users,
)
from recommender.core.spark import ROW, read_parquet_rows, scale_shuffle
from recommender.data import read_source, with_merged

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from recommender.core.config import Params

log = logging.getLogger(__name__)


#: At most this many rows after a pair-unique prefix (the feedback after the generated blocks) are
#: broadcast to look their pairs up in it; beyond, every pair is counted.
BROADCAST_TAIL_ROWS = 2_000_000


def merged_count(ratings: DataFrame, n: int, unique_prefix: int = 0) -> int:
    """How many of ``ratings``' ``n`` rows repeat an earlier (user, item) pair: ``n`` minus the
    distinct pairs.

    The first ``unique_prefix`` rows (by :data:`ROW`) are known to hold each pair once: the
    synthetic generator's blocks (each user's items are drawn without replacement, and the blocks'
    users are disjoint). Then only the rows after them can repeat a pair: their own repeats, plus
    their distinct pairs found among the prefix's rows (a broadcast lookup, no shuffle of the
    prefix). Otherwise every pair is counted (a shuffle of all the rows).
    """
    from pyspark.sql import functions as F

    tail_rows = n - unique_prefix
    if unique_prefix and tail_rows == 0:
        return 0
    if unique_prefix and tail_rows <= BROADCAST_TAIL_ROWS:
        tail = ratings.filter(F.col(ROW) >= unique_prefix).select(USER, ITEM).distinct().cache()
        try:
            distinct_tail = tail.count()
            prefix = ratings.filter(F.col(ROW) < unique_prefix).select(USER, ITEM)
            overlap = prefix.join(F.broadcast(tail), [USER, ITEM], "left_semi").count()
        finally:
            tail.unpersist()
        return tail_rows - distinct_tail + overlap
    scale_shuffle(ratings.sparkSession, n)
    return n - ratings.select(USER, ITEM).distinct().count()


def resolve_duplicates_spark(
    ratings: DataFrame, n: int, policy: str, unique_prefix: int = 0
) -> tuple[DataFrame, int]:
    """``ingest.duplicates`` on Spark; ``ratings`` (``n`` rows) carries :data:`ROW` (file order),
    kept. ``unique_prefix``: as for :func:`merged_count`.

    keep_first / keep_last keep the earliest / latest rating by timestamp (ties: file order);
    mean keeps the latest row with the mean rating, placed where its pair first appeared.
    """
    from pyspark.sql import functions as F

    merged = merged_count(ratings, n, unique_prefix)
    if merged == 0:
        return ratings, 0
    if policy == "error":
        log.warning("%d duplicate (user, item) ratings left in place for validate", merged)
        return ratings, 0
    columns = [c for c in ratings.columns if c != ROW]
    row, order = F.struct(*columns, ROW), F.struct(TIMESTAMP, ROW)
    scale_shuffle(ratings.sparkSession, n)
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
    """``ratings`` as a folder ``path`` of one Parquet part (a folder, as Spark writes it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(ratings.iloc[:0], preserve_index=False)
    path.mkdir()
    with pq.ParquetWriter(path / "part-00000.parquet", schema) as writer:
        for lo in range(0, len(ratings), SLICE_ROWS):
            piece = ratings.iloc[lo : lo + SLICE_ROWS]
            writer.write_table(pa.Table.from_pandas(piece, schema=schema, preserve_index=False))


#: The canonical ratings' columns as Spark types (what pandas writes for the synthetic source).
SPARK_TYPES = {USER: "long", ITEM: "long", RATING: "double", TIMESTAMP: "long"}


def _synthetic_on_spark(
    spark: SparkSession, params: Params, feedback: str | Path | None, raw: Path
) -> tuple[Dataset, int]:
    """Above ``_DENSE_CELLS``: the synthetic ratings made block by block on Spark's executors (one
    task a block, :func:`recommender.data.synthetic.block_ratings`: the rows pandas' generator
    makes, in the same order), the feedback's appended, into ``raw``. Returns the catalog tables
    and how many feedback rows follow the blocks' (which hold each pair once)."""
    from pyspark.sql import functions as F

    from recommender.core.schema import SOURCE_SCALES
    from recommender.data import synthetic
    from recommender.data.feedback import merge_feedback, read_snapshot

    cfg, seed = params.synthetic, params.seed
    scale = params.data.rating_scale or SOURCE_SCALES["synthetic"]
    dataset, plan = synthetic.catalog(cfg, seed, scale)
    if feedback is not None:  # its ratings come after the source's, as read_source appends them
        dataset = merge_feedback(dataset, read_snapshot(feedback, dataset.info.id_type))
    spans = synthetic.blocks(plan)

    def make(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        from recommender.data import synthetic

        the_plan, _ = synthetic.plan(cfg, seed, scale)
        for batch in batches:
            for index in batch.column(0).to_pylist():
                columns = synthetic.block_ratings(the_plan, index, spans[index])
                yield pa.RecordBatch.from_pydict(columns)

    schema = ", ".join(f"{c} {t}" for c, t in SPARK_TYPES.items())
    ratings = spark.range(0, len(spans), 1, numPartitions=len(spans)).mapInArrow(make, schema)
    if len(dataset.ratings):
        appended = spark.createDataFrame(dataset.ratings[list(SPARK_TYPES)])
        ratings = ratings.unionByName(
            appended.select(*(F.col(c).cast(t) for c, t in SPARK_TYPES.items()))
        )
    ratings.write.parquet(str(raw))  # in block order: partitions and part files alike
    return dataclasses.replace(dataset, ratings=dataset.ratings.iloc[:0]), len(dataset.ratings)


def ingest_spark(
    spark: SparkSession, params: Params, out_dir: str | Path, feedback: str | Path | None = None
) -> Dataset:
    """Read the source, apply the duplicate policy on Spark, write the interim folder atomically.

    The synthetic generator above ``_DENSE_CELLS`` cells runs on Spark's executors, block by
    block; the other sources are read by :func:`recommender.data.read_source` here and handed to
    Spark as Parquet. Returns the dataset's catalog tables and info (its ``ratings`` empty: they
    are in ``out_dir/ratings.parquet``, a folder of parts in file order).
    """
    from recommender.data import synthetic

    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=Path(out_dir).parent) as scratch:
        raw = Path(scratch) / "ratings.parquet"
        blocks = params.data.source == "synthetic" and synthetic.blocked(params.synthetic)
        appended = 0  # rows after the generator's blocks (the feedback's)
        if blocks:
            source, appended = _synthetic_on_spark(spark, params, feedback, raw)
        else:
            source = read_source(params, feedback)
            _write_in_slices(source.ratings, raw)
            source = dataclasses.replace(source, ratings=source.ratings.iloc[:0])
        ratings = read_parquet_rows(spark, raw)
        n = parquet_rows(raw)
        unique_prefix = n - appended if blocks else 0
        kept, merged = resolve_duplicates_spark(ratings, n, params.ingest.duplicates, unique_prefix)
        info = with_merged(source.info, merged)
        with staged_dir(out_dir) as tmp:
            if merged:  # grouped by pair: sorted back into file order
                kept.orderBy(ROW).drop(ROW).write.parquet(str(tmp / "ratings.parquet"))
            else:  # nothing merged: the canonical Parquet written above is the output
                shutil.move(raw, tmp / "ratings.parquet")
            source.items.to_parquet(tmp / "items.parquet", index=False)
            users = source.users if source.users is not None else empty_users()
            users.to_parquet(tmp / "users.parquet", index=False)
            (tmp / "dataset.json").write_text(info.to_json())
    log.info("%s on Spark: %d ratings -> %s", info.source, n - merged, out_dir)
    return dataclasses.replace(source, info=info)
