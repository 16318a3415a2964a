"""``validate`` on GX's Spark engine (``data.engine: spark``) gives the pandas path's results.

Every case is written as the Spark ingest leaves it (the ratings a folder of part files, of
unequal sizes so that Spark reads them in another order than their names) and validated by both
engines from the same files: same expectations failed, same counts, same example rows, same
message. The only difference allowed is GX's own name for a column's type (``StringType`` on
Spark, ``str`` on pandas). Real GX, real Spark: one local session for the module (the JVM starts
once, ~9 s); the datasets are ``tests/data/test_validation.py``'s.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recommender.core.config import SparkConfig, ValidateConfig
from recommender.core.errors import ValidationFailed
from recommender.core.io import parquet_digest
from recommender.core.schema import Dataset, empty_users, read_dataset
from recommender.core.validated import RATINGS_DIGEST
from recommender.validation.report import ValidationReport
from recommender.validation.run import run_validate, validate_dataset, validate_spark

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data"))  # the validation tests' datasets
from test_validation import (  # noqa: E402
    CFG,
    NOW,
    bad_split,
    drop_rated_item,
    make_dataset,
    old_film,
    text_dataset,
    text_ids,
    tree_digest,
)

pytestmark = pytest.mark.slow  # a JVM, and GX runs dozens of Spark jobs per suite

TYPE_LIST = "expect_column_values_to_be_in_type_list"
#: GX's Spark type names and the pandas dtypes they stand for here: the one difference allowed.
SPARK_TYPES = {"StringType": "str", "DoubleType": "float64"}


@pytest.fixture(scope="module")
def spark() -> Iterator:
    from recommender.core.spark import spark_session

    with spark_session(SparkConfig(driver_memory="1g", shuffle_partitions=1), "test") as session:
        yield session
    assert session.sparkContext._jsc is None  # stopped: no JVM left behind


def write_interim(
    ds: Dataset, out: Path, cuts: tuple[int, ...] = (150, 160), item_cuts: tuple[int, ...] = ()
) -> None:
    """``ds`` as ingest writes it: ``ratings.parquet`` a folder of parts cut at ``cuts``
    (``part-00000.parquet``, ...); ``items.parquet`` too with ``item_cuts``, else one file."""
    out.mkdir(parents=True, exist_ok=True)
    for name, table, at in (("ratings", ds.ratings, cuts), ("items", ds.items, item_cuts)):
        if not at:
            table.to_parquet(out / f"{name}.parquet", index=False)
            continue
        (out / f"{name}.parquet").mkdir()
        bounds = [0, *at, len(table)]
        for i, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
            part = out / f"{name}.parquet" / f"part-{i:05d}.parquet"
            table.iloc[start:stop].to_parquet(part, index=False)
    (ds.users if ds.users is not None else empty_users()).to_parquet(out / "users.parquet")
    (out / "dataset.json").write_text(ds.info.to_json())


def comparable(report: ValidationReport) -> tuple[str, str]:
    """The summary and the message, with Spark's type names put as pandas says them."""
    summary, text = json.dumps(report.summary(), sort_keys=True), report.format_failures()
    for spark_name, pandas_name in SPARK_TYPES.items():
        summary = summary.replace(f'"{spark_name}"', f'"{pandas_name}"')
        text = text.replace(f"observed '{spark_name}'", f"observed '{pandas_name}'")
    return summary, re.sub(r"type_list=\[[^]]*\]", "type_list=[...]", text)


def many_bad_rows(ds: Dataset) -> None:
    """Most of the ratings suite broken at once, rows in every part; items broken too."""
    ds.ratings.loc[5, "rating"] = np.nan
    ds.ratings.loc[11, "rating"] = 3.3
    ds.ratings.loc[140:199, "rating"] = 7.0  # 60 rows in all three parts: more than GX keeps
    ds.ratings.loc[20, "timestamp"] = 86_400
    ds.ratings.loc[21, "timestamp"] = NOW + 30 * 86_400
    drop_rated_item(ds)
    bad_split(ds)
    # 30 pairs rated twice, the copies at the end: 60 offending rows, more than GX keeps.
    ds.ratings = pd.concat([ds.ratings, ds.ratings.iloc[100:400:10]], ignore_index=True)
    ds.items = pd.concat([ds.items, ds.items.iloc[45:70]], ignore_index=True)  # 25 items twice
    old_film(ds)


def text_and_null_ids(ds: Dataset) -> None:
    """Ids of the wrong type as a whole: text item ids, user ids with holes (floats)."""
    text_ids(ds)
    ds.ratings["user_id"] = ds.ratings["user_id"].astype("float64")
    ds.ratings.loc[[3, 170, 390], "user_id"] = np.nan


def no_rating_column(ds: Dataset) -> None:
    ds.ratings = ds.ratings.drop(columns="rating")


def empty_ratings(ds: Dataset) -> None:
    ds.ratings = ds.ratings.iloc[:0]


def missing_timestamps(ds: Dataset) -> None:
    """Timestamps 0 ("none"), allowed by the params, and one 1970 date, which is not."""
    ds.ratings.loc[150:160, "timestamp"] = 0
    ds.ratings.loc[165, "timestamp"] = 86_400


def long_text_ids(ds: Dataset) -> None:
    ds.ratings.loc[5, "user_id"] = "u" * 200
    ds.ratings.loc[170, "item_id"] = "m" * 129


Case = tuple[Callable[[], Dataset], Callable[[Dataset], None], ValidateConfig]
CASES: dict[str, Case] = {
    "many bad rows": (make_dataset, many_bad_rows, CFG),
    "ids of the wrong type": (make_dataset, text_and_null_ids, CFG),
    "no rating column": (make_dataset, no_rating_column, CFG),
    "empty ratings": (make_dataset, empty_ratings, CFG),
    "text ids too long": (text_dataset, long_text_ids, CFG),
    "missing timestamps allowed": (
        make_dataset,
        missing_timestamps,
        CFG.model_copy(update={"allow_missing_timestamps": True}),
    ),
}


Reports = Callable[[str], tuple[ValidationReport, ValidationReport]]


@pytest.fixture(scope="module")
def reports(spark, tmp_path_factory: pytest.TempPathFactory) -> Reports:
    """``reports(case)``: the pandas and the Spark report on ``CASES[case]``, each made once."""

    @functools.cache
    def validate(case: str) -> tuple[ValidationReport, ValidationReport]:
        make, mutate, cfg = CASES[case]
        ds = make()
        mutate(ds)
        interim = tmp_path_factory.mktemp("interim")
        write_interim(ds, interim, item_cuts=(30,) if case == "many bad rows" else ())
        on_pandas = validate_dataset(read_dataset(interim), cfg, now=NOW)
        on_spark = validate_spark(spark, interim, cfg, now=NOW)
        assert spark._jsparkSession.sharedState().cacheManager().isEmpty()  # GX's copies freed
        return on_pandas, on_spark

    return validate


@pytest.mark.parametrize("case", list(CASES))
def test_spark_reports_what_pandas_reports(case: str, reports: Reports) -> None:
    on_pandas, on_spark = reports(case)

    assert not on_pandas.success  # each case breaks something
    assert comparable(on_spark) == comparable(on_pandas), on_spark.format_failures()


def test_examples_beyond_what_gx_keeps_are_the_first_rows(reports: Reports) -> None:
    _, on_spark = reports("many bad rows")

    rows = {(f.expectation, f.columns): [r["row"] for r in f.examples] for f in on_spark.failures}
    # GX keeps the first 20 offending rows it meets. Spark reads the largest part (rows 160-)
    # first, and finds duplicates after grouping by key: the table's first ones need the frame
    # in row order and, for duplicates, a look of our own.
    assert rows["expect_column_values_to_be_in_set", ("rating",)] == [11, 140, 141, 142, 143]
    pairs = ("expect_compound_columns_to_be_unique", ("user_id", "item_id"))
    assert rows[pairs] == [100, 110, 120, 130, 140]
    assert rows["expect_column_values_to_be_unique", ("item_id",)] == [45, 46, 47, 48, 49]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder where ``pipeline/validate.py`` ran with ``data.engine: spark`` on good
    data, in a process (and a JVM) of its own: ``data/interim``, ``reports/validation`` (Data
    Docs), ``reports/validation.json``; its exit code and stdout in ``out.txt``, stderr in
    ``err.txt``."""
    root = tmp_path_factory.mktemp("project")
    write_interim(make_dataset(), root / "data/interim")
    params = {
        "data": {"engine": "spark"},
        "spark": {"driver_memory": "1g", "shuffle_partitions": 1},
        "validate": {"min_ratings": 100, "min_users": 10, "min_items": 10},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, str(ROOT / "pipeline/validate.py"), "--params", "params.yaml"]
        + ["--data", "data/interim", "--docs", "reports/validation"]
        + ["--summary", "reports/validation.json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (root / "out.txt").write_text(f"{done.returncode}\n{done.stdout}")
    (root / "err.txt").write_text(done.stderr)
    return root


def test_stage_on_spark_publishes_the_pandas_summary_and_data_docs(published: Path) -> None:
    pandas_report = validate_dataset(read_dataset(published / "data/interim"), CFG)

    assert (published / "out.txt").read_text() == (
        "0\nvalidate: OK, 25 expectations passed; Data Docs in reports/validation\n"
    )
    assert (published / "err.txt").read_text() == ""  # no Spark, GX or log4j chatter
    summary = json.loads((published / "reports/validation.json").read_text())
    ratings = published / "data/interim/ratings.parquet"
    assert summary == pandas_report.summary() | {RATINGS_DIGEST: parquet_digest(ratings)}
    assert summary["success"] and summary["tables"]["ratings"]["rows"] == 400
    index = (published / "reports/validation/index.html").read_text()
    assert "recommender_ratings" in index and "recommender_items" in index
    assert list((published / "reports/validation/validations").rglob("*.html"))
    assert "bootstrapcdn.com" not in index and "unpkg.com" not in index  # made offline


def test_stage_on_spark_fails_as_pandas_does_and_keeps_the_last_good_docs(
    published: Path, spark
) -> None:
    docs, summary = published / "reports/validation", published / "reports/validation.json"
    failed_dir = published / "reports/validation_failed"
    good_docs, good_summary = tree_digest(docs), summary.read_bytes()
    bad = make_dataset()
    many_bad_rows(bad)
    write_interim(bad, published / "data/bad")
    # A fixed latest date: the message says it to the minute, and the two runs are a minute apart.
    cfg = CFG.model_copy(update={"timestamp_max": "2026-11-02"})

    with pytest.raises(ValidationFailed) as on_spark:
        run_validate(published / "data/bad", docs, summary, cfg, spark=spark)
    spark_summary = (failed_dir / summary.name).read_bytes()
    assert (failed_dir / "index.html").exists()
    with pytest.raises(ValidationFailed) as on_pandas:
        run_validate(published / "data/bad", docs, summary, cfg)

    assert str(on_spark.value) == str(on_pandas.value)
    assert "row 140: user_id=" in str(on_spark.value)
    assert spark_summary == (failed_dir / summary.name).read_bytes()
    assert tree_digest(docs) == good_docs and summary.read_bytes() == good_summary


def test_the_pair_check_runs_on_the_clustered_cache_without_a_shuffle(spark, tmp_path: Path):
    """GX's compound-uniqueness metric (a count over a window partitioned by
    ``struct(user_id, item_id)``, see great_expectations' compound_columns_unique.py) on the
    frame validate hands it: Spark neither shuffles nor sorts the cached ratings again."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recommender.core.spark import read_parquet_rows
    from recommender.validation.spark_frames import clustered_by_pair

    pd.DataFrame({"user_id": [1, 2, 1, 3], "item_id": [5, 5, 5, 6]}).to_parquet(tmp_path / "r.pq")
    frame = clustered_by_pair(read_parquet_rows(spark, tmp_path / "r.pq")).persist()
    try:
        frame.count()  # GX's first job (its aggregate metrics) fills the cache
        window = Window.partitionBy(F.struct("user_id", "item_id"))
        counted = frame.select("*", F.count(F.lit(1)).over(window).alias("n"))
        repeated = counted.where(F.col("n") > 1)
        plan = repeated._jdf.queryExecution().executedPlan().toString()
        above_cache = plan.split("InMemoryRelation")[0]
        assert "Exchange" not in above_cache and "Sort" not in above_cache, plan
        assert sorted(r["_row"] for r in repeated.collect()) == [0, 2]
    finally:
        frame.unpersist()


def test_table_counts_take_what_gx_observed_and_count_only_the_rest(spark, tmp_path) -> None:
    """The summary's ratings counts come from GX's row-count and distinct-count expectations
    (a distinct count shuffles every rating): taken as they are, the missing ones counted."""
    from recommender.core.schema import DatasetInfo
    from recommender.validation.run import _run_suites
    from recommender.validation.spark_frames import read_tables, table_counts

    ds = make_dataset()
    write_interim(ds, tmp_path / "interim")
    frames = read_tables(spark, tmp_path / "interim")
    counted = table_counts(frames)
    assert counted == validate_dataset(ds, CFG).tables  # pandas' counts

    info = DatasetInfo.read(tmp_path / "interim" / "dataset.json")
    *_, observed = _run_suites(frames, None, info, CFG, None, now=NOW, engine="spark")
    assert observed["ratings"] == counted["ratings"]  # all three observed by GX
    given = {"ratings": {"rows": 7, "users": 8, "items": 9}}
    assert table_counts(frames, given)["ratings"] == given["ratings"]  # taken, not recounted
    some = table_counts(frames, {"ratings": {"users": 8}})
    assert some == counted | {"ratings": counted["ratings"] | {"users": 8}}
