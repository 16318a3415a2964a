"""What every ``pipeline/*.py`` entry point shares: argument parsing, params, and error exits."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from recommender.core.config import Params, load_params
from recommender.core.disk import full_disk
from recommender.core.errors import RecommenderError, lost_tracking_server, redact, secrets_of
from recommender.core.io import pid_alive
from recommender.core.telemetry import disable_telemetry

log = logging.getLogger("recommender")


def run_stage(
    name: str,
    body: Callable[[Params, argparse.Namespace], None],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``--params`` (and the stage's own arguments), load params, run ``body``.

    A :class:`RecommenderError` becomes ``error: <message>`` on stderr and exit code 1, with no
    traceback: the message is meant for the user and already names what to fix. Whatever the stage
    writes to ``sys.stdout`` and ``sys.stderr`` goes through :func:`redacted_output`.
    """
    parser = argparse.ArgumentParser(prog=f"pipeline/{name}.py", description=f"DVC stage '{name}'.")
    parser.add_argument("--params", default="params.yaml", help="params file (%(default)s)")
    if configure:
        configure(parser)
    args = parser.parse_args(argv)
    disable_telemetry()
    with redacted_output():
        # Our own progress at INFO; the libraries (GX, MLflow, BentoML) only when they warn.
        logging.basicConfig(
            level=logging.WARNING, format=f"[{name}] %(message)s", stream=sys.stderr
        )
        log.setLevel(logging.INFO)
        try:
            with private_tempdir(name):
                body(load_params(args.params), args)
        except RecommenderError as exc:
            print(f"error: stage '{name}' failed: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            # A tracking server that died mid-stage, or a full disk: one line, not a library's
            # traceback (MLflow folds one [Errno 28] per file into its message; shutil lists
            # them all).
            message = lost_tracking_server(exc) or full_disk(exc)
            if message is None:
                raise
            print(f"error: stage '{name}' failed: {message}", file=sys.stderr)
            return 1
    return 0


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


#: ``<temp>/recommender-<stage>-<pid>-*``: one private temporary folder per stage process.
SCRATCH_PREFIX = "recommender-"


@contextlib.contextmanager
def private_tempdir(stage: str) -> Iterator[Path]:
    """Route every temporary file of the stage (ours, MLflow's, BentoML's) into one folder.

    The folder goes when the stage ends, however it ends, short of SIGKILL; the folders that
    killed stages left behind (their pid no longer runs) go when the next stage starts.
    """
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{SCRATCH_PREFIX}*-*-*"):
        pid = old.name[len(SCRATCH_PREFIX) :].split("-")[1]
        if old.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{stage}-{os.getpid()}-", dir=base))
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(tmp, ignore_errors=True)
