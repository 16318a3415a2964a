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


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***`` (for error messages, logs and outputs)."""
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", uri)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` with any password redacted, for one-line errors."""
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else repr(exc)
    return f"{type(exc).__name__}: {redact(first)}"


def lost_tracking_server(exc: BaseException) -> str | None:
    """A one-line error for an exception that means the MLflow tracking server stopped answering.

    For the stage runner: a server killed mid-stage surfaces as a ``requests``/``urllib3``
    connection error, or an MLflow exception wrapping one, deep inside MLflow.
    """
    import os

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    roots = {type(e).__module__.split(".")[0] for e in chain}
    text = " ".join(str(e) for e in chain)
    if roots & {"requests", "urllib3"} or (
        "mlflow" in roots and ("Max retries exceeded" in text or "Connection refused" in text)
    ):
        uri = redact(os.environ.get("MLFLOW_TRACKING_URI", "(MLFLOW_TRACKING_URI)"))
        return (
            f"lost the MLflow tracking server at {uri} ({first_line(exc)}); "
            "start it again and rerun the stage"
        )
    return None
