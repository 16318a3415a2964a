"""The inference log sent to an OpenTelemetry collector over OTLP/HTTP instead of files
(``serve.inference_log_exporter: otlp``, the collector at ``serve.otlp_endpoint``).

The records are the file log's, field for field (:mod:`recommender.serving.inference_log`): each
becomes one OTLP log record whose body is the record's mapping, under the instrumentation scope
``bentoml_monitor_data.<monitor>``; each worker also sends each monitor's schema once, under
``bentoml_monitor_schema.<monitor>``. The resource's ``service.name`` is ``recommender``
(``OTEL_RESOURCE_ATTRIBUTES`` adds more); headers and TLS files come from the exporter's usual
``OTEL_EXPORTER_OTLP_LOGS_*`` variables. ``make monitor`` and the feedback stage read files only.

BentoML's own ``otlp`` monitor is not used: like its file monitor it configures one logger for
every monitor (each monitor's setup moves the logger to its own provider, so records go out under
the last monitor's resource), it replaces OpenTelemetry's global logger provider once per monitor,
and it needs the gRPC exporter (and grpcio) even to send over HTTP.

The network is never in a request's way: a record is only queued, and a batch thread of the
OpenTelemetry SDK sends the queue every second (or at 512 records). A record that does not reach
the collector (it is down or refuses the batch, or the queue is full while it is slow) is counted
on ``recommender_inference_log_errors_total`` like a record a full disk refused, with one WARNING
line per process (:class:`~recommender.serving.inference_errors.WriteErrors`); the exporter's own
lines on why a batch failed are OpenTelemetry's, which repeats each at most every 20 s.

The service imports this module only when configured for OTLP, and only then does the Bento
carry the exporter (``requirements/otlp.txt``). OpenTelemetry's Python logs API and SDK are
still in underscore-named modules (``opentelemetry._logs``, ``opentelemetry.sdk._logs``), the
ones its own exporters and BentoML use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from bentoml.monitoring import DefaultMonitor
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource

from recommender.serving.inference_errors import WriteErrors

#: Records queued for the exporter per process (the SDK's default); past it a record is dropped.
QUEUE_SIZE = 2048
#: Most records in one request to the collector (the SDK's default); more wake the batch thread.
BATCH_SIZE = 512
#: The resource's ``service.name``: the BentoML service's name.
SERVICE_NAME = "recommender"


class InferenceOTLPMonitor(DefaultMonitor):
    """BentoML's ``DefaultMonitor`` records and schema (those of the file log), sent to the
    collector at ``endpoint`` (:class:`OTLPHandler`) instead of written to files; like
    :class:`~recommender.serving.inference_log.InferenceMonitor`, with loggers of its own per
    monitor.

    Args:
        name: The monitor's name (its endpoint's).
        endpoint: The collector's OTLP/HTTP logs URL (``serve.otlp_endpoint``).
    """

    def __init__(self, name: str, endpoint: str, **options: Any) -> None:
        # BentoML's defaults fill in the file monitor's options (log_path ...): no files here.
        super().__init__(name, **{**options, "log_path": "", "log_config_file": None})
        self.endpoint = endpoint

    def _init_logger(self) -> None:
        handler = otlp_handler(self.endpoint)
        loggers = []
        for kind in ("bentoml_monitor_data", "bentoml_monitor_schema"):
            logger = logging.getLogger(f"{kind}.{self.name}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            if handler not in logger.handlers:
                logger.addHandler(handler)
            loggers.append(logger)
        self.data_logger, self.schema_logger = loggers


_handlers: dict[str, OTLPHandler] = {}
_handlers_lock = threading.Lock()


def otlp_handler(endpoint: str) -> OTLPHandler:
    """This process's handler for ``endpoint``: one queue, batch thread and HTTP session for every
    monitor."""
    with _handlers_lock:
        if endpoint not in _handlers:
            _handlers[endpoint] = OTLPHandler(endpoint)
        return _handlers[endpoint]


class OTLPHandler(logging.Handler):
    """Queues each record of the monitors' loggers as an OTLP log record (the body is the record,
    the scope its logger's name) for a batch processor that sends them to ``endpoint``.

    The handler keeps count of the records queued and not yet handed to the exporter: past
    :data:`QUEUE_SIZE` it drops a record itself and counts it, where the SDK's processor would
    drop one with a log line only.
    """

    def __init__(self, endpoint: str) -> None:
        super().__init__(logging.INFO)
        self.endpoint = endpoint
        self.queued = 0
        self._queued_lock = threading.Lock()
        self.provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        exporter = CountedExporter(OTLPLogExporter(endpoint=endpoint), self)
        processor = BatchLogRecordProcessor(
            exporter, max_export_batch_size=min(BATCH_SIZE, QUEUE_SIZE), max_queue_size=QUEUE_SIZE
        )
        self.provider.add_log_record_processor(processor)
        self._loggers: dict[str, Any] = {}

    @property
    def what(self) -> str:
        """What a dropped record was on its way to, for the warning line."""
        return f"records to the OTLP collector at {self.endpoint}"

    def emit(self, record: logging.LogRecord) -> None:
        with self._queued_lock:
            full = self.queued >= QUEUE_SIZE
            if not full:
                self.queued += 1
        if full:
            WriteErrors.add(self.what, f"more than {QUEUE_SIZE} records wait for the collector")
            return
        try:
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = self._loggers[record.name] = self.provider.get_logger(record.name)
            logger.emit(
                timestamp=int(record.created * 1e9),
                observed_timestamp=time.time_ns(),
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=record.msg,  # the record's mapping, as the file's JSON line holds it
            )
        except Exception as exc:  # noqa: BLE001 (a record never fails its request)
            self.handed(1)
            WriteErrors.add(self.what, exc)

    def handed(self, records: int) -> None:
        """``records`` left the queue (for the exporter, or never entered it)."""
        with self._queued_lock:
            self.queued -= records


class CountedExporter(LogRecordExporter):
    """``exporter``, with the records of a batch it could not deliver counted as dropped.

    Runs in the batch processor's thread, where no request waits and no logging lock is held,
    so the warning is written at once.
    """

    def __init__(self, exporter: LogRecordExporter, handler: OTLPHandler) -> None:
        self.exporter = exporter
        self.handler = handler

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.handler.handed(len(batch))
        why: BaseException | str = "the export failed; OpenTelemetry's exporter logs why"
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # noqa: BLE001 (the SDK would log it; count it as well)
            result, why = LogRecordExportResult.FAILURE, exc
        if result is not LogRecordExportResult.SUCCESS:
            WriteErrors.add(self.handler.what, why, records=len(batch))
            WriteErrors.warn()
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)
