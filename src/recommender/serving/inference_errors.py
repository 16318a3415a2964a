"""Where the inference log's lost records go: a record that could not be written (a full disk, an
unwritable folder: :mod:`recommender.serving.inference_log`) or sent (a collector down:
:mod:`recommender.serving.inference_otlp`) is dropped, counted on the service's
``recommender_inference_log_errors_total``, and the first one of a process is one WARNING line.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("recommender.serving")


class WriteErrors:
    """Where write errors go: the service's Prometheus counter (:func:`install`), and one WARNING
    line per process (a failing disk fails every record: one line says it, the counter counts).

    The warning is only noted by :meth:`add` and written by :meth:`warn`, after the record's
    write returned: :meth:`add` runs inside a handler's ``emit``, holding its lock, and logging
    from there could deadlock with a monitor's first ``dictConfig`` (which holds logging's module
    lock and waits for every handler's).
    """

    counter: Any = None
    pending: tuple[str, str] | None = None
    warned = False
    lock = threading.Lock()

    @classmethod
    def add(cls, what: str, why: BaseException | str | None, records: int = 1) -> None:
        """Count ``records`` dropped records; note the process's first error for :meth:`warn`."""
        if cls.counter is not None:
            cls.counter.inc(records)
        with cls.lock:
            if cls.warned:
                return
            cls.warned = True
            if isinstance(why, BaseException):
                reason = f"{type(why).__name__}: {why}"
            else:
                reason = why or "unknown error"
            cls.pending = (what, " ".join(reason.split())[:300])

    @classmethod
    def warn(cls) -> None:
        with cls.lock:
            pending, cls.pending = cls.pending, None
        if pending is not None:
            logger.warning(
                "inference log: cannot write %s (%s); requests are still answered, their "
                "records are dropped and counted on recommender_inference_log_errors_total "
                "(this warning is not repeated)",
                *pending,
            )


def install(counter: Any) -> None:
    """Count the log's write errors on ``counter`` (a Prometheus counter without labels)."""
    WriteErrors.counter = counter
