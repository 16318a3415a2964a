"""Running the suites with Great Expectations, and the ``validate`` stage around it.

GX runs on its own pandas engine (:func:`validate_dataset`, a :class:`Dataset` in memory) or, given
a SparkSession, on its Spark engine (:func:`validate_spark`, the interim folder read by Spark,
``data.engine: spark``): the same suites, results and messages. With a docs folder, through
checkpoints that also render the Data Docs, made to load nothing from another host
(:func:`recommender.datadocs.make_offline`).
"""

from __future__ import annotations

import numbers
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recommender.core.config import ValidateConfig
from recommender.core.errors import DataError, ValidationFailed
from recommender.core.io import parquet_digest, staged_dir, write_json
from recommender.core.schema import GIVEN_SPLIT, ITEM, USER, Dataset, DatasetInfo, read_dataset
from recommender.core.spark import ROW, spark_setting
from recommender.core.telemetry import disable_telemetry
from recommender.core.validated import RATINGS_DIGEST
from recommender.datadocs import make_offline
from recommender.validation.failures import RESULT_FORMAT, FrameRows, Rows, failures
from recommender.validation.report import Failure, ValidationReport
from recommender.validation.spark_frames import (
    SPARK_RESULT_FORMAT,
    SparkRows,
    clustered_by_pair,
    read_tables,
    table_counts,
)
from recommender.validation.suites import ITEM_KNOWN, Engine, build_suites

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import AbstractDataContext
    from pyspark.sql import SparkSession


def validate_dataset(
    dataset: Dataset,
    cfg: ValidateConfig,
    docs_dir: str | Path | None = None,
    *,
    now: float | None = None,
) -> ValidationReport:
    """Run both suites with Great Expectations and report what failed.

    Args:
        dataset: The canonical tables (see :mod:`recommender.core.schema`).
        cfg: ``params.validate``.
        docs_dir: Where to put the Data Docs site (``index.html`` at its top); ``None`` for none.
            An existing folder is filled, not replaced: callers stage it (see :func:`run_validate`).
        now: Unix time standing for "now" (default: the clock).

    Returns:
        The report; a failed expectation is a result, not an exception.
    """
    frames = _frames(dataset)
    # Example rows come from the caller's table, without our helper column.
    rows: dict[str, Rows] = {
        table: FrameRows(frame.drop(columns=[ITEM_KNOWN], errors="ignore"))
        for table, frame in frames.items()
    }
    failed, evaluated, successful, _ = _run_suites(
        frames, rows, dataset.info, cfg, docs_dir, now=now, engine="pandas"
    )
    return ValidationReport(
        success=not failed,
        failures=failed,
        evaluated=evaluated,
        successful=successful,
        tables=_table_counts(dataset),
    )


def validate_spark(
    spark: SparkSession,
    data_dir: str | Path,
    cfg: ValidateConfig,
    docs_dir: str | Path | None = None,
    *,
    now: float | None = None,
) -> ValidationReport:
    """:func:`validate_dataset` on GX's Spark engine, for the tables of an interim folder.

    ``<data_dir>/ratings.parquet`` and ``items.parquet`` may be files or folders of part files;
    ``dataset.json`` says the scale and id type. The report is the one pandas gives for the same
    tables: same results, example rows at the same positions (see
    :mod:`~recommender.validation.spark_frames`). Only GX's observed Spark type names differ
    (``StringType`` where pandas says ``str``). No table comes to the driver.

    Args:
        spark: The session to run on.
        data_dir: The ``ingest`` stage's folder.
        cfg, docs_dir, now: As for :func:`validate_dataset`.
    """
    info = DatasetInfo.read(Path(data_dir) / "dataset.json")
    frames = read_tables(spark, data_dir)
    rows: dict[str, Rows] = {table: SparkRows(f) for table, f in frames.items()}
    # First on the ratings clustered by pair (GX's uniqueness windows then shuffle nothing), only
    # to learn whether everything passes. If not, again on the frames in row order, for the
    # failures: GX keeps the first offending rows it meets, and the examples must be the table's
    # first, as pandas shows them. Each pass renders its own Data Docs; the last one's are kept.
    # The first pass needs no row positions (no example rows): ``_row`` stays out of its cache.
    clustered = frames | {"ratings": clustered_by_pair(frames["ratings"].drop(ROW))}
    # GX caches each frame it validates (MEMORY_AND_DISK: what the heap cannot hold goes to local
    # disk). Kept uncompressed: compressing the columns cost 9 s of the 33 s it took to cache 25M
    # ratings, for memory the stage does not need.
    try:
        with spark_setting(spark, "spark.sql.inMemoryColumnarStorage.compressed", False):
            with tempfile.TemporaryDirectory(prefix="gx-docs-") as first_docs:
                first = first_docs if docs_dir is not None else None
                failed, evaluated, successful, observed = _run_suites(
                    clustered, None, info, cfg, first, now=now, engine="spark"
                )
                validated = clustered
                if successful == evaluated and docs_dir is not None:
                    shutil.copytree(first_docs, docs_dir, dirs_exist_ok=True)
            if successful < evaluated:
                _unpersist(clustered)
                failed, evaluated, successful, observed = _run_suites(
                    frames, rows, info, cfg, docs_dir, now=now, engine="spark"
                )
                validated = frames
            counts = table_counts(validated, observed)  # while GX's cached copies are there
    finally:
        _unpersist(clustered)
        _unpersist(frames)
    return ValidationReport(
        success=not failed,
        failures=failed,
        evaluated=evaluated,
        successful=successful,
        tables=counts,
    )


def _unpersist(frames: dict[str, Any]) -> None:
    for frame in frames.values():
        frame.unpersist()  # GX persists each batch's DataFrame and leaves it so


def _run_suites(
    frames: dict[str, Any],
    rows: dict[str, Rows] | None,
    info: DatasetInfo,
    cfg: ValidateConfig,
    docs_dir: str | Path | None,
    *,
    now: float | None,
    engine: Engine,
) -> tuple[list[Failure], int, int, dict[str, dict[str, int]]]:
    """Both suites on ``frames`` (pandas or Spark DataFrames, as ``engine`` says): the failures
    (none without ``rows``: the counts say whether any), how many expectations ran and how many
    passed, and the table counts GX observed (:func:`_observed_counts`); the Data Docs into
    ``docs_dir``."""
    disable_telemetry()  # before GX is imported: it reads GX_ANALYTICS_ENABLED once
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    given_split = info.has_given_split or GIVEN_SPLIT in frames["ratings"].columns
    suites = build_suites(
        cfg,
        info.rating_scale,
        id_type=info.id_type,
        given_split=given_split,
        now=now,
        engine=engine,
    )
    spark = engine == "spark"
    # On Spark, offending rows are found by ``_row``: only when they are wanted (``rows``); else
    # GX's jobs that list their positions are not run at all.
    result_format = RESULT_FORMAT | SPARK_RESULT_FORMAT if spark and rows else RESULT_FORMAT
    with tempfile.TemporaryDirectory(prefix="gx-") as project:
        if docs_dir is None:
            ctx = gx.get_context(mode="ephemeral")
        else:
            ctx = gx.get_context(mode="file", project_root_dir=project)
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        if spark:  # persist: GX's many jobs read the frame once; validate_spark frees it
            source = ctx.data_sources.add_spark("canonical", persist=True)
        else:
            source = ctx.data_sources.add_pandas("canonical")
        failed: list[Failure] = []
        evaluated = successful = 0
        observed: dict[str, dict[str, int]] = {}
        for table, suite in suites.items():
            suite = ctx.suites.add(suite)  # gives each expectation the id its result carries
            batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
            suite_result = _run_suite(
                ctx, batch, suite, frames[table], result_format, data_docs=docs_dir is not None
            )
            observed[table] = _observed_counts(suite_result)
            stats = suite_result.statistics
            evaluated += int(stats["evaluated_expectations"])
            successful += int(stats["successful_expectations"])
            if rows is not None:
                ids = [e.id for e in suite.expectations]
                failed += failures(table, rows[table], suite_result, ids)

        if docs_dir is not None:
            site = Path(project) / "gx" / "uncommitted" / "data_docs" / "local_site"
            # GX's pages load their libraries from CDNs and a logo beacon from a GX host: point
            # them at pinned local copies so that the docs render offline and call nobody.
            make_offline(site)
            shutil.copytree(site, docs_dir, dirs_exist_ok=True)
    return failed, evaluated, successful, observed


#: The expectations whose observed value is a table count, and the count's key in the summary.
_COUNTED = {
    ("expect_table_row_count_to_be_between", None): "rows",
    ("expect_column_unique_value_count_to_be_between", USER): "users",
    ("expect_column_unique_value_count_to_be_between", ITEM): "items",
}


def _observed_counts(suite_result: ExpectationSuiteValidationResult) -> dict[str, int]:
    """The rows and distinct users and items a suite's expectations observed (nulls not counted,
    as :func:`~recommender.validation.spark_frames.table_counts` counts), where they ran."""
    counts = {}
    for result in suite_result.results:
        config = result.expectation_config
        key = _COUNTED.get((config.type, config.kwargs.get("column")))
        observed = (result.result or {}).get("observed_value")
        if key is not None and isinstance(observed, numbers.Integral):
            counts[key] = int(observed)
    return counts


def _frames(dataset: Dataset) -> dict[str, pd.DataFrame]:
    """The tables GX sees: positional indices, and the ratings with :data:`ITEM_KNOWN`."""
    # A RangeIndex makes GX's unexpected indices the rows' positions in the Parquet tables.
    ratings = dataset.ratings.reset_index(drop=True)
    items = dataset.items.reset_index(drop=True)
    if ITEM in ratings.columns and ITEM in items.columns:
        ratings = ratings.assign(**{ITEM_KNOWN: ratings[ITEM].isin(items[ITEM])})
    return {"ratings": ratings, "items": items}


def _run_suite(
    ctx: AbstractDataContext,
    batch: BatchDefinition,
    suite: ExpectationSuite,
    frame: Any,
    result_format: dict[str, Any],
    *,
    data_docs: bool,
) -> ExpectationSuiteValidationResult:
    """Run ``suite`` on ``frame`` (pandas or Spark); with ``data_docs``, also render the result
    into ``ctx``'s site.

    Without Data Docs the batch validates the suite and nothing more (about 0.3 s for our small
    test tables, against 0.45 s through a checkpoint). Data Docs are rendered from what a
    checkpoint stores with each result (run id and time, batch parameters), so for them a
    checkpoint runs the suite. Same suite, same result format: the same results either way.
    """
    if not data_docs:
        return batch.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format=result_format
        )
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    name = batch.data_asset.name
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="docs")],
            result_format=result_format,
        )
    )
    (result,) = checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()
    return result


def _table_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    ratings, items = dataset.ratings, dataset.items
    counts = {"ratings": {"rows": len(ratings)}, "items": {"rows": len(items)}}
    for column, key in ((USER, "users"), (ITEM, "items")):
        if column in ratings.columns:
            counts["ratings"][key] = int(ratings[column].nunique())
    return counts


def run_validate(
    data_dir: str | Path,
    docs_dir: str | Path,
    summary_path: str | Path,
    cfg: ValidateConfig,
    *,
    spark: SparkSession | None = None,
) -> ValidationReport:
    """The stage: validate ``data_dir``; publish the reports, or keep the last good ones.

    With ``spark``, GX runs on Spark (:func:`validate_spark`; the tables may be folders of part
    files), else on pandas (:func:`validate_dataset`); the rest is the same. On success the Data
    Docs go to ``docs_dir`` and the summary to ``summary_path`` (both written atomically) and a
    stale ``validation_failed/`` beside ``docs_dir`` is removed. On failure the last good reports
    stay untouched, this run's Data Docs and summary go to
    ``<parent of docs_dir>/validation_failed/``, and :class:`ValidationFailed` is raised with
    :meth:`ValidationReport.format_failures` as its message.
    """
    data_dir, docs_dir, summary_path = Path(data_dir), Path(docs_dir), Path(summary_path)
    failed_dir = docs_dir.parent / "validation_failed"
    for name in ("dataset.json", "ratings.parquet", "items.parquet"):
        if not (data_dir / name).exists():
            raise DataError(data_dir / name, "no such file", expected="the output of ingest")
    digest = parquet_digest(data_dir / "ratings.parquet")  # what the suites are about to read
    with tempfile.TemporaryDirectory(prefix=".validate-") as scratch:
        if spark is None:
            report = validate_dataset(read_dataset(data_dir), cfg, docs_dir=scratch)
        else:
            report = validate_spark(spark, data_dir, cfg, docs_dir=scratch)
        # The digest tells preprocess that these very ratings passed (core.validated).
        summary = report.summary() | {RATINGS_DIGEST: digest}
        with staged_dir(docs_dir if report.success else failed_dir) as out:
            shutil.copytree(scratch, out, dirs_exist_ok=True)
            if not report.success:
                write_json(summary, out / summary_path.name)
    if not report.success:
        raise ValidationFailed(
            f"{data_dir} does not pass the data checks.\n{report.format_failures()}\n"
            f"This run's Data Docs and summary: {failed_dir}/index.html and "
            f"{failed_dir / summary_path.name} (the last good {docs_dir} is kept)."
        )
    write_json(summary, summary_path)
    shutil.rmtree(failed_dir, ignore_errors=True)
    return report
