"""Errors the pipeline reports to users.

Every stage turns a :class:`RecommenderError` into a one-paragraph message on stderr and a non-zero
exit, without a traceback: the message itself must say which file, row or field is wrong and what
was expected.
"""

from __future__ import annotations

from pathlib import Path


class RecommenderError(Exception):
    """Base class for errors that are the user's to fix (bad config, bad data, missing files)."""


class ConfigError(RecommenderError):
    """``params.yaml`` has an unknown key, a misspelled key or a value of the wrong type."""


class DataError(RecommenderError):
    """An input file cannot be read as the dataset it claims to be.

    Args:
        path: The file at fault.
        problem: What is wrong, in words.
        row: 1-based line number in the file, where one line is at fault.
        column: The column at fault, where one is.
        expected: What the file should hold instead.
    """

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        row: int | None = None,
        column: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.row = row
        self.column = column
        self.expected = expected
        where = self.path
        if row is not None:
            where += f", line {row}"
        if column is not None:
            where += f", column {column!r}"
        message = f"{where}: {problem}"
        if expected:
            message += f" (expected {expected})"
        super().__init__(message)


class ValidationFailed(RecommenderError):
    """The Great Expectations suite failed; the message lists each failed expectation."""
