"""``data.engine: spark`` against pandas: the same interim rows, splits, vocabularies, features
and summaries, the same refusals; on a real local Spark (one session for the module)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.core.config import Params, PreprocessConfig, SparkConfig, parse_params
from recommender.core.errors import ConfigError, DataError
from recommender.core.io import parquet_digest
from recommender.core.schema import SOURCE_SCALES, write_dataset
from recommender.core.spark import spark_session
from recommender.core.validated import RATINGS_DIGEST, passed_on
from recommender.data import load_dataset, synthetic
from recommender.data.feedback import write_snapshot
from recommender.data.spark_ingest import ingest_spark
from recommender.dataset.processed import load_processed, write_processed
from recommender.preprocess import split
from recommender.preprocess.hashsplit import spark_unit_values, unit_values
from recommender.preprocess.split_spark import preprocess_spark
from recommender.validation import run_validate

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
SPLITS = ["random", "temporal", "leave_last_n"]


@pytest.fixture(scope="module")
def spark() -> Iterator:
    with spark_session(SparkConfig(master="local[2]", driver_memory="1g"), "tests") as session:
        yield session


def _params(**sections) -> Params:
    return parse_params(sections)


def _ingest_both(spark, params: Params, tmp: Path) -> tuple[Path, Path]:
    """The interim folder of each engine (pandas', Spark's), checked equal."""
    ours, theirs = tmp / "interim_spark", tmp / "interim_pandas"
    ingest_spark(spark, params, ours)
    write_dataset(load_dataset(params), theirs)
    for table in ("ratings", "items", "users"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(ours / f"{table}.parquet"), pd.read_parquet(theirs / f"{table}.parquet")
        )
    assert (ours / "ratings.parquet").is_dir()  # Spark's parts
    assert (ours / "dataset.json").read_text() == (theirs / "dataset.json").read_text()
    return ours, theirs


def _preprocess_both(
    spark, interim: Path, params: Params, tmp: Path, split_kind: str, validated: bool = False
) -> dict:
    """Both engines' preprocess output, checked equal; returns the summary."""
    cfg = params.preprocess.model_copy(update={"split": split_kind})
    processed, write_splits = preprocess_spark(
        spark, interim, cfg, params.seed, tmp / "scratch", validated=validated
    )
    write_processed(processed, tmp / "s", tmp / "s.json", write_splits=write_splits)
    reference = split.preprocess(split.read_interim(interim), cfg, params.seed)
    write_processed(reference, tmp / "p", tmp / "p.json")
    ours, theirs = load_processed(tmp / "s"), load_processed(tmp / "p")
    for name in ("train", "val", "test", "item_features", "user_features", "catalog"):
        pd.testing.assert_frame_equal(getattr(ours, name), getattr(theirs, name), obj=name)
    assert ours.user_vocab.ids == theirs.user_vocab.ids
    assert ours.item_vocab.ids == theirs.item_vocab.ids
    for name in ("vocab.json", "features.json", "dataset.json"):
        assert (tmp / "s" / name).read_text() == (tmp / "p" / name).read_text(), name
    assert (tmp / "s.json").read_text() == (tmp / "p.json").read_text()
    return json.loads((tmp / "s.json").read_text())


@pytest.mark.parametrize("split_kind", SPLITS)
def test_synthetic_default_gives_the_same_outputs(spark, tmp_path, split_kind):
    params = _params()
    interim, _ = _ingest_both(spark, params, tmp_path)
    summary = _preprocess_both(spark, interim, params, tmp_path, split_kind)
    assert summary["rows"]["total"] == params.synthetic.n_ratings
    assert summary["rows"]["val"] > 0 and summary["rows"]["test"] > 0


def test_a_split_with_no_validation_side_writes_an_empty_one_as_pandas_does(spark, tmp_path):
    """val_fraction 0: Spark's write by side makes no val folder; an empty part with the split's
    columns stands in, read as pandas' empty table."""
    params = _params(preprocess={"val_fraction": 0.0})
    interim, _ = _ingest_both(spark, params, tmp_path)
    summary = _preprocess_both(spark, interim, params, tmp_path, "random")
    assert summary["rows"]["val"] == 0 and summary["rows"]["test"] > 0
    assert load_processed(tmp_path / "s").val.columns.tolist() == [
        "user_idx", "item_idx", "rating", "timestamp", "user_id", "item_id"
    ]  # fmt: skip


def test_synthetic_made_in_blocks_on_the_executors_gives_the_same_outputs(
    spark, tmp_path, monkeypatch
):
    """Above _DENSE_CELLS the generator runs block by block (here on Spark's executors, a task a
    block); with the feedback's ratings appended, the rows are pandas' in pandas' order."""
    monkeypatch.setattr(synthetic, "_DENSE_CELLS", 0)
    monkeypatch.setattr(synthetic, "BLOCK_RATINGS", 2500)
    params = _params(
        synthetic={"n_users": 300, "n_items": 400, "n_ratings": 12_000},
        ingest={"duplicates": "keep_last"},
    )
    rated = synthetic.generate(params.synthetic, params.seed).ratings.iloc[7]
    feedback = tmp_path / "feedback"
    rows = pd.DataFrame(
        {
            # a pair the source has, a new user, a new item, the new user's pair again
            "user_id": [rated["user_id"], 301, 5, 301],
            "item_id": [rated["item_id"], 3, 401, 3],
            "rating": [4.0, 2.0, 5.0, 1.0],
            "timestamp": [1_700_000_000, 1_700_000_001, 1_700_000_002, 1_700_000_003],
        }
    )
    write_snapshot(rows, {}, feedback)
    ours, theirs = tmp_path / "interim_spark", tmp_path / "interim_pandas"
    ingest_spark(spark, params, ours, feedback=feedback)
    write_dataset(load_dataset(params, feedback=feedback), theirs)
    for table in ("ratings", "items", "users"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(ours / f"{table}.parquet"), pd.read_parquet(theirs / f"{table}.parquet")
        )
    _, plan = synthetic.catalog(params.synthetic, params.seed, SOURCE_SCALES["synthetic"])
    assert len(synthetic.blocks(plan)) >= 4  # tasks on the executors
    assert (ours / "dataset.json").read_text() == (theirs / "dataset.json").read_text()
    interim = pd.read_parquet(ours / "ratings.parquet")
    # One feedback pair was rated by the source already, another twice in the feedback: merged.
    assert len(interim) == 12_000 + 4 - 2
    assert json.loads((ours / "dataset.json").read_text())["extra"]["duplicates_merged"] == 2


@pytest.mark.parametrize("split_kind", ["given", "random"])
def test_movielens_100k_gives_the_same_outputs(spark, tmp_path, split_kind):
    params = _params(data={"source": "movielens-100k", "path": str(ML100K), "download": False})
    interim, _ = _ingest_both(spark, params, tmp_path)
    summary = _preprocess_both(spark, interim, params, tmp_path, split_kind)
    assert summary["rows"]["total"] == 100_000 and summary["n_users"] == 943


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def _repeats(n: int = 6000, text_ids: bool = False) -> pd.DataFrame:
    """Ratings where about one in six repeats a pair, with many timestamp ties."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(1, 120, n),
            "item_id": rng.integers(1, 90, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": 1_000_000_000 + rng.integers(0, 30, n) * 60,
        }
    )
    if text_ids:
        frame["user_id"] = frame["user_id"].map("ü{:03d}".format)
        frame["item_id"] = frame["item_id"].map("i-{:03d}".format)
    return frame


@pytest.mark.parametrize("policy", ["keep_first", "keep_last", "mean", "error"])
def test_every_duplicate_policy_keeps_the_same_rows_in_the_same_order(spark, tmp_path, policy):
    path = _csv(tmp_path / "r.csv", _repeats())
    params = _params(data={"source": "csv", "path": str(path)}, ingest={"duplicates": policy})
    interim, _ = _ingest_both(spark, params, tmp_path)
    info = json.loads((interim / "dataset.json").read_text())
    assert (info["extra"].get("duplicates_merged", 0) > 0) == (policy != "error")


@pytest.mark.parametrize("split_kind", SPLITS)
def test_text_ids_split_and_encode_the_same(spark, tmp_path, split_kind):
    path = _csv(tmp_path / "r.csv", _repeats(text_ids=True))
    params = _params(
        data={"source": "csv", "path": str(path)},
        csv={"id_type": "str"},
        ingest={"duplicates": "keep_last"},
    )
    interim, _ = _ingest_both(spark, params, tmp_path)
    _preprocess_both(spark, interim, params, tmp_path, split_kind)


def test_the_split_hash_is_the_same_in_spark_and_numpy(spark):
    ids = [0, 1, -1, 2**63 - 1, -(2**63), 7, 123_456_789_012]
    users, items = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    frame = spark.createDataFrame(pd.DataFrame({"user_id": users, "item_id": items}))
    for seed in (0, 42, 7):
        got = frame.select(spark_unit_values(seed, text_ids=False).alias("u")).toPandas()["u"]
        np.testing.assert_array_equal(got.to_numpy(), unit_values(users, items, seed))
    text = pd.DataFrame({"user_id": ["a", "ü", "long id " * 9, ""], "item_id": ["x"] * 4})
    got = spark.createDataFrame(text).select(spark_unit_values(42, text_ids=True).alias("u"))
    expected = unit_values(text["user_id"], text["item_id"], 42)
    np.testing.assert_array_equal(got.toPandas()["u"].to_numpy(), expected)


def _error(call) -> str:
    with pytest.raises((DataError, ConfigError)) as info:
        call()
    return str(info.value)


def _pandas_error(interim: Path, cfg: PreprocessConfig) -> str:
    path = interim / "ratings.parquet"
    return _error(lambda: split.preprocess(split.read_interim(interim), cfg, 42, ratings_path=path))


def test_preprocess_refuses_what_pandas_refuses_naming_the_same_row(spark, tmp_path):
    frame = _repeats(600)
    interim = tmp_path / "interim"
    params = _params(data={"source": "csv", "path": str(_csv(tmp_path / "r.csv", frame))})
    write_dataset(load_dataset(params), interim)  # duplicates left in place (policy error)
    cfg = params.preprocess
    ours = _error(lambda: preprocess_spark(spark, interim, cfg, 42, tmp_path / "s1"))
    assert ours == _pandas_error(interim, cfg)
    assert "line 30: 37 rows repeat a (user_id, item_id) pair, e.g. (88, 11)" in ours
    # A given split without the column, and a temporal split of equal timestamps.
    given = cfg.model_copy(update={"split": "given"})
    assert _error(
        lambda: preprocess_spark(spark, interim, given, 42, tmp_path / "s2")
    ) == _pandas_error(interim, given)
    ratings = frame.drop_duplicates(["user_id", "item_id"]).assign(timestamp=5)
    ratings.to_parquet(interim / "ratings.parquet", index=False)
    temporal = cfg.model_copy(update={"split": "temporal"})
    ours = _error(lambda: preprocess_spark(spark, interim, temporal, 42, tmp_path / "s3"))
    assert ours == _pandas_error(interim, temporal)
    assert "no rating is later than the cut" in ours


def test_preprocess_skips_validates_checks_only_for_the_ratings_that_passed_it(spark, tmp_path):
    """With a validate summary that passed on these very ratings (their bytes' SHA-256), the
    Spark preprocess does not repeat the null and pair checks, and its outputs are pandas'; a
    summary of other ratings, or of a failed run, is no licence: the repeats are refused."""
    params = _params()
    interim, _ = _ingest_both(spark, params, tmp_path)
    summary = tmp_path / "validation.json"
    run_validate(interim, tmp_path / "docs", summary, params.validate_)
    assert passed_on(summary, interim)
    _preprocess_both(spark, interim, params, tmp_path, "random", validated=True)

    repeated = tmp_path / "repeated"
    frame = _repeats(600)
    csv = _params(data={"source": "csv", "path": str(_csv(tmp_path / "r.csv", frame))})
    write_dataset(load_dataset(csv), repeated)  # duplicates left in place (policy error)
    shutil.copy(summary, repeated / "validation.json")  # passed, but on other ratings
    assert not passed_on(repeated / "validation.json", repeated)
    failed = json.loads(summary.read_text()) | {"success": False}
    failed[RATINGS_DIGEST] = parquet_digest(repeated / "ratings.parquet")
    (repeated / "failed.json").write_text(json.dumps(failed))
    assert not passed_on(repeated / "failed.json", repeated)
    assert not passed_on(tmp_path / "missing.json", repeated)
    ours = _error(lambda: preprocess_spark(spark, repeated, csv.preprocess, 42, tmp_path / "s"))
    assert "rows repeat a (user_id, item_id) pair" in ours


BROKEN = {
    "text id": "user_id,item_id,rating,timestamp\n1,10,4,100\nabc,11,3,100\n",
    "truncated": "user_id,item_id,rating,timestamp\n1,10,4,100\n2,11\n",
    "wrong separator": "user_id;item_id;rating;timestamp\n1;10;4;100\n",
    "fractional id": "user_id,item_id,rating,timestamp\n1,10.5,4,100\n",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_stops_spark_ingest_with_pandas_message_keeping_the_output(
    spark, tmp_path, case
):
    good = _params()
    out = tmp_path / "interim"
    ingest_spark(spark, good, out)
    before = pd.read_parquet(out / "ratings.parquet")
    path = tmp_path / "r.csv"
    path.write_text(BROKEN[case])
    params = _params(data={"source": "csv", "path": str(path)})
    ours = _error(lambda: ingest_spark(spark, params, out))
    assert ours == _error(lambda: load_dataset(params))
    assert "r.csv" in ours
    pd.testing.assert_frame_equal(pd.read_parquet(out / "ratings.parquet"), before)


def test_the_ingest_stage_on_spark_exits_1_naming_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(BROKEN["text id"])
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data: {{source: csv, path: '{path}', engine: spark}}\nspark: {{driver_memory: 1g}}\n"
    )
    out = tmp_path / "interim"
    out.mkdir()
    (out / "keep.txt").write_text("previous output")
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipeline" / "ingest.py"), "--out", str(out),
         "--params", str(params)],
        capture_output=True, text=True, cwd=tmp_path, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "r.csv" in result.stderr and "line 3" in result.stderr, result.stderr
    assert (out / "keep.txt").read_text() == "previous output"
