"""What a stage writes, with the tracking server's credentials taken out.

MLflow prints its run links with the tracking URI, password and all, and libraries put URIs in
their messages: :func:`redacted_output` (which :func:`recommender.core.stage.run_stage` wraps
every stage in) passes what the process writes to ``sys.stdout``/``sys.stderr`` through
:func:`recommender.core.errors.redact` and a literal replacement of the configured secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

from recommender.core.errors import redact, secrets_of

#: The environment variables whose values are credentials of the tracking server.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
#: The environment variables holding URIs whose userinfo may carry a password.
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
#: Shorter secrets are not replaced wherever they appear (every ``ab`` in the log would go),
#: only inside URIs (:func:`redact`).
MIN_SECRET_LENGTH = 4


def environment_secrets(env: dict[str, str] | None = None) -> list[str]:
    """The credentials the environment holds for the tracking server, longest first.

    The password (or token) in ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI``, as written
    and percent-decoded, and the values of ``MLFLOW_TRACKING_PASSWORD`` and
    ``MLFLOW_TRACKING_TOKEN``.
    """
    env = dict(os.environ) if env is None else env
    found = [s for key in URI_VARIABLES for s in secrets_of(env.get(key) or "")]
    found += [env[key] for key in SECRET_VARIABLES if env.get(key)]
    return sorted(set(found), key=lambda s: (-len(s), s))


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each URI's password (:func:`redact`) and every one of ``secrets`` (of
    :data:`MIN_SECRET_LENGTH` characters or more) as ``***``."""
    if "://" in text:
        text = redact(text)
    for secret in secrets:  # longest first: a secret holding another goes whole
        if len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingStream:
    """A text stream that redacts (:func:`redact_secrets`) what is written, then passes it on.

    Everything else (``flush``, ``isatty``, ``fileno``, ``encoding``, ...) is the wrapped stream's
    own, so Keras still sees a terminal and a subprocess still gets the real file descriptor.
    Each ``write`` is redacted on its own: a secret split over two calls is not caught (print,
    logging, warnings, MLflow and Keras write each message in one call). ``buffer`` is wrapped too.
    """

    def __init__(self, stream: Any, secrets: Sequence[str]) -> None:
        self._stream = stream
        self._secrets = tuple(secrets)

    @property
    def wrapped(self) -> Any:
        """The stream written to."""
        return self._stream

    def write(self, text: str) -> int:
        self._stream.write(redact_secrets(text, self._secrets))
        return len(text)  # what the caller gave: some check it

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    @property
    def buffer(self) -> Any:
        return _RedactingBytes(self._stream.buffer, self._secrets)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _RedactingBytes:
    """The binary side of :class:`RedactingStream` (``sys.stdout.buffer``), UTF-8 assumed."""

    def __init__(self, stream: Any, secrets: Sequence[str]) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, data: bytes) -> int:
        text = bytes(data).decode("utf-8", "surrogateescape")
        self._stream.write(redact_secrets(text, self._secrets).encode("utf-8", "surrogateescape"))
        return len(data)

    def writelines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output(secrets: Sequence[str] | None = None) -> Iterator[list[str]]:
    """Inside the block, what this process writes to ``sys.stdout``/``sys.stderr`` is redacted.

    A password in any ``scheme://user:password@host`` URI becomes ``***`` (MLflow prints its run
    links with the tracking URI, password and all), and so does each of ``secrets`` (default:
    :func:`environment_secrets`) wherever it appears. Covered: ``print``, ``sys.stdout.write``
    (MLflow, Keras' progress bar, tqdm), ``warnings``, and logging handlers that hold either
    stream (their streams are swapped for the block). An exception that leaves the block has its
    traceback redacted too, when the interpreter prints it. Not covered: output written to the
    file descriptors themselves (``os.write(1, ...)``, C/C++ code such as TensorFlow's own
    logging, and child processes, which inherit descriptors, not Python objects), and what is
    written after the block (``atexit`` handlers).
    """
    secrets = list(environment_secrets() if secrets is None else secrets)
    saved = sys.stdout, sys.stderr
    wrappers: dict[int, RedactingStream] = {}

    def wrap(stream: Any) -> Any:
        if stream is None:
            return stream
        return wrappers.setdefault(id(stream), RedactingStream(stream, secrets))

    sys.stdout, sys.stderr = wrap(sys.stdout), wrap(sys.stderr)
    originals = {id(s) for s in (*saved, sys.__stdout__, sys.__stderr__) if s is not None}
    swapped: list[tuple[logging.StreamHandler, Any]] = []
    for handler in _stream_handlers():
        if id(handler.stream) in originals:
            swapped.append((handler, handler.stream))
            handler.stream = wrap(handler.stream)
    try:
        yield secrets
    except Exception:
        _redact_next_traceback(secrets)
        raise
    finally:
        for handler, stream in swapped:
            if isinstance(handler.stream, RedactingStream):
                handler.stream = stream
        if isinstance(sys.stdout, RedactingStream) and sys.stdout.wrapped is saved[0]:
            sys.stdout = saved[0]
        if isinstance(sys.stderr, RedactingStream) and sys.stderr.wrapped is saved[1]:
            sys.stderr = saved[1]


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def _redact_next_traceback(secrets: Sequence[str]) -> None:
    """Have the interpreter's report of an uncaught exception (``sys.excepthook``) redacted.

    It prints after :func:`run_stage` has given the streams back; the hook undoes itself at once.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        sys.excepthook = previous
        stderr = sys.stderr
        sys.stderr = RedactingStream(stderr, secrets)
        try:
            previous(kind, exc, tb)
        finally:
            sys.stderr = stderr

    sys.excepthook = hook
