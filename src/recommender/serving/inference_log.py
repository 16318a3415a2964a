"""The inference log: one JSON line per ``recommend``, ``similar_items``, ``predict`` and
``feedback`` call, through ``bentoml.monitor`` and BentoML's log-file exporter.

The contract the readers (``make monitor``, the feedback stage, the replay harness) code against:
one monitor per endpoint, named as the endpoint; each worker writes its records as JSON lines to
``<serve.log_dir>/<endpoint>/data/data.<worker>.log`` (rotated daily to ``...log.<YYYY-MM-DD>``)
and the columns once to ``<serve.log_dir>/<endpoint>/schema/schema.<worker>.log``. A relative
``log_dir`` is relative to where ``bentoml serve`` runs (:func:`serve_path`). Every record of a
monitor has exactly its columns (:data:`COLUMNS`), plus BentoML's ``timestamp``, ``request_id``
and ``trace_id``.

How it is wired:

- The service's ``monitoring`` config (:func:`monitoring_config`) names :class:`InferenceMonitor`
  (BentoML's ``DefaultMonitor``, with a logger pair of its own per monitor) and ships
  ``inference_log.yaml``, BentoML's default logging config with :class:`InferenceLogHandler`.
- Logging never fails a request: a record that cannot be written (a full disk, an unwritable
  file or folder) adds one to ``recommender_inference_log_errors_total`` on ``/metrics`` and is
  dropped; the first such error of a process is one WARNING line, never a traceback per request.
- Records are written only inside a ``bentoml serve`` worker: the service class used in-process
  (tests, scripts) writes no log files into whatever folder it runs in.
- ``serve.inference_log_exporter: otlp`` sends the same records (and each monitor's schema) to an
  OpenTelemetry collector instead of files (:mod:`recommender.serving.inference_otlp`); nothing
  is sent anywhere unless that is set.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
import os
import sys
import threading
import time
from collections.abc import Sequence
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any

import bentoml
import yaml
from bentoml.monitoring import DefaultMonitor

from recommender.serving.bentoml_internals import worker_index
from recommender.serving.inference_errors import WriteErrors
from recommender.serving.inference_errors import install as install  # the service's call

#: The logging config the service gives BentoML (``monitoring.options.log_config_file``).
LOG_CONFIG = Path(__file__).resolve().with_name("inference_log.yaml")

# BentoML writes a monitor's column roles and types to its schema file, and warns on every record
# about a role or type outside its own sets: these are all from them.
_ID = ("feature", "categorical")
_NUMBER = ("feature", "numerical")
_COMMON = (
    ("x_request_id", *_ID),
    ("time", *_NUMBER),
    ("latency_ms", *_NUMBER),
    ("model_name", *_ID),
    ("model_version", *_ID),
)
_RANKED = (
    ("items", "prediction", "categorical"),
    ("scores", "prediction", "numerical_sequence"),
)
#: Each monitor's columns, in record order: ``(name, BentoML role, BentoML type)``.
COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "recommend": (
        *_COMMON,
        ("user_id", *_ID),
        ("k", *_NUMBER),
        ("exclude_rated", *_ID),
        ("genres", *_ID),
        *_RANKED,
        ("cold_start", "prediction", "categorical"),
    ),
    "similar_items": (
        *_COMMON,
        ("item_id", *_ID),
        ("k", *_NUMBER),
        *_RANKED,
        ("unknown_item", "prediction", "categorical"),
    ),
    "predict": (
        *_COMMON,
        ("user_ids", *_ID),
        ("item_ids", *_ID),
        ("scores", "prediction", "numerical_sequence"),
        ("unknown_users", "prediction", "numerical"),
        ("unknown_items", "prediction", "numerical"),
    ),
    "feedback": (
        *_COMMON,
        ("user_id", *_ID),
        ("item_id", *_ID),
        ("rating", "target", "numerical"),
        ("event", "target", "categorical"),
        ("event_time", *_NUMBER),
        ("served_request_id", *_ID),
    ),
}
#: The monitors, named as their endpoints.
MONITORS = tuple(COLUMNS)


def monitoring_config(
    enabled: bool, log_dir: str, exporter: str = "file", otlp_endpoint: str | None = None
) -> dict[str, Any]:
    """The ``monitoring`` section of ``@bentoml.service``: the log under ``log_dir``
    (:func:`serve_path`), or with ``exporter="otlp"`` the same records sent to the OpenTelemetry
    collector at ``otlp_endpoint`` (``serve.inference_log_exporter``, ``serve.otlp_endpoint``)."""
    if exporter not in ("file", "otlp"):
        raise ValueError(f"inference log exporter must be 'file' or 'otlp', got {exporter!r}")
    # With the log off, the Bento carries no exporter (packaging.build_bento): none to import.
    if exporter == "otlp" and enabled:
        if not otlp_endpoint:
            raise ValueError("the otlp exporter needs the collector's endpoint (otlp_endpoint)")
        # Imported here, as the service starts: a Bento built without the exporter fails then,
        # not record by record; one that logs to files never imports OpenTelemetry's exporter.
        from recommender.serving.inference_otlp import InferenceOTLPMonitor

        return {
            "enabled": bool(enabled),
            "type": f"{InferenceOTLPMonitor.__module__}.{InferenceOTLPMonitor.__name__}",
            "options": {"endpoint": otlp_endpoint},
        }
    return {
        "enabled": bool(enabled),
        "type": f"{__name__}.{InferenceMonitor.__name__}",
        "options": {"log_path": str(serve_path(log_dir)), "log_config_file": str(LOG_CONFIG)},
    }


def serve_path(path: str | Path) -> Path:
    """``path``, a relative one taken as relative to the folder ``bentoml serve`` runs in.

    A worker's own working directory is not that folder: BentoML changes into the Bento's source
    folder in its store to import the service, and stays there (1.4.40's worker loads the
    service "standalone"). The folder ``bentoml serve`` was started in is the working directory
    of the worker's parent, the ``bentoml serve`` process (read from ``/proc`` on Linux; where
    that is not readable, the worker's own is used). Outside a worker: this process's.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    base = Path.cwd()
    if worker_index() is not None:
        with contextlib.suppress(OSError):
            base = Path(os.readlink(f"/proc/{os.getppid()}/cwd"))
    return base / path


class InferenceLogHandler(TimedRotatingFileHandler):
    """BentoML's daily-rotated log file, whose write errors are counted, not printed.

    ``logging`` reports an error while writing a record (``OSError`` of a full disk, a file that
    cannot be opened) through ``handleError``, which by default prints a traceback to stderr,
    per record. Here it is
    :class:`~recommender.serving.inference_errors.WriteErrors`: a counter and one warning line
    per process.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        # Called by emit, under the handler's lock, while the error is being handled.
        WriteErrors.add(self.baseFilename, sys.exc_info()[1])
        # Drop the file and whatever its buffer still holds: a write that failed leaves the
        # record in the buffer, and a full disk would make it grow with every record. The next
        # record opens the file again (FileHandler.emit), so the log resumes once it can.
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


class InferenceMonitor(DefaultMonitor):
    """BentoML's log-file monitor (``DefaultMonitor``), with its own loggers per monitor.

    ``DefaultMonitor`` configures the loggers ``bentoml_monitor_data`` and
    ``bentoml_monitor_schema`` for whichever monitor writes first, then again for the next one:
    from then on every monitor's records go to the last one's files (BentoML 1.4.40). This one
    suffixes both names with the monitor's name, and is otherwise BentoML's: same config file
    placeholders, files and JSON lines.
    """

    #: ``logging.config.dictConfig`` replaces process-wide state: one configuration at a time.
    _configuring = threading.Lock()

    def _init_logger(self) -> None:
        worker = worker_index() or 0
        folder = Path(self.log_path, self.name)
        schema = folder / "schema" / f"schema.{worker}.log"
        data = folder / "data" / f"data.{worker}.log"
        schema.parent.mkdir(parents=True, exist_ok=True)
        data.parent.mkdir(parents=True, exist_ok=True)
        text = Path(self.log_config_file or LOG_CONFIG).read_text(encoding="utf8")
        config = yaml.safe_load(
            text.format(
                schema_filename=str(schema.absolute()),
                data_filename=str(data.absolute()),
                worker_id=worker,
                monitor_name=self.name,
            )
        )
        names = {k: f"{k}.{self.name}" for k in ("bentoml_monitor_data", "bentoml_monitor_schema")}
        config["handlers"] = {names.get(k, k): v for k, v in config["handlers"].items()}
        config["loggers"] = {
            names.get(k, k): {**v, "handlers": [names.get(h, h) for h in v.get("handlers", ())]}
            for k, v in config["loggers"].items()
        }
        with self._configuring:
            logging.config.dictConfig(config)
        self.data_logger = logging.getLogger(names["bentoml_monitor_data"])
        self.schema_logger = logging.getLogger(names["bentoml_monitor_schema"])

    def export_schema(self, columns_schema: dict[str, dict[str, str]]) -> None:
        try:
            super().export_schema(columns_schema)
        except BaseException:
            # BentoML marks the schema written before writing it: a folder that could not be made
            # would leave the monitor without a schema file for good. Try again next record.
            self.columns_schema = None
            raise


# --- the records ---------------------------------------------------------------------------------


class Clock:
    """When a request reached the API function (unix seconds) and how long it has taken."""

    __slots__ = ("started", "time")

    def __init__(self) -> None:
        self.time = time.time()
        self.started = time.perf_counter()

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


class InferenceLog:
    """Builds each endpoint's record (:data:`COLUMNS`) and writes it through ``bentoml.monitor``.

    Args:
        enabled: ``serve.inference_log``; off, nothing is built nor written.
        model_name: The served registered model.
        model_version: Its version.
    """

    def __init__(self, enabled: bool, model_name: str, model_version: str) -> None:
        # Only a served worker writes (see the module's docstring).
        self.enabled = bool(enabled) and worker_index() is not None
        self.model = {"model_name": str(model_name), "model_version": str(model_version)}
        # The monitors BentoML made (``bentoml.monitor(name)`` creates each from the service's
        # config at its first record, configures its loggers and writes its schema: one thread
        # at a time, so that two first requests do not race through that).
        self._monitors: dict[str, Any] = {}
        self._first = threading.Lock()

    def recommend(
        self, clock: Clock, request_id: str, request: dict[str, Any], response: Any
    ) -> None:
        """``request``: ``user_id``, ``k``, ``exclude_rated``, ``genres``; ``response``: the
        answer (a ``RecommendResponse``)."""
        if self.enabled:
            row = {**request, **_ranked(response.items), "cold_start": bool(response.cold_start)}
            self.write("recommend", clock, request_id, row)

    def similar_items(
        self, clock: Clock, request_id: str, item_id: Any, k: int, response: Any | None
    ) -> None:
        """``response``: the answer (a ``SimilarResponse``), None for an unknown item (a 404)."""
        if self.enabled:
            ranked = _ranked(response.items if response is not None else [])
            row = {"item_id": item_id, "k": k, **ranked, "unknown_item": response is None}
            self.write("similar_items", clock, request_id, row)

    def predict(self, clock: Clock, request_id: str, response: Any) -> None:
        """``response``: the answer (a ``PredictResponse``), one prediction per pair."""
        if self.enabled:
            got = response.predictions
            row = {
                "user_ids": [p.user_id for p in got],
                "item_ids": [p.item_id for p in got],
                "scores": [p.rating for p in got],
                "unknown_users": sum(bool(p.unknown_user) for p in got),
                "unknown_items": sum(bool(p.unknown_item) for p in got),
            }
            self.write("predict", clock, request_id, row)

    def feedback(
        self,
        clock: Clock,
        request_id: str,
        feedback: dict[str, Any],
    ) -> None:
        """``feedback``: the request's fields (``timestamp`` becomes ``event_time``, ``time`` when
        the client sent none; its ``request_id`` becomes ``served_request_id``)."""
        if self.enabled:
            timestamp = feedback.get("timestamp")
            row = {
                "user_id": feedback["user_id"],
                "item_id": feedback["item_id"],
                "rating": None if feedback.get("rating") is None else float(feedback["rating"]),
                "event": feedback.get("event"),
                "event_time": float(clock.time if timestamp is None else timestamp),
                "served_request_id": feedback.get("request_id"),
            }
            self.write("feedback", clock, request_id, row)

    def write(self, name: str, clock: Clock, request_id: str, row: dict[str, Any]) -> None:
        """Write one record of monitor ``name``; an error is counted, never raised."""
        common = {"x_request_id": request_id, "time": clock.time, "latency_ms": clock.latency_ms()}
        record = {**common, **self.model, **row}
        try:
            # In a context of its own: BentoML keeps a record's state in context variables and
            # leaves it set when writing fails, which would break this thread's next record.
            monitor = self._monitors.get(name)
            if monitor is not None:
                contextvars.copy_context().run(_record, monitor, name, record)
            else:
                with self._first:
                    monitor = contextvars.copy_context().run(_first_record, name, record)
                    self._monitors[name] = monitor
        except Exception as exc:  # noqa: BLE001 (a record never fails its request)
            WriteErrors.add(f"the {name} monitor's records", exc)
        if WriteErrors.pending is not None:  # a first error, noted by this record's write
            WriteErrors.warn()


def _ranked(items: Sequence[Any]) -> dict[str, list[Any]]:
    """A ranked list's ``items`` (raw ids) and ``scores``, best first."""
    return {"items": [i.item_id for i in items], "scores": [i.score for i in items]}


def _first_record(name: str, record: dict[str, Any]) -> Any:
    """Write a monitor's first record through ``bentoml.monitor``; return the monitor."""
    with bentoml.monitor(name) as monitor:
        _columns(monitor, name, record)
    return monitor


def _record(monitor: Any, name: str, record: dict[str, Any]) -> None:
    """Write a record with the monitor ``bentoml.monitor`` made, by its public methods (what the
    context manager does): ``bentoml.monitor`` resolves its arguments from BentoML's config by
    dependency injection on every call, about 35 us of a ~55 us record."""
    monitor.start_record()
    _columns(monitor, name, record)
    monitor.stop_record()


def _columns(monitor: Any, name: str, record: dict[str, Any]) -> None:
    for column, role, kind in COLUMNS[name]:
        monitor.log(record[column], column, role, kind)
