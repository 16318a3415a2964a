"""The Great Expectations suite: passes on good data, names the right expectation on broken data.

Every test runs GX's real engine. The datasets are a few hundred ratings built here with numpy; one
test reads the real MovieLens 100K (read-only, never copied into the project).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.core.config import RatingScale, ValidateConfig, parse_params
from recommender.core.errors import ConfigError, DataError, ValidationFailed
from recommender.core.schema import (
    MAX_ID_LENGTH,
    Dataset,
    DatasetInfo,
    read_dataset,
    write_dataset,
)
from recommender.data import load_dataset
from recommender.validation import ValidationReport, run_validate, validate_dataset

ROOT = Path(__file__).resolve().parents[2]
#: Thresholds low enough for the small synthetic dataset (400 ratings, 50 users, 80 items).
CFG = ValidateConfig(min_ratings=100, min_users=10, min_items=10)
#: A fixed "now" (2026-11-01 UTC) so that timestamp_max: null is reproducible.
NOW = 1_793_491_200


def make_dataset(
    n_users: int = 50,
    n_items: int = 80,
    n_ratings: int = 400,
    seed: int = 0,
    scale: RatingScale | None = None,
) -> Dataset:
    """A small, valid dataset in canonical form: unique pairs, ratings on the scale, 2017-2020."""
    scale = scale or RatingScale()
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    ratings = pd.DataFrame(
        {
            "user_id": (pairs // n_items + 1).astype("int64"),
            "item_id": (pairs % n_items + 1).astype("int64"),
            "rating": rng.choice(scale.values(), size=n_ratings).astype("float64"),
            "timestamp": rng.integers(1_500_000_000, 1_600_000_000, n_ratings).astype("int64"),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1, dtype="int64"),
            "title": [f"Film {i}" for i in range(1, n_items + 1)],
            "genres": ["Drama|Comedy" if i % 2 else "" for i in range(n_items)],
            # Every seventh year unknown: nulls are allowed.
            "year": pd.array(
                [None if i % 7 == 0 else 1930 + i % 90 for i in range(n_items)], "Int64"
            ),
        }
    )
    return Dataset(ratings, items, None, DatasetInfo(source="synthetic", rating_scale=scale))


def failed(report: ValidationReport) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(f.expectation, f.table, f.columns) for f in report.failures}


def set_value(column: str, row: int, value) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        if isinstance(value, str):  # one stray string in an int column: pandas makes it object
            ds.ratings[column] = ds.ratings[column].astype(object)
        ds.ratings.loc[row, column] = value

    return mutate


def duplicate_pair(ds: Dataset) -> None:
    ds.ratings = pd.concat([ds.ratings, ds.ratings.iloc[[7]]], ignore_index=True)


def empty_ratings(ds: Dataset) -> None:
    ds.ratings = ds.ratings.iloc[:0]


def drop_rated_item(ds: Dataset) -> None:
    ds.items = ds.items[ds.items["item_id"] != ds.ratings.loc[0, "item_id"]]


def few_users(ds: Dataset) -> None:
    # Enough ratings (200 >= min_ratings) from only 5 users (< min_users).
    ds.ratings = make_dataset(n_users=5, n_ratings=200).ratings


def text_ids(ds: Dataset) -> None:
    # pandas 3 reads text as its ``str`` dtype: the whole column is wrong, not one value.
    ds.ratings["item_id"] = ds.ratings["item_id"].map(lambda i: f"m{i}")
    ds.items["item_id"] = ds.items["item_id"].map(lambda i: f"m{i}")


def bad_split(ds: Dataset) -> None:
    ds.ratings["given_split"] = np.where(ds.ratings.index % 5 == 0, "test", "train")
    ds.ratings.loc[3, "given_split"] = "valid"


def duplicate_item(ds: Dataset) -> None:
    ds.items = pd.concat([ds.items, ds.items.iloc[[2]]], ignore_index=True)


def old_film(ds: Dataset) -> None:
    ds.items.loc[4, "year"] = 1800


RATINGS, ITEMS = "ratings", "items"
IN_SET, BETWEEN, NOT_NULL = (
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
    "expect_column_values_to_not_be_null",
)
BROKEN = {
    # name: (how to break it, the failures it must produce exactly)
    "null rating": (set_value("rating", 5, np.nan), {(NOT_NULL, RATINGS, ("rating",))}),
    "rating 7": (set_value("rating", 5, 7.0), {(IN_SET, RATINGS, ("rating",))}),
    "rating 3.3": (set_value("rating", 5, 3.3), {(IN_SET, RATINGS, ("rating",))}),
    "duplicate pair": (
        duplicate_pair,
        {("expect_compound_columns_to_be_unique", RATINGS, ("user_id", "item_id"))},
    ),
    "text in user_id": (
        set_value("user_id", 5, "alice"),
        {("expect_column_values_to_be_in_type_list", RATINGS, ("user_id",))},
    ),
    "empty table": (
        empty_ratings,
        {
            ("expect_table_row_count_to_be_between", RATINGS, ()),
            ("expect_column_unique_value_count_to_be_between", RATINGS, ("user_id",)),
            ("expect_column_unique_value_count_to_be_between", RATINGS, ("item_id",)),
        },
    ),
    "timestamp in 1970": (set_value("timestamp", 5, 86_400), {(BETWEEN, RATINGS, ("timestamp",))}),
    "timestamp in the future": (
        set_value("timestamp", 5, NOW + 30 * 86_400),
        {(BETWEEN, RATINGS, ("timestamp",))},
    ),
    "rated item not in items": (drop_rated_item, {(IN_SET, RATINGS, ("item_id",))}),
    "too few users": (
        few_users,
        {("expect_column_unique_value_count_to_be_between", RATINGS, ("user_id",))},
    ),
    "given_split not train/test": (bad_split, {(IN_SET, RATINGS, ("given_split",))}),
    "duplicate item": (
        duplicate_item,
        {("expect_column_values_to_be_unique", ITEMS, ("item_id",))},
    ),
    "year 1800": (old_film, {(BETWEEN, ITEMS, ("year",))}),
}


Broken = Callable[[str], tuple[Dataset, ValidationReport]]


@pytest.fixture(scope="module")
def broken() -> Broken:
    """``broken(case)``: a dataset broken as ``BROKEN[case]`` says, and its report.

    Each case is validated once per module: several tests read the same run (they never change it).
    """

    @functools.cache
    def validate(case: str) -> tuple[Dataset, ValidationReport]:
        ds = make_dataset()
        BROKEN[case][0](ds)
        return ds, validate_dataset(ds, CFG, now=NOW)

    return validate


def test_good_dataset_passes() -> None:
    report = validate_dataset(make_dataset(), CFG, now=NOW)

    assert report.success, report.format_failures()
    assert report.failures == []
    assert report.evaluated == report.successful >= 20
    assert report.tables == {
        "ratings": {"rows": 400, "users": 50, "items": 80},
        "items": {"rows": 80},
    }
    assert report.format_failures() == f"all {report.evaluated} expectations passed"


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_copy_fails_on_the_right_expectation(case: str, broken: Broken) -> None:
    _, report = broken(case)

    assert not report.success
    assert failed(report) == BROKEN[case][1], report.format_failures()


@pytest.mark.parametrize(
    ("case", "column", "value"),
    [
        ("rating 7", "rating", 7.0),
        ("null rating", "rating", np.nan),
        ("text in user_id", "user_id", "alice"),
    ],
)
def test_failure_shows_the_offending_row(case: str, column: str, value, broken: Broken) -> None:
    ds, report = broken(case)  # BROKEN[case] is set_value(column, 5, value)
    (failure,) = report.failures

    assert failure.column == column
    assert failure.unexpected_count == 1
    (row,) = failure.examples
    assert row["row"] == 5
    assert row["user_id"] == ds.ratings.loc[5, "user_id"]
    assert row[column] == (None if value is np.nan else value)


def test_text_dtype_id_column_fails_with_examples() -> None:
    ds = make_dataset()
    text_ids(ds)

    report = validate_dataset(ds, CFG, now=NOW)

    assert failed(report) == {
        ("expect_column_values_to_be_in_type_list", RATINGS, ("item_id",)),
        ("expect_column_values_to_be_in_type_list", ITEMS, ("item_id",)),
    }
    first = report.failures[0]
    assert first.observed_value == "str"
    assert [r["item_id"] for r in first.examples] == list(ds.ratings["item_id"][:5])


def test_text_ids_pass_when_the_dataset_declares_them() -> None:
    ds = make_dataset()
    text_ids(ds)
    ds.info = DatasetInfo(source="csv", rating_scale=RatingScale(), id_type="str")

    report = validate_dataset(ds, CFG, now=NOW)

    assert report.success, report.format_failures()


LENGTHS = "expect_column_value_lengths_to_be_between"


def text_dataset() -> Dataset:
    """``make_dataset`` with text ids (``u1``, ``m1``, ...), declared as such."""
    ds = make_dataset()
    text_ids(ds)
    ds.ratings["user_id"] = ds.ratings["user_id"].map(lambda u: f"u{u}")
    ds.info = DatasetInfo(source="csv", rating_scale=RatingScale(), id_type="str")
    return ds


def test_text_ids_longer_than_the_service_takes_fail_naming_column_and_limit() -> None:
    ds = text_dataset()
    long_user, long_item = "u" * 200, "m" * (MAX_ID_LENGTH + 1)
    ds.ratings.loc[5, "user_id"] = long_user
    ds.ratings.loc[9, "item_id"] = long_item
    ds.items.loc[len(ds.items)] = [long_item, "Long", "", pd.NA]

    report = validate_dataset(ds, CFG, now=NOW)

    assert failed(report) == {
        (LENGTHS, RATINGS, ("user_id",)),
        (LENGTHS, RATINGS, ("item_id",)),
        (LENGTHS, ITEMS, ("item_id",)),
    }, report.format_failures()
    user = next(f for f in report.failures if f.columns == ("user_id",))
    assert user.unexpected_count == 1
    assert [(r["row"], r["user_id"]) for r in user.examples] == [(5, long_user)]
    text = report.format_failures()
    assert f"{LENGTHS} on ratings.user_id: 1 row(s) unexpected" in text
    assert f"{LENGTHS} on items.item_id: 1 row(s) unexpected" in text
    assert f"min_value=1 max_value={MAX_ID_LENGTH}" in text
    assert f"the service takes user_id of 1 to {MAX_ID_LENGTH} characters" in text


def test_text_ids_of_exactly_the_limit_pass() -> None:
    ds = text_dataset()
    ds.ratings.loc[5, "user_id"] = "u" * MAX_ID_LENGTH

    report = validate_dataset(ds, CFG, now=NOW)

    assert report.success, report.format_failures()


def test_the_limit_is_the_service_request_types() -> None:
    from pydantic import TypeAdapter, ValidationError

    from recommender.serving.api import raw_id_type

    served = TypeAdapter(raw_id_type("str"))
    assert served.validate_python("x" * MAX_ID_LENGTH)
    with pytest.raises(ValidationError):
        served.validate_python("x" * (MAX_ID_LENGTH + 1))


def test_a_csv_with_a_200_character_id_passes_ingest_but_not_validate(tmp_path: Path) -> None:
    ds = text_dataset()
    ratings = ds.ratings.copy()
    ratings.loc[7, "user_id"] = "a" * 200
    path = tmp_path / "ratings.csv"
    ratings.to_csv(path, index=False)
    params = parse_params({"data": {"source": "csv", "path": str(path)}, "csv": {"id_type": "str"}})

    ingested = load_dataset(params)  # the ingest stage's reader: text ids are kept as they are
    assert ingested.ratings.loc[7, "user_id"] == "a" * 200
    write_dataset(ingested, tmp_path / "interim")
    report = validate_dataset(read_dataset(tmp_path / "interim"), CFG, now=NOW)

    assert failed(report) == {(LENGTHS, RATINGS, ("user_id",))}, report.format_failures()
    assert f"{LENGTHS} on ratings.user_id: 1 row(s) unexpected" in report.format_failures()


def test_missing_column_fails_on_column_to_exist_without_crashing() -> None:
    ds = make_dataset()
    ds.ratings = ds.ratings.drop(columns="rating")

    report = validate_dataset(ds, CFG, now=NOW)

    # Reported in the suite's order: the missing column first, then what it made impossible.
    assert (report.failures[0].expectation, report.failures[0].column) == (
        "expect_column_to_exist",
        "rating",
    )
    assert "expect_column_to_exist on ratings.rating: no such column" in report.format_failures()
    # The checks on the missing column cannot run: they are reported, with GX's reason.
    others = [f for f in report.failures if f.expectation != "expect_column_to_exist"]
    assert {f.column for f in others} == {"rating"}
    assert all("rating" in (f.error or "") for f in others)
    assert "could not be evaluated" in report.format_failures()


def test_empty_table_reports_the_row_count(broken: Broken) -> None:
    _, report = broken("empty table")

    row_count = next(f for f in report.failures if f.columns == ())
    assert row_count.observed_value == 0
    assert "expect_table_row_count_to_be_between on ratings (table): observed 0" in (
        report.format_failures()
    )


def test_half_step_scale_accepts_half_ratings_only() -> None:
    scale = RatingScale(min=0.5, max=5.0, step=0.5)
    ds = make_dataset(scale=scale)
    ds.ratings.loc[:9, "rating"] = 3.5

    assert validate_dataset(ds, CFG, now=NOW).success

    ds.ratings.loc[3, "rating"] = 3.3
    ds.ratings.loc[4, "rating"] = 1.0  # on the scale
    assert failed(validate_dataset(ds, CFG, now=NOW)) == {(IN_SET, RATINGS, ("rating",))}


def test_missing_timestamps_allowed_only_when_configured() -> None:
    ds = make_dataset()
    ds.ratings.loc[:9, "timestamp"] = 0

    assert failed(validate_dataset(ds, CFG, now=NOW)) == {(BETWEEN, RATINGS, ("timestamp",))}
    allow = CFG.model_copy(update={"allow_missing_timestamps": True})
    assert validate_dataset(ds, allow, now=NOW).success
    # 0 means "no timestamp"; any other 1970 date is still wrong.
    ds.ratings.loc[10, "timestamp"] = 86_400
    (failure,) = validate_dataset(ds, allow, now=NOW).failures
    assert failure.unexpected_count == 1


def test_explicit_timestamp_max() -> None:
    ds = make_dataset()
    cfg = CFG.model_copy(update={"timestamp_max": "2019-01-01"})

    (failure,) = validate_dataset(ds, cfg, now=NOW).failures

    assert failure.column == "timestamp"
    assert failure.unexpected_count == int((ds.ratings["timestamp"] > 1_546_300_800).sum())


def test_format_failures_lists_count_and_at_most_five_rows() -> None:
    ds = make_dataset()
    ds.ratings.loc[10:17, "rating"] = 7.0

    text = validate_dataset(ds, CFG, now=NOW).format_failures()

    assert "expect_column_values_to_be_in_set on ratings.rating: 8 row(s) unexpected" in text
    assert "value_set=[1.0, 2.0, 3.0, 4.0, 5.0]" in text
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("row ")]
    assert rows == [
        f"row {i}: user_id={ds.ratings.loc[i, 'user_id']}, item_id={ds.ratings.loc[i, 'item_id']}"
        f", rating=7.0, timestamp={ds.ratings.loc[i, 'timestamp']}"
        for i in range(10, 15)
    ]


def test_summary_is_stable_and_has_no_clock_time(broken: Broken) -> None:
    ds, report = broken("timestamp in 1970")  # set_value("timestamp", 5, 86_400)

    first = report.summary()
    second = validate_dataset(ds, CFG, now=NOW + 3600).summary()

    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first["failed_expectations"] == 1
    assert first["failures"][0]["examples"][0]["timestamp"] == 86_400
    assert str(NOW + 86_400) not in json.dumps(first)


@pytest.mark.slow  # writes Data Docs (a file-mode GX project)
def test_data_docs_are_written_without_network(tmp_path: Path) -> None:
    events: list[str] = []
    watching = True

    def audit(event: str, args: tuple) -> None:
        if watching and event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
            events.append(f"{event} {args!r}")

    sys.addaudithook(audit)  # cannot be removed; it stops recording below
    try:
        report = validate_dataset(make_dataset(), CFG, docs_dir=tmp_path / "docs", now=NOW)
    finally:
        watching = False

    assert events == []
    assert report.success
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "recommender_ratings" in index and "recommender_items" in index
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))


def test_real_movielens_100k_passes_with_default_thresholds(ml100k_dir: Path) -> None:
    ratings = pd.read_csv(
        ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    ).astype({"rating": "float64"})
    raw = pd.read_csv(ml100k_dir / "u.item", sep="|", header=None, encoding="latin-1")
    items = pd.DataFrame(
        {
            "item_id": raw[0],
            "title": raw[1],
            "genres": "",
            "year": pd.to_datetime(raw[2], format="%d-%b-%Y").dt.year.astype("Int64"),
        }
    )
    info = DatasetInfo(source="movielens-100k", rating_scale=RatingScale())

    report = validate_dataset(Dataset(ratings, items, None, info), ValidateConfig())

    assert report.success, report.format_failures()
    assert report.tables["ratings"] == {"rows": 100_000, "users": 943, "items": 1682}


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow  # the stage twice, with Data Docs
def test_run_validate_keeps_last_good_reports_on_failure(tmp_path: Path) -> None:
    data, docs, summary = tmp_path / "interim", tmp_path / "reports/validation", tmp_path / "s.json"
    failed_dir = tmp_path / "reports/validation_failed"
    write_dataset(make_dataset(), data)

    run_validate(data, docs, summary, CFG)
    first_summary = summary.read_bytes()
    run_validate(data, docs, summary, CFG)
    good_docs, good_summary = tree_digest(docs), summary.read_bytes()
    assert good_summary == first_summary  # same data, same bytes

    bad = make_dataset()
    bad.ratings.loc[5, "rating"] = 7.0
    write_dataset(bad, data)
    with pytest.raises(ValidationFailed) as caught:
        run_validate(data, docs, summary, CFG)

    assert "expect_column_values_to_be_in_set on ratings.rating" in str(caught.value)
    assert str(failed_dir) in str(caught.value)
    assert tree_digest(docs) == good_docs
    assert summary.read_bytes() == good_summary
    assert (failed_dir / "index.html").exists()
    assert json.loads((failed_dir / "s.json").read_text())["success"] is False

    write_dataset(make_dataset(), data)
    run_validate(data, docs, summary, CFG)
    assert not failed_dir.exists()  # stale failure reports go once the data is good again


def test_run_validate_names_a_missing_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.json: no such file"):
        run_validate(tmp_path / "nope", tmp_path / "docs", tmp_path / "s.json", CFG)


def run_entry(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipeline" / "validate.py"),
            "--params",
            "params.yaml",
            "--data",
            "data/interim",
            "--docs",
            "reports/validation",
            "--summary",
            "reports/validation.json",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # two real processes, each importing Great Expectations (~5 s)
def test_entry_point_good_then_bad(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(
        "validate:\n  min_ratings: 100\n  min_users: 10\n  min_items: 10\n"
    )
    write_dataset(make_dataset(), tmp_path / "data/interim")

    ok = run_entry(tmp_path)

    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    assert ok.stderr == ""  # no GX bookkeeping logs, no progress bars
    docs, summary = tmp_path / "reports/validation", tmp_path / "reports/validation.json"
    assert (docs / "index.html").exists()
    assert json.loads(summary.read_text())["success"] is True
    good_docs, good_summary = tree_digest(docs), summary.read_bytes()

    bad = make_dataset()
    bad.ratings.loc[[3, 8], "rating"] = 7.0
    write_dataset(bad, tmp_path / "data/interim")
    failure = run_entry(tmp_path)

    assert failure.returncode == 1
    assert failure.stderr.startswith("error: stage 'validate' failed: data/interim does not pass")
    assert "expect_column_values_to_be_in_set on ratings.rating: 2 row(s) unexpected" in (
        failure.stderr
    )
    assert "row 3: " in failure.stderr and "row 8: " in failure.stderr
    assert "Traceback" not in failure.stderr
    assert "reports/validation_failed" in failure.stderr
    assert tree_digest(docs) == good_docs
    assert summary.read_bytes() == good_summary
    assert (tmp_path / "reports/validation_failed/index.html").exists()
    assert (tmp_path / "reports/validation_failed/validation.json").exists()


def test_bad_date_in_params_is_a_config_error() -> None:
    cfg = CFG.model_copy(update={"timestamp_min": "last tuesday"})

    with pytest.raises(ConfigError, match=r"validate\.timestamp_min: 'last tuesday' is not a date"):
        validate_dataset(make_dataset(), cfg, now=NOW)
