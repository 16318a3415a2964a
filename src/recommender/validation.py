"""The ``validate`` stage: a Great Expectations (GX Core 1.x) suite over the canonical tables.

Two suites, one per table, are built from ``params.validate`` and the dataset's rating scale, and
run by GX's own pandas engine. The outcome is a :class:`ValidationReport`: a byte-stable summary for
DVC (no wall-clock time in it) and a text block naming each failed expectation, its column, how
many rows broke it and a few of those rows, so the user can fix the data without opening HTML.

Great Expectations is imported inside the functions that need it: importing it costs seconds, and
``import recommender.validation`` (or ``pipeline/validate.py --help``) should not pay for it.

Usage::

    report = validate_dataset(read_dataset("data/interim"), params.validate_, docs_dir="docs")
    if not report.success:
        print(report.format_failures())
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recommender.core.config import RatingScale, ValidateConfig
from recommender.core.errors import ConfigError, DataError, ValidationFailed
from recommender.core.io import staged_dir, write_json
from recommender.core.schema import (
    GIVEN_SPLIT,
    ITEM,
    ITEM_COLUMNS,
    MAX_ID_LENGTH,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
    Dataset,
    read_dataset,
)
from recommender.core.telemetry import disable_telemetry
from recommender.datadocs import make_offline

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import AbstractDataContext

#: The tables we validate, in report order, and the GX suite that checks each.
SUITE_NAMES = {"ratings": "recommender_ratings", "items": "recommender_items"}
#: Years a film can plausibly carry (where the items table knows one).
YEAR_MIN, YEAR_MAX = 1870, 2100
#: How many unexpected rows GX keeps per expectation (we show at most ``MAX_EXAMPLES`` of them).
PARTIAL_UNEXPECTED = 20
MAX_EXAMPLES = 5
#: What GX reports per expectation: counts, observed values and the first unexpected rows.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED}
#: Type names GX may report for integer ids: numpy/pandas dtypes for typed columns, and ``int``
#: for the Python ints in an ``object`` column (where one stray string turns the dtype to object).
INT_TYPES = ["int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"]  # fmt: skip
#: A column :func:`validate_dataset` adds to the ratings GX sees: is the row's item in the items
#: table? GX has no cross-table check for pandas, and an ``in_set`` over the items' ids is slow
#: (GX copies its kwargs many times: 10 s for 60k items); a boolean column costs milliseconds.
ITEM_KNOWN = "item_id_in_items"
SPLITS = ["train", "test"]
#: Clock skew tolerated when ``timestamp_max`` is ``null`` ("no later than now").
ONE_DAY = 86_400


def _unix_seconds(value: str, key: str) -> int:
    """Parse a params date (``"1995-01-01"``, naive means UTC) into Unix seconds."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"params.yaml: validate.{key}: {value!r} is not a date (expected e.g. '1995-01-01')"
        ) from exc
    if ts is pd.NaT:
        raise ConfigError(f"params.yaml: validate.{key}: a date is required, got {value!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.timestamp())


def _date(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def timestamp_bounds(cfg: ValidateConfig, now: float | None = None) -> tuple[int, int]:
    """The allowed ``[min, max]`` of ``timestamp`` in Unix seconds (``null`` max: now + 1 day)."""
    low = _unix_seconds(cfg.timestamp_min, "timestamp_min")
    if cfg.timestamp_max is None:
        high = int(time.time() if now is None else now) + ONE_DAY
    else:
        high = _unix_seconds(cfg.timestamp_max, "timestamp_max")
    if low > high:
        raise ConfigError(
            f"params.yaml: validate.timestamp_min ({cfg.timestamp_min}) is after "
            f"validate.timestamp_max ({cfg.timestamp_max or 'now'})"
        )
    return low, high


def build_suites(
    cfg: ValidateConfig,
    scale: RatingScale,
    *,
    id_type: str = "int",
    given_split: bool = False,
    now: float | None = None,
) -> dict[str, ExpectationSuite]:
    """Build the GX suites for the ``ratings`` and ``items`` tables.

    That every rated item is in the items table is checked on the boolean column
    ``item_id_in_items``, which :func:`validate_dataset` adds to the ratings it hands to GX.

    Args:
        cfg: ``params.validate`` (thresholds).
        scale: The dataset's rating scale; ratings must be one of ``scale.values()``.
        id_type: ``"int"`` requires integer ids; ``"str"`` (CSV files with text ids) requires
            ids of 1 to ``MAX_ID_LENGTH`` characters, the longest the service's requests take.
        given_split: Whether ratings carry a ``given_split`` column (``train``/``test`` only).
        now: Unix time standing for "now" when ``timestamp_max`` is ``null`` (default: the clock).

    Returns:
        ``{"ratings": suite, "items": suite}``, not yet added to any GX context.
    """
    disable_telemetry()  # before GX is first imported
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    ts_min, ts_max = timestamp_bounds(cfg, now)
    rating_columns = RATING_COLUMNS + ([GIVEN_SPLIT] if given_split else [])

    ratings: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in rating_columns]
    ratings += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in RATING_COLUMNS]
    if id_type == "int":
        ratings += [
            gxe.ExpectColumnValuesToBeInTypeList(
                column=c, type_list=INT_TYPES, notes=f"id_type is 'int': {c} must be an integer"
            )
            for c in (USER, ITEM)
        ]
    else:
        ratings += [_id_length(gxe, c) for c in (USER, ITEM)]
    ratings += [
        gxe.ExpectColumnValuesToBeInSet(
            column=RATING,
            value_set=scale.values(),
            notes=f"the rating scale: {scale.min:g} to {scale.max:g} in steps of {scale.step:g}",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=[USER, ITEM], notes="one rating per (user_id, item_id)"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=TIMESTAMP,
            min_value=ts_min,
            max_value=ts_max,
            # 0 stands for "no timestamp" in files without one; only then is it allowed.
            row_condition=(Column(TIMESTAMP) != 0) if cfg.allow_missing_timestamps else None,
            notes=f"Unix seconds from {_date(ts_min)} to {_date(ts_max)}"
            + (" (0 allowed: no timestamp)" if cfg.allow_missing_timestamps else ""),
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_ratings, notes="validate.min_ratings"),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=USER, min_value=cfg.min_users, notes="validate.min_users"
        ),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=ITEM, min_value=cfg.min_items, notes="validate.min_items"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=ITEM_KNOWN,
            value_set=[True],
            notes="every rated item_id is in the items table",
        ),
    ]
    if given_split:
        ratings += [
            gxe.ExpectColumnValuesToNotBeNull(column=GIVEN_SPLIT),
            gxe.ExpectColumnValuesToBeInSet(column=GIVEN_SPLIT, value_set=SPLITS),
        ]

    items: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in ITEM_COLUMNS]
    items += [
        gxe.ExpectColumnValuesToNotBeNull(column=ITEM),
        gxe.ExpectColumnValuesToBeUnique(column=ITEM, notes="one row per item"),
        # Nulls are skipped by GX's column-map expectations: an unknown year is allowed.
        gxe.ExpectColumnValuesToBeBetween(
            column="year", min_value=YEAR_MIN, max_value=YEAR_MAX, notes="where known"
        ),
    ]
    if id_type == "int":
        items.append(gxe.ExpectColumnValuesToBeInTypeList(column=ITEM, type_list=INT_TYPES))
    else:
        items.append(_id_length(gxe, ITEM))

    # Built whole: ``suite.add_expectation`` would need an active GX context.
    return {
        "ratings": gx.ExpectationSuite(name=SUITE_NAMES["ratings"], expectations=ratings),
        "items": gx.ExpectationSuite(name=SUITE_NAMES["items"], expectations=items),
    }


def _id_length(gxe: Any, column: str) -> Any:
    """Text ids no longer than the service accepts (``MAX_ID_LENGTH``, the request type's limit)."""
    return gxe.ExpectColumnValueLengthsToBeBetween(
        column=column,
        min_value=1,
        max_value=MAX_ID_LENGTH,
        notes=f"id_type is 'str': the service takes {column} of 1 to {MAX_ID_LENGTH} characters",
    )


@dataclass(frozen=True)
class Failure:
    """One failed (or not evaluable) expectation.

    Attributes:
        expectation: GX's expectation type, e.g. ``"expect_column_values_to_be_in_set"``.
        table: ``"ratings"`` or ``"items"``.
        columns: The column(s) it checks; empty for table-level expectations.
        unexpected_count: How many rows broke it (``None`` for aggregate checks and errors).
        observed_value: What GX measured for aggregate checks (row count, distinct values, dtype).
        expected: The expectation's arguments in words, e.g. ``value_set=[1.0, 2.0, ...]``.
        examples: Up to a few offending rows, each with its 0-based ``row`` in the table.
        error: Why GX could not evaluate it (e.g. the column is missing), else ``None``.
    """

    expectation: str
    table: str
    columns: tuple[str, ...]
    unexpected_count: int | None = None
    observed_value: Any = None
    expected: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def column(self) -> str | None:
        """The first (usually only) column, or ``None`` for a table-level expectation."""
        return self.columns[0] if self.columns else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (NaN and numpy scalars turned into JSON values).

        ``expected`` is left out: with ``timestamp_max: null`` it holds "now", and the summary
        must be the same bytes for the same data.
        """
        return {
            "expectation": self.expectation,
            "table": self.table,
            "columns": list(self.columns),
            "unexpected_count": self.unexpected_count,
            "observed_value": _jsonable(self.observed_value),
            "examples": _jsonable(self.examples),
            "error": self.error,
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`validate_dataset`.

    Attributes:
        success: Whether every expectation of both suites passed.
        failures: The failed expectations, in suite order (ratings first).
        evaluated: How many expectations ran.
        successful: How many of them passed.
        tables: Per table, the counts worth tracking (rows; distinct users and items).
    """

    success: bool
    failures: list[Failure]
    evaluated: int
    successful: int
    tables: dict[str, dict[str, int]]

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for ``dvc metrics``: same data, same bytes (no clock time in it)."""
        return {
            "success": self.success,
            "evaluated_expectations": self.evaluated,
            "successful_expectations": self.successful,
            "failed_expectations": self.evaluated - self.successful,
            "tables": self.tables,
            "failures": [f.to_dict() for f in self.failures],
        }

    def format_failures(self, max_examples: int = MAX_EXAMPLES) -> str:
        """A text block: each failed expectation, its column, its count and a few example rows."""
        if self.success:
            return f"all {self.evaluated} expectations passed"
        lines = [
            f"{self.evaluated - self.successful} of {self.evaluated} data expectations failed:"
        ]
        for f in self.failures:
            where = f"{f.table}.{','.join(f.columns)}" if f.columns else f"{f.table} (table)"
            if f.error:
                what = f"could not be evaluated: {f.error}"
            elif f.expectation == "expect_column_to_exist":
                what = "no such column"
            elif f.unexpected_count is not None:
                what = f"{f.unexpected_count} row(s) unexpected"
                if f.observed_value is not None:
                    what += f" (observed {f.observed_value!r})"
            else:
                what = f"observed {_short(f.observed_value)}"
            lines.append(f"- {f.expectation} on {where}: {what}")
            if f.expected:
                lines.append(f"    expected: {f.expected}")
            for row in f.examples[:max_examples]:
                cells = ", ".join(f"{k}={v!r}" for k, v in row.items() if k != "row")
                lines.append(f"    row {row['row']}: {cells}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars, NaN and pandas' missing markers into plain JSON values, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Arguments that say where an expectation looks, not what it expects.
_NOT_EXPECTED = {"column", "column_list", "batch_id", "result_format", "catch_exceptions"}


def _describe(kwargs: dict[str, Any], notes: Any) -> str:
    """The expectation's arguments in one line, shortened (a value set can be long)."""
    parts = []
    for key, value in kwargs.items():
        if key in _NOT_EXPECTED or value is None:
            continue
        if isinstance(value, list) and len(value) > 12:
            value = [*value[:12], f"... {len(value) - 12} more"]
        parts.append(f"{key}={_short(value)}")
    if notes:
        parts.append(f"({notes if isinstance(notes, str) else '; '.join(notes)})")
    return " ".join(parts)


def _error_message(exception_info: Any) -> str | None:
    """GX reports an evaluation error either flat or keyed by metric: find its message."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else exception_info.values()
    messages = sorted(
        {str(i.get("exception_message")) for i in infos if i and i.get("raised_exception")}
    )
    return "; ".join(messages) or None


def _examples(df: pd.DataFrame, result: dict[str, Any], expectation: str, columns: list[str]):
    """Up to ``MAX_EXAMPLES`` offending rows, from GX's unexpected indices or, failing that, us."""
    positions: list[int] = []
    for index in result.get("partial_unexpected_index_list") or []:
        if isinstance(index, dict):  # some expectations report {"index": i, ...} rows
            index = index.get("index")
        if isinstance(index, int | np.integer) and int(index) not in positions:
            positions.append(int(index))
    if (
        not positions
        and expectation == "expect_column_values_to_be_in_type_list"
        and columns
        and columns[0] in df.columns
    ):
        # A column of pandas' ``str`` dtype fails as a whole (observed type ``str``): show the
        # rows whose id is not an integer, as GX does for an ``object`` column.
        not_int = ~df[columns[0]].map(lambda v: isinstance(v, int | np.integer))
        positions = np.flatnonzero(not_int.to_numpy())[:MAX_EXAMPLES].tolist()
    rows = df.iloc[positions[:MAX_EXAMPLES]].to_dict("records")
    return [{"row": p, **_jsonable(r)} for p, r in zip(positions, rows, strict=False)]


def _failures(table: str, df: pd.DataFrame, suite_result: Any, order: list[str]) -> list[Failure]:
    """Turn one suite's GX result into :class:`Failure` objects, in the suite's order."""
    position = {expectation_id: i for i, expectation_id in enumerate(order)}
    failed = []
    for r in suite_result.results:
        if r.success:
            continue
        config = r.expectation_config
        kwargs = dict(config.kwargs)
        columns = kwargs.get("column_list") or ([kwargs["column"]] if "column" in kwargs else [])
        expected = _describe(kwargs, config.notes)
        if columns == [ITEM_KNOWN]:
            # Our helper column stands for item_id: name the column the user has to fix.
            columns, expected = [ITEM], f"({config.notes})"
        result = r.result or {}
        failure = Failure(
            expectation=config.type,
            table=table,
            columns=tuple(columns),
            unexpected_count=result.get("unexpected_count"),
            observed_value=result.get("observed_value"),
            expected=expected,
            examples=_examples(df, result, config.type, columns),
            error=_error_message(r.exception_info),
        )
        failed.append((position.get(config.id, len(order)), failure))
    return [f for _, f in sorted(failed, key=lambda pf: pf[0])]


def _table_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    ratings, items = dataset.ratings, dataset.items
    counts = {"ratings": {"rows": len(ratings)}, "items": {"rows": len(items)}}
    for column, key in ((USER, "users"), (ITEM, "items")):
        if column in ratings.columns:
            counts["ratings"][key] = int(ratings[column].nunique())
    return counts


def _run_suite(
    ctx: AbstractDataContext,
    batch: BatchDefinition,
    suite: ExpectationSuite,
    frame: pd.DataFrame,
    *,
    data_docs: bool,
) -> ExpectationSuiteValidationResult:
    """Run ``suite`` on ``frame``; with ``data_docs``, also render the result into ``ctx``'s site.

    Without Data Docs the batch validates the suite and nothing more (about 0.3 s for our small
    test tables, against 0.45 s through a checkpoint). Data Docs are rendered from what a
    checkpoint stores with each result (run id and time, batch parameters), so for them a
    checkpoint runs the suite. Same suite, same result format: the same results either way.
    """
    if not data_docs:
        return batch.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format=RESULT_FORMAT
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
            result_format=RESULT_FORMAT,
        )
    )
    (result,) = checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()
    return result


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
    disable_telemetry()  # before GX is imported: it reads GX_ANALYTICS_ENABLED once
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    info = dataset.info
    # A RangeIndex makes GX's unexpected indices the rows' positions in the Parquet tables.
    frames = {
        "ratings": dataset.ratings.reset_index(drop=True),
        "items": dataset.items.reset_index(drop=True),
    }
    given_split = info.has_given_split or GIVEN_SPLIT in frames["ratings"].columns
    suites = build_suites(
        cfg, info.rating_scale, id_type=info.id_type, given_split=given_split, now=now
    )
    ratings, items = frames["ratings"], frames["items"]
    if ITEM in ratings.columns and ITEM in items.columns:
        frames["ratings"] = ratings.assign(**{ITEM_KNOWN: ratings[ITEM].isin(items[ITEM])})

    with tempfile.TemporaryDirectory(prefix="gx-") as project:
        if docs_dir is None:
            ctx = gx.get_context(mode="ephemeral")
        else:
            ctx = gx.get_context(mode="file", project_root_dir=project)
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = ctx.data_sources.add_pandas("canonical")
        failures: list[Failure] = []
        evaluated = successful = 0
        for table, suite in suites.items():
            suite = ctx.suites.add(suite)  # gives each expectation the id its result carries
            batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
            suite_result = _run_suite(
                ctx, batch, suite, frames[table], data_docs=docs_dir is not None
            )
            stats = suite_result.statistics
            evaluated += int(stats["evaluated_expectations"])
            successful += int(stats["successful_expectations"])
            # Example rows come from the caller's table, without our helper column.
            shown = frames[table].drop(columns=[ITEM_KNOWN], errors="ignore")
            failures += _failures(table, shown, suite_result, [e.id for e in suite.expectations])

        if docs_dir is not None:
            site = Path(project) / "gx" / "uncommitted" / "data_docs" / "local_site"
            # GX's pages load their libraries from CDNs and a logo beacon from a GX host: point
            # them at pinned local copies so that the docs render offline and call nobody.
            make_offline(site)
            shutil.copytree(site, docs_dir, dirs_exist_ok=True)

    return ValidationReport(
        success=not failures,
        failures=failures,
        evaluated=evaluated,
        successful=successful,
        tables=_table_counts(dataset),
    )


def run_validate(
    data_dir: str | Path, docs_dir: str | Path, summary_path: str | Path, cfg: ValidateConfig
) -> ValidationReport:
    """The stage: validate ``data_dir``; publish the reports, or keep the last good ones.

    On success the Data Docs go to ``docs_dir`` and the summary to ``summary_path`` (both written
    atomically) and a stale ``validation_failed/`` beside ``docs_dir`` is removed. On failure the
    last good reports stay untouched, this run's Data Docs and summary go to
    ``<parent of docs_dir>/validation_failed/``, and :class:`ValidationFailed` is raised with
    :meth:`ValidationReport.format_failures` as its message.
    """
    data_dir, docs_dir, summary_path = Path(data_dir), Path(docs_dir), Path(summary_path)
    failed_dir = docs_dir.parent / "validation_failed"
    for name in ("dataset.json", "ratings.parquet", "items.parquet"):
        if not (data_dir / name).exists():
            raise DataError(data_dir / name, "no such file", expected="the output of ingest")
    dataset = read_dataset(data_dir)
    with tempfile.TemporaryDirectory(prefix=".validate-") as scratch:
        report = validate_dataset(dataset, cfg, docs_dir=scratch)
        with staged_dir(docs_dir if report.success else failed_dir) as out:
            shutil.copytree(scratch, out, dirs_exist_ok=True)
            if not report.success:
                write_json(report.summary(), out / summary_path.name)
    if not report.success:
        raise ValidationFailed(
            f"{data_dir} does not pass the data checks.\n{report.format_failures()}\n"
            f"This run's Data Docs and summary: {failed_dir}/index.html and "
            f"{failed_dir / summary_path.name} (the last good {docs_dir} is kept)."
        )
    write_json(report.summary(), summary_path)
    shutil.rmtree(failed_dir, ignore_errors=True)
    return report


__all__ = [
    "Failure",
    "ValidationReport",
    "build_suites",
    "run_validate",
    "timestamp_bounds",
    "validate_dataset",
]
