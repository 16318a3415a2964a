"""Every use of BentoML's private API (``bentoml._internal``) in the project, in one place.

BentoML 1.4 has no public way to read three things the package stage and the service need, so
this module reaches into its internals, and nothing else in the project does (one more, below):

- :func:`bentoml_home`: the store this process resolved (``BentoMLContainer.bentoml_home``), so
  the package stage can refuse to switch stores once BentoML has fixed one.
- :func:`worker_index`: whether the code runs inside a ``bentoml serve`` worker
  (``server_context.worker_index``), so a champion that cannot load ends the worker at once.
- :func:`request_error_logger`: the logger BentoML reports each exception a request raised with
  (``bentoml._internal.server.http_app.logger``, used by ``log_exception``), so the service can
  drop the tracebacks of client errors.

And one private method the project overrides: ``bentoml.monitoring.DefaultMonitor._init_logger``
(where BentoML's log-file monitor configures its loggers), which
:class:`recommender.serving.inference_log.InferenceMonitor` replaces so that each monitor writes
to its own files (and :class:`recommender.serving.inference_otlp.InferenceOTLPMonitor`, to send
them to an OpenTelemetry collector instead).

:func:`check` touches each of them and raises :class:`MovedAPI` naming the one an upgrade moved;
``tests/serving/test_bentoml_internals.py`` runs it, so a BentoML upgrade that moves any of them
fails that test with the API's name instead of breaking the service at run time.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

#: The private names this module reads, as ``module:attribute.path`` (what :func:`check` checks).
PRIVATE_APIS = (
    "bentoml._internal.configuration.containers:BentoMLContainer.bentoml_home",
    "bentoml._internal.context:server_context.worker_index",
    "bentoml._internal.server.http_app:logger",
    "bentoml._internal.server.http_app:log_exception",
    "bentoml.monitoring:DefaultMonitor._init_logger",
)
#: The name of the logger :func:`request_error_logger` returns (BentoML 1.4.40's module name).
REQUEST_ERROR_LOGGER = "bentoml._internal.server.http_app"


class MovedAPI(ImportError):
    """A private BentoML name this project relies on is gone (an upgrade moved or renamed it)."""


def _resolve(api: str) -> Any:
    module_name, _, path = api.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MovedAPI(_moved(api, f"module {module_name} cannot be imported: {exc}")) from exc
    for part in path.split("."):
        if not hasattr(value, part):
            raise MovedAPI(_moved(api, f"{type(value).__name__} has no attribute {part!r}"))
        value = getattr(value, part)
    return value


def _moved(api: str, why: str) -> str:
    import bentoml

    return (
        f"BentoML {bentoml.__version__} moved the private API {api} ({why}); update "
        "recommender/serving/bentoml_internals.py, the one module that uses bentoml._internal"
    )


def bentoml_home() -> Path:
    """The BentoML store this process uses (resolved once per process, by BentoML)."""
    return Path(_resolve(PRIVATE_APIS[0]).get())


def worker_index() -> int | None:
    """The index of this ``bentoml serve`` worker, None outside a worker (a test, a script)."""
    index = _resolve(PRIVATE_APIS[1])
    return None if index is None else int(index)


def request_error_logger() -> logging.Logger:
    """The logger BentoML's ``log_exception`` reports a request's exception with."""
    _resolve(PRIVATE_APIS[3])
    logger = _resolve(PRIVATE_APIS[2])
    if not isinstance(logger, logging.Logger) or logger.name != REQUEST_ERROR_LOGGER:
        raise MovedAPI(_moved(PRIVATE_APIS[2], f"it is {logger!r}, not {REQUEST_ERROR_LOGGER}"))
    return logger


def check() -> None:
    """Resolve every private API this project uses; :class:`MovedAPI` names the first missing."""
    for api in PRIVATE_APIS:
        _resolve(api)
    server_context = _resolve("bentoml._internal.context:server_context")
    if not isinstance(server_context.worker_index, int | type(None)):
        raise MovedAPI(_moved(PRIVATE_APIS[1], "it is no longer an int or None"))
    request_error_logger()
    bentoml_home()
