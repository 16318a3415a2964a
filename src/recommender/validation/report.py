"""What a validation run reports: each failed expectation, the DVC summary, the text for the user.

The summary is byte-stable for DVC (no wall-clock time in it); the text names each failed
expectation, its column, how many rows broke it and a few of those rows, so that the user can fix
the data without opening HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: How many offending rows a failure shows.
MAX_EXAMPLES = 5


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
            "observed_value": jsonable(self.observed_value),
            "examples": jsonable(self.examples),
            "error": self.error,
        }

    def headline(self) -> str:
        """``- <expectation> on <table.column>: <what went wrong>``."""
        table = f"{self.table} (table)"
        where = f"{self.table}.{','.join(self.columns)}" if self.columns else table
        if self.error:
            what = f"could not be evaluated: {self.error}"
        elif self.expectation == "expect_column_to_exist":
            what = "no such column"
        elif self.unexpected_count is not None:
            what = f"{self.unexpected_count} row(s) unexpected"
            if self.observed_value is not None:
                what += f" (observed {self.observed_value!r})"
        else:
            what = f"observed {short(self.observed_value)}"
        return f"- {self.expectation} on {where}: {what}"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`~recommender.validation.run.validate_dataset`.

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
            lines.append(f.headline())
            if f.expected:
                lines.append(f"    expected: {f.expected}")
            for row in f.examples[:max_examples]:
                cells = ", ".join(f"{k}={v!r}" for k, v in row.items() if k != "row")
                lines.append(f"    row {row['row']}: {cells}")
        return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """Turn numpy scalars, NaN and pandas' missing markers into plain JSON values, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def short(value: Any, limit: int = 160) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
