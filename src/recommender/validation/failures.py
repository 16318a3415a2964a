"""Reading a GX suite result: each failed expectation as a :class:`Failure`, with example rows.

The example rows come from the table GX validated, through :class:`Rows`: :class:`FrameRows`
for a pandas DataFrame, :class:`~recommender.validation.spark_frames.SparkRows` for a Spark one.
Either way a row is named by its 0-based position in the table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import pandas as pd

from recommender.core.schema import ITEM
from recommender.validation.report import MAX_EXAMPLES, Failure, jsonable, short
from recommender.validation.suites import ITEM_KNOWN

#: How many unexpected rows GX keeps per expectation (we show at most ``MAX_EXAMPLES`` of them).
PARTIAL_UNEXPECTED = 20
#: What GX reports per expectation: counts, observed values and the first unexpected rows.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED}
#: Arguments that say where an expectation looks, not what it expects.
_NOT_EXPECTED = {"column", "column_list", "batch_id", "result_format", "catch_exceptions"}
_TYPE_LIST = "expect_column_values_to_be_in_type_list"
_UNIQUE = {"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"}


class Rows(Protocol):
    """A validated table's rows as a failure shows them, found by their 0-based position."""

    #: The key naming a row's position where GX reports unexpected rows as dicts.
    index_key: str

    def at(self, positions: list[int]) -> list[dict[str, Any]]:
        """The rows at ``positions``, in that order, without our helper columns."""
        ...

    def not_integer(self, column: str, limit: int) -> list[int]:
        """The positions of the first ``limit`` rows whose ``column`` holds no integer."""
        ...

    def first_duplicates(self, columns: list[str], limit: int) -> list[int] | None:
        """The positions of the first ``limit`` rows whose ``columns`` repeat another row's, or
        ``None`` when GX's own list of them is in row order."""
        ...


class FrameRows:
    """:class:`Rows` of a pandas DataFrame whose index is the rows' positions (a RangeIndex)."""

    index_key = "index"  # some expectations report {"index": i, ...} rows

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df

    def at(self, positions: list[int]) -> list[dict[str, Any]]:
        return self.df.iloc[positions].to_dict("records")

    def not_integer(self, column: str, limit: int) -> list[int]:
        if column not in self.df.columns:
            return []
        not_int = ~self.df[column].map(lambda v: isinstance(v, int | np.integer))
        return np.flatnonzero(not_int.to_numpy())[:limit].tolist()

    def first_duplicates(self, columns: list[str], limit: int) -> None:
        return None  # GX's pandas engine lists the offending rows by their index


def failures(table: str, rows: Rows, suite_result: Any, order: list[str]) -> list[Failure]:
    """Turn one suite's GX result into :class:`Failure` objects, in the suite's order.

    ``rows`` is the table GX validated; the example rows of every failure are looked up at once.
    """
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
            error=_error_message(r.exception_info),
        )
        shown = _positions(rows, result, config.type, columns)
        failed.append((position.get(config.id, len(order)), failure, shown))
    return _with_examples(rows, sorted(failed, key=lambda pfs: pfs[0]))


def _with_examples(rows: Rows, failed: list[tuple[int, Failure, list[int]]]) -> list[Failure]:
    """Each failure with its example rows, read from ``rows`` in one look-up."""
    wanted = sorted({p for _, _, positions in failed for p in positions})
    found = dict(zip(wanted, rows.at(wanted), strict=True))
    return [
        dataclasses.replace(f, examples=[{"row": p, **jsonable(found[p])} for p in positions])
        for _, f, positions in failed
    ]


def _describe(kwargs: dict[str, Any], notes: Any) -> str:
    """The expectation's arguments in one line, shortened (a value set can be long)."""
    parts = []
    for key, value in kwargs.items():
        if key in _NOT_EXPECTED or value is None:
            continue
        if isinstance(value, list) and len(value) > 12:
            value = [*value[:12], f"... {len(value) - 12} more"]
        parts.append(f"{key}={short(value)}")
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


def _positions(
    rows: Rows, result: dict[str, Any], expectation: str, columns: list[str]
) -> list[int]:
    """Up to ``MAX_EXAMPLES`` offending rows' positions, lowest first: from GX's unexpected
    indices or, for a column of the wrong type as a whole, from ``rows``."""
    positions: set[int] = set()
    for index in result.get("partial_unexpected_index_list") or []:
        if isinstance(index, dict):
            index = index.get(rows.index_key)
        if isinstance(index, int | np.integer):
            positions.add(int(index))
    if not positions and expectation == _TYPE_LIST and columns:
        # A column of pandas' ``str`` dtype (or any Spark column: it has one type) fails as a
        # whole (observed type ``str``): show the rows whose id is not an integer, as GX does for
        # an ``object`` column.
        positions = set(rows.not_integer(columns[0], MAX_EXAMPLES))
    if expectation in _UNIQUE and len(positions) < (result.get("unexpected_count") or 0):
        # GX keeps the first offending rows it meets: on Spark, after grouping the rows by key,
        # those are not the first by position.
        positions = set(rows.first_duplicates(columns, MAX_EXAMPLES) or positions)
    return sorted(positions)[:MAX_EXAMPLES]
