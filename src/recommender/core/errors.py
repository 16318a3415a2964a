"""Errors the pipeline reports to users.

Every stage turns a :class:`RecommenderError` into a one-paragraph message on stderr and a non-zero
exit, without a traceback: the message itself must say which file, row or field is wrong and what
was expected.
"""

from __future__ import annotations

import re
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


#: What ends a URI in running text: whitespace, quotes and angle brackets.
_URI_END = re.compile(r"[\s\"'`<>]")
#: A URI's host, with an optional port: a name, an IPv4 address or a bracketed IPv6 address.
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]*\]|[\w.~%-]*)(?::\d*)?")
_PATH_START = re.compile(r"[/?#]")


def redact(text: str) -> str:
    """``text`` with the secret in each URI's userinfo replaced by ``***``.

    For error messages, logs and outputs. Every ``scheme://`` in ``text`` starts a URI (several
    may share a line); its userinfo is everything between ``://`` and the last ``@`` before the
    host's path:

    - ``user:password@`` becomes ``user:***@`` (the user name stays; it names who was refused),
    - ``:token@`` becomes ``:***@``,
    - ``token@``, a userinfo without a colon, becomes ``***@``: alone it is taken for a token
      (``https://<token>@github.com``), so ``ssh://git@host`` shows as ``ssh://***@host`` too.

    A password may hold ``@`` and ``:`` (``alice:p@ss:w@h`` -> ``alice:***@h``) and be
    percent-encoded. An unencoded ``/``, ``?`` or ``#`` in a password makes the URI invalid; it is
    still caught when a colon comes first (``alice:pa/ss@host`` -> ``alice:***@host``, the ``@``
    that is followed by a host), but not in a token without a colon, nor when what precedes the
    ``/`` reads as ``host:port`` (``alice:12/34@host``): there the userinfo cannot be told from a
    host and its path, and a path may hold an ``@`` (``https://medium.com/@user``).
    Text with no ``://`` is left alone (``user@example.com``), as is an empty password
    (``user:@host``) and one already redacted.
    """
    out: list[str] = []
    done = 0
    for match in re.finditer("://", text):
        start = match.end()
        if start < done:
            continue
        end = _userinfo_end(text, start)
        if end is None:
            continue
        out += [text[done:start], _mask(text[start:end])]
        done = end
    return "".join(out) + text[done:] if out else text


def _userinfo_end(text: str, start: int) -> int | None:
    """Where the userinfo of the URI whose authority begins at ``start`` ends (its ``@``)."""
    stop = _URI_END.search(text, start)
    candidate = text[start : stop.start() if stop else len(text)]
    candidate = candidate.split("://", 1)[0]  # the next URI's scheme ends this one
    path = _PATH_START.search(candidate)
    authority = candidate[: path.start()] if path else candidate
    if "@" in authority:
        return start + authority.rindex("@")
    if path is None or ":" not in authority or _HOST_PORT.fullmatch(authority):
        return None
    # ``user:pa/ss@host``: the ``/`` (``?``, ``#``) sits in the password. The userinfo ends at
    # the first ``@`` that a host follows.
    for at in (i for i, ch in enumerate(candidate) if ch == "@" and i > path.start()):
        host = _PATH_START.split(candidate[at + 1 :], 1)[0]
        if host and _HOST_PORT.fullmatch(host):
            return start + at
    return None


def _mask(userinfo: str) -> str:
    user, colon, secret = userinfo.partition(":")
    if not colon:  # a lone token
        return "***" if userinfo else userinfo
    return f"{user}:***" if secret else userinfo


def secrets_of(uri: str) -> list[str]:
    """The secret part of ``uri``'s userinfo as written and percent-decoded (none: ``[]``)."""
    from urllib.parse import unquote

    start = uri.find("://")
    end = _userinfo_end(uri, start + 3) if start >= 0 else None
    if end is None:
        return []
    userinfo = uri[start + 3 : end]
    user, colon, secret = userinfo.partition(":")
    secret = secret if colon else user
    return [s for s in dict.fromkeys([secret, unquote(secret)]) if s and s != "***"]


def message_of(exc: BaseException) -> str:
    """``str(exc)``, or ``""`` where that itself fails (py4j's errors ask the JVM for their
    text: a JVM that died cannot answer)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any failure to describe it is the same to us
        return ""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` with any password redacted, for one-line errors."""
    text = message_of(exc).strip()
    first = text.splitlines()[0][:300] if text else repr(exc)
    return f"{type(exc).__name__}: {redact(first)}"


def exception_chain(exc: BaseException, limit: int = 10) -> list[BaseException]:
    """``exc`` and what it was raised from or during (``__cause__``, else ``__context__``)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < limit and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def lost_tracking_server(exc: BaseException) -> str | None:
    """A one-line error for an exception that means the MLflow tracking server stopped answering.

    For the stage runner: a server killed mid-stage surfaces as a ``requests``/``urllib3``
    connection error, or an MLflow exception wrapping one, deep inside MLflow.
    """
    import os

    chain = exception_chain(exc)
    roots = {type(e).__module__.split(".")[0] for e in chain}
    text = " ".join(message_of(e) for e in chain)
    if roots & {"requests", "urllib3"} or (
        "mlflow" in roots and ("Max retries exceeded" in text or "Connection refused" in text)
    ):
        uri = redact(os.environ.get("MLFLOW_TRACKING_URI", "(MLFLOW_TRACKING_URI)"))
        return (
            f"lost the MLflow tracking server at {uri} ({first_line(exc)}); "
            "start it again and rerun the stage"
        )
    return None
