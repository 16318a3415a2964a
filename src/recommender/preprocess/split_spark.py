"""The preprocess stage on Spark: the same splits, vocabularies and features as :mod:`.split`.

The ratings stay in Spark from the interim Parquet to the split folders; what is catalog-sized
(the vocabularies, the items' and users' features, the summary) is collected and built by the
same code as the pandas path (:func:`.split.featurized`). Each split is written in the interim
table's row order (:func:`read_parquet_rows` reads it in that order, and only leave_last_n's window
needs a sort back), so both engines write the same rows in the same order: the same training run.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recommender.core.config import PreprocessConfig
from recommender.core.errors import DataError
from recommender.core.io import parquet_rows
from recommender.core.schema import (
    GIVEN_SPLIT,
    ITEM,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
    Dataset,
    DatasetInfo,
)
from recommender.core.spark import ROW, read_parquet_rows, scale_shuffle, spark_setting
from recommender.dataset.processed import SPLITS, Processed
from recommender.dataset.vocabulary import Vocabulary
from recommender.preprocess import split
from recommender.preprocess.hashsplit import spark_unit_values, val_bound

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Row, SparkSession

#: The split side of a row (its interim position is :data:`ROW`, from :func:`read_parquet_rows`).
SIDE = "_side"
TRAIN, VAL, TEST = 0, 1, 2


def _one(frame: DataFrame) -> Row:
    """The first row of an aggregate (which always has one)."""
    row = frame.first()
    assert row is not None
    return row


def _check_size(ratings: DataFrame, n: int, path: str) -> None:
    """The refusals that need no pass over the rows: missing columns, fewer than 2 ratings."""
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}", expected=f"columns {RATING_COLUMNS}")
    if n < 2:
        raise DataError(path, f"{n} rating(s)", expected="at least 2 to split")


def _check_rows(ratings: DataFrame, path: str) -> None:
    """:func:`.split._check_ratings`' refusals that read the rows (nulls, repeated pairs) on
    Spark, naming the same rows: an aggregate, then a shuffle of every pair."""
    from pyspark.sql import functions as F

    first_null = [
        F.min(F.when(F.col(c).isNull(), F.col(ROW))).alias(c) for c in (USER, ITEM, TIMESTAMP)
    ]
    facts = _one(ratings.agg(*first_null))
    for col in (USER, ITEM, TIMESTAMP):
        if facts[col] is not None:
            raise split.null_error(path, col, facts[col])
    repeated = _one(
        ratings.groupBy(USER, ITEM)
        .agg(F.count(F.lit(1)).alias("n"), F.min(ROW).alias("first"))
        .filter(F.col("n") > 1)
        .agg(
            F.sum("n").alias("rows"),
            F.min_by(F.struct(USER, ITEM), "first").alias("pair"),
            F.min("first").alias("first"),
        )
    )
    if repeated["rows"]:
        pair = (repeated["pair"][USER], repeated["pair"][ITEM])
        raise split.duplicate_error(path, int(repeated["rows"]), pair, repeated["first"])


def _kth_timestamp(ratings: DataFrame, k: int) -> int:
    """The ``k``-th smallest timestamp (1-based), as ``np.sort(ts)[k - 1]``."""
    return int(_one(ratings.select(TIMESTAMP).orderBy(TIMESTAMP).offset(k - 1).limit(1))[0])


def _temporal(ratings: DataFrame, cfg: PreprocessConfig, n: int) -> tuple[Column, dict[str, Any]]:
    from pyspark.sql import functions as F

    cut = _kth_timestamp(ratings, split.latest_row(n, cfg.test_fraction))
    test = F.col(TIMESTAMP) > cut
    rest = ratings.filter(~test)
    n_rest = rest.count()
    if n_rest == n:
        raise split.temporal_error(cut)
    val = F.lit(False)
    if cfg.val_fraction > 0 and n_rest >= 2:
        # Validate on the most recent training period, as the test split does on the next one.
        val = F.col(TIMESTAMP) > _kth_timestamp(rest, split.latest_row(n_rest, cfg.val_fraction))
    side = F.when(test, TEST).when(val, VAL).otherwise(TRAIN)
    return side, {"temporal_cut": cut}


def _leave_last_n(cfg: PreprocessConfig) -> Column:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Sorting by item id too breaks timestamp ties the same way whatever the row order.
    latest_first = Window.partitionBy(USER).orderBy(F.desc(TIMESTAMP), F.desc(ITEM))
    from_end = F.row_number().over(latest_first) - 1
    per_user = F.count(F.lit(1)).over(Window.partitionBy(USER))
    return from_end < F.least(F.lit(cfg.n_last), per_user - 1)


def _given(ratings: DataFrame, info: DatasetInfo, path: str) -> Column:
    from pyspark.sql import functions as F

    if GIVEN_SPLIT not in ratings.columns:
        raise split.given_missing_error(info)
    given = F.col(GIVEN_SPLIT)
    bad = ratings.filter(given.isNull() | ~given.isin("train", "test"))
    first = bad.orderBy(ROW).select(ROW, GIVEN_SPLIT).first()
    if first is not None:
        raise split.given_value_error(path, first[GIVEN_SPLIT], first[ROW])
    sides = {r[0] for r in ratings.select(GIVEN_SPLIT).distinct().collect()}
    if sides != {"train", "test"}:
        raise split.given_one_sided_error(path, sides.pop())
    return given == "test"


def _sides(
    ratings: DataFrame, n: int, cfg: PreprocessConfig, seed: int, info: DatasetInfo, path: str
) -> tuple[DataFrame, dict[str, Any]]:
    """``ratings`` (``n`` rows) with :data:`SIDE` (train, val or test), and split facts for the
    summary."""
    from pyspark.sql import functions as F

    unit = spark_unit_values(seed, text_ids=info.id_type == "str")
    facts: dict[str, Any] = {}
    if cfg.split == "random":
        side = (
            F.when(unit < cfg.test_fraction, TEST)
            .when(unit < val_bound(cfg.test_fraction, cfg.val_fraction), VAL)
            .otherwise(TRAIN)
        )
    elif cfg.split == "temporal":
        side, facts = _temporal(ratings, cfg, n)
    else:
        test = _leave_last_n(cfg) if cfg.split == "leave_last_n" else _given(ratings, info, path)
        val = unit < cfg.val_fraction if cfg.val_fraction > 0 else F.lit(False)
        side = F.when(test, TEST).when(val, VAL).otherwise(TRAIN)
        if cfg.split == "leave_last_n":
            facts = {"n_last": cfg.n_last}
    return ratings.withColumn(SIDE, side.cast("byte")), facts


def _vocabularies(
    sided: DataFrame, id_type: str
) -> tuple[tuple[Vocabulary, pd.Series], tuple[Vocabulary, pd.Series]]:
    """For the users, then the items: the vocabulary (the distinct ids of the train side, sorted:
    what ``Vocabulary.from_ids`` builds) and every id rated on any side. One aggregate job, over
    grouping sets (user) and (item): one pass over the rows for both."""
    from pyspark.sql import functions as F

    in_train = F.max((F.col(SIDE) == TRAIN).cast("byte")).alias("in_train")
    by_user = (F.grouping(USER) == 0).alias("by_user")
    rows = sided.groupingSets([[USER], [ITEM]], USER, ITEM).agg(in_train, by_user).collect()
    dtype = "int64" if id_type == "int" else "str"
    found = []
    for column, users in ((USER, True), (ITEM, False)):
        ids = [(r[column], r["in_train"]) for r in rows if r["by_user"] == users]
        vocab = Vocabulary(sorted(i for i, train in ids if train))
        found.append((vocab, pd.Series([i for i, _ in ids], dtype=dtype)))
    return found[0], found[1]


def _index_frame(
    spark: SparkSession, vocab: Vocabulary, column: str, index: str, id_type: str
) -> DataFrame:
    from pyspark.sql import functions as F

    ids = pd.Series(vocab.ids, dtype="int64" if id_type == "int" else "str")
    frame = pd.DataFrame({column: ids, index: np.arange(1, len(vocab), dtype="int32")})
    return F.broadcast(spark.createDataFrame(frame))


def _encoded(
    spark: SparkSession, sided: DataFrame, vocabularies: tuple[Vocabulary, Vocabulary], id_type: str
) -> DataFrame:
    """The split's columns (:func:`.split._encode`'s), with the side and row kept."""
    from pyspark.sql import functions as F

    users, items = vocabularies
    joined = sided.join(_index_frame(spark, users, USER, "user_idx", id_type), USER, "left").join(
        _index_frame(spark, items, ITEM, "item_idx", id_type), ITEM, "left"
    )
    return joined.select(
        F.coalesce("user_idx", F.lit(0)).cast("int").alias("user_idx"),
        F.coalesce("item_idx", F.lit(0)).cast("int").alias("item_idx"),
        F.col(RATING).cast("float").alias(RATING),
        F.col(TIMESTAMP).cast("long").alias(TIMESTAMP),
        USER,
        ITEM,
        SIDE,
        ROW,
    )


def _cold_counts(splits: DataFrame) -> dict[int, dict[str, int]]:
    """:func:`.split._cold` of every side, from the written splits (``splits``: their rows with
    :data:`SIDE`): sums over every row, distinct ids over the cold rows only (a few percent of
    them; a distinct count over all rows costs a shuffle of all)."""
    from pyspark.sql import functions as F

    cold_user, cold_item = F.col("user_idx") == 0, F.col("item_idx") == 0
    sums = splits.groupBy(SIDE).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(cold_user.cast("long")).alias("unknown_user_rows"),
        F.sum(cold_item.cast("long")).alias("unknown_item_rows"),
        F.sum((cold_user | cold_item).cast("long")).alias("unknown_either_rows"),
    )
    distinct = (
        splits.filter(cold_user | cold_item)
        .groupBy(SIDE)
        .agg(
            F.countDistinct(F.when(cold_user, F.col(USER))).alias("cold_users"),
            F.countDistinct(F.when(cold_item, F.col(ITEM))).alias("cold_items"),
        )
    )
    rows = sums.join(distinct, SIDE, "left").collect()
    zero = dict.fromkeys(
        ("rows", "unknown_user_rows", "unknown_item_rows", "unknown_either_rows", "cold_users",
         "cold_items"), 0,
    )  # fmt: skip
    counts = {side: dict(zero) for side in (TRAIN, VAL, TEST)}
    for r in rows:
        counts[r[SIDE]] = {k: int(r[k] or 0) for k in zero}
    return counts


def _write_sides(encoded: DataFrame, scratch: Path) -> dict[str, Path]:
    """Each side's rows of ``encoded`` as a folder of Parquet parts in ``scratch``, in one job
    and in ``encoded``'s order; returns each split's folder.

    One job partitioned by side rather than one filtered write per side: a single pass over the
    rows. Spark's partitioned write sorts each task's rows by side first, unless it may keep a
    writer open per side (``spark.sql.maxConcurrentOutputFileWriters``): then no sort, and each
    part file keeps its task's rows in order. A side with no rows gets an empty part (its
    schema), as a write of no rows gives.
    """
    spark = encoded.sparkSession
    with spark_setting(spark, "spark.sql.maxConcurrentOutputFileWriters", len(SPLITS)):
        encoded.drop(ROW).write.partitionBy(SIDE).parquet(str(scratch / "sides"))
    folders = {}
    for side, name in enumerate(SPLITS):
        folder, written = scratch / f"{name}.parquet", scratch / "sides" / f"{SIDE}={side}"
        if written.is_dir():
            written.rename(folder)
        else:
            encoded.drop(SIDE, ROW).limit(0).write.parquet(str(folder))
        folders[name] = folder
    return folders


def _catalog_tables(in_dir: Path) -> Dataset:
    """The interim folder's catalog-sized tables (the ratings stay in Spark)."""
    info = DatasetInfo.read(in_dir / "dataset.json")
    users = pd.read_parquet(in_dir / "users.parquet") if info.has_users else None
    items = pd.read_parquet(in_dir / "items.parquet")
    return Dataset(ratings=pd.DataFrame(), items=items, users=users, info=info)


def preprocess_spark(
    spark: SparkSession,
    in_dir: str | Path,
    cfg: PreprocessConfig,
    seed: int,
    scratch: Path,
    *,
    validated: bool = False,
) -> tuple[Processed, Any]:
    """Split, encode and featurize the interim folder on Spark.

    The splits are written into ``scratch`` (a folder on the output's file system); returns the
    :class:`Processed` tables (its ``train``/``val``/``test`` empty: the ratings never leave
    Spark) and the function that moves the split folders into place, for
    :func:`~recommender.dataset.processed.write_processed`'s ``write_splits``. ``validated``:
    the validate stage passed on these very ratings (:mod:`recommender.core.validated`), so its
    checks (no nulls, one rating per pair) are not repeated here: on Spark they cost a pass and
    a shuffle of every rating.

    Raises:
        The same :class:`ConfigError` and :class:`DataError` as :func:`.split.preprocess`.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    in_dir = Path(in_dir)
    path = str(in_dir / "ratings.parquet")
    split.require_interim(in_dir)
    catalog = _catalog_tables(in_dir)
    ratings = read_parquet_rows(spark, in_dir / "ratings.parquet")
    n = parquet_rows(in_dir / "ratings.parquet")
    _check_size(ratings, n, path)
    scale_shuffle(spark, n)
    if not validated:
        _check_rows(ratings, path)
    sided, facts = _sides(ratings, n, cfg, seed, catalog.info, path)
    # Every split but leave_last_n sides each row on its own: the jobs below re-read the interim
    # Parquet (cheap) and keep its row order with no sort. leave_last_n's window shuffles the rows
    # by user: its sides are computed once and kept on local disk (not in the heap, which the
    # sorts need: 100M ratings ran a 4 GB driver out of it), and sorted back once.
    shuffled = cfg.split == "leave_last_n"
    if shuffled:
        sided = sided.persist(StorageLevel.DISK_ONLY)
    id_type = catalog.info.id_type
    (users, rated_users), (items, rated_items) = _vocabularies(sided, id_type)
    encoded = _encoded(spark, sided, (users, items), id_type)
    if shuffled:
        encoded = encoded.orderBy(ROW)
    try:
        folders = _write_sides(encoded, scratch)
    finally:
        if shuffled:
            sided.unpersist()
    written = [
        spark.read.parquet(str(folder)).withColumn(SIDE, F.lit(side))
        for side, folder in enumerate(folders.values())
    ]
    counts = _cold_counts(functools.reduce(lambda a, b: a.unionByName(b), written))
    for side, name in ((TRAIN, "train"), (TEST, "test")):
        if counts[side]["rows"] == 0:
            raise split.empty_side_error(path, n, name, cfg)
    rows = {name: counts[side]["rows"] for side, name in enumerate(SPLITS)}
    split_facts = {"split": cfg.split, "seed": seed, "rows": rows | {"total": sum(rows.values())}}
    for side, name in ((TEST, "test"), (VAL, "val")):
        split_facts[name] = {k: v for k, v in counts[side].items() if k != "rows"}
    split_facts |= facts
    empty = {name: pd.DataFrame() for name in SPLITS}
    rated = (rated_users, rated_items)
    processed = split.featurized(catalog, rated, (users, items), split_facts, empty)

    def write_splits(folder: Path) -> None:
        for name, written_folder in folders.items():
            written_folder.rename(folder / f"{name}.parquet")

    return processed, write_splits
