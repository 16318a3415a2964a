"""Reading a GX suite result: each failed expectation as a :class:`Failure`, with example rows."""

from __future__ import annotations

from typing import Any

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


def failures(table: str, df: pd.DataFrame, suite_result: Any, order: list[str]) -> list[Failure]:
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
    return [{"row": p, **jsonable(r)} for p, r in zip(positions, rows, strict=False)]
