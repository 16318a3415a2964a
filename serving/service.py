"""The BentoML service: the registry's champion answering predict / recommend / similar_items.

It only wires :mod:`recommender.serving.api` (typed requests and responses, and the logic) to HTTP.
The model is the MLflow model the package stage imported into the BentoML store; it is loaded once,
in ``__init__``, and every request is scored by the bundle's NumPy factors (or its compiled
``tf.function``), never by a per-request ``model.predict``.

    make bento && make serve          # the built Bento, on 127.0.0.1:<serve.port>
    curl -s -XPOST 127.0.0.1:3000/recommend -H 'content-type: application/json' \\
         -d '{"user_id": 1, "k": 5}'

Arguments (``bentoml build/serve --arg key=value``; the package stage sets them from params.yaml
and the model): ``model_tag``, ``id_type``, ``max_k``, ``max_pairs``, ``port``, ``workers``
(worker processes), ``max_connections`` (open connections per worker), ``exact_max_items`` and
``ann_min_recall`` (the package stage builds the model's ANN index of a large catalog by them; the
service uses the index it finds). For serving this folder directly during development,
``RECOMMENDER_BENTO_MODEL`` and ``RECOMMENDER_ID_TYPE`` in the environment override the first two.

Besides the four APIs, BentoML serves ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus, with
``recommender_unknown_ids_total`` counting ids the model has never seen and
``recommender_http_connections_closed_total`` the connections closed before any request), and
``/docs.json`` (the OpenAPI schema). ``/`` is this service's own page, which loads nothing from
any other host (BentoML's Swagger UI index loads Google Tag Manager).

HTTP contract, kept by :class:`HttpGuard` in front of BentoML's handlers: every 4xx is JSON
``{"error": ...}`` (405 and 404 included) and is logged at INFO in one line, without a traceback
(5xx stay ERROR with one); a request body must arrive within ``BODY_TIMEOUT`` seconds (else 408).
Below HTTP, :class:`GuardedH11Protocol` (uvicorn's h11 protocol, which BentoML's worker is made
to use) closes a connection whose request headers are not complete within ``HEADER_TIMEOUT``
seconds (after a JSON 408 if part of a request came), keeps at most ``max_connections`` (Bento
argument, ``serve.max_connections``) connections open per worker (the next get a JSON 503 and are
closed), and answers requests h11 cannot parse with a JSON 400 (uvicorn's is plain text).
A champion that cannot load ends ``bentoml serve`` with a non-zero status and a one-line error
naming the model, instead of being restarted forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import html
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, ClassVar, NoReturn, cast

from recommender.core.telemetry import disable_telemetry

disable_telemetry()  # before BentoML and MLflow load: both read their opt-outs from the environment
# A worker that exits (its model cannot load, or it crashed) is not started again; once none is
# left, ``bentoml serve`` stops with a non-zero status ("No active process found for watcher")
# instead of restarting the worker every 10 s forever with its port open and requests hanging.
# This is BentoML's own setting in the containers it builds; ``bentoml serve`` imports this module
# before it creates its worker watcher, which reads the variable.
os.environ.setdefault("BENTOML_CONTAINERIZED", "true")

import bentoml  # noqa: E402
import h11  # noqa: E402
from bentoml.exceptions import BentoMLException, InvalidArgument  # noqa: E402
from bentoml.exceptions import NotFound as HTTPNotFound  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError  # noqa: E402
from uvicorn import config as uvicorn_config  # noqa: E402
from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402

from recommender.serving.api import (  # noqa: E402
    MAX_GENRES,
    BadRequest,
    Genre,
    ModelInfo,
    NotFound,
    Pair,
    PredictResponse,
    RecommendResponse,
    ServiceArgs,
    ServingModel,
    SimilarResponse,
    id_type,
)

ARGS = bentoml.use_arguments(ServiceArgs)
MODEL_TAG = os.environ.get("RECOMMENDER_BENTO_MODEL") or ARGS.model_tag
#: The model's raw id type: JSON integers, or strings for a model trained on text ids.
ID_KIND = os.environ.get("RECOMMENDER_ID_TYPE") or ARGS.id_type
RawId = id_type(ID_KIND)

K = Annotated[int, Field(ge=1, le=ARGS.max_k, description=f"1..{ARGS.max_k}")]
Pairs = Annotated[list[Pair[RawId]], Field(min_length=1, max_length=ARGS.max_pairs)]
Genres = Annotated[list[Genre], Field(max_length=MAX_GENRES)]
#: Largest request body: generous for max_pairs pairs of 128-character ids, small enough that a
#: huge upload is refused before anything parses it.
MAX_BODY = 64 * 1024 + 512 * ARGS.max_pairs
#: Seconds a client has to send its whole request body: a stalled upload is the client's fault,
#: so it gets a 408, before BentoML's own timeout (below) would answer 504.
BODY_TIMEOUT = 5.0
#: Seconds a request may take once its body is in; past it BentoML answers 504 (a server fault).
HANDLER_TIMEOUT = 10.0
#: Seconds a client has to send a request's complete headers, from opening the connection (or
#: from the first byte of its next request on a kept-alive one): past it the connection is closed,
#: after a 408 if part of a request had arrived. The body then has ``BODY_TIMEOUT`` more.
HEADER_TIMEOUT = 5.0
#: Seconds a connection refused over the connection limit stays half-open after its 503, so that
#: the client reads the answer rather than a reset.
REFUSED_LINGER = 1.0
#: File descriptors of a worker kept out of the connection limit (model files, logs, metrics).
FD_RESERVE = 256
#: Refused connections the limit leaves room for, lingering (``REFUSED_LINGER``) at once.
LINGER_SLOTS = 1024

logger = logging.getLogger("recommender.serving")
logger.setLevel(logging.INFO)


class _Request(BaseModel):
    # A misspelled field ("topk") is an error, not a silently ignored default; strict types: a
    # JSON string is not read as a number ("5") or a boolean ("yes"), nor a boolean as a number.
    model_config = ConfigDict(extra="forbid", strict=True)


class PredictRequest(_Request):
    pairs: Pairs


class RecommendRequest(_Request):
    user_id: RawId
    k: K = 10
    exclude_rated: bool = True
    #: Keep only items of any of these genres (case-insensitive).
    genres: Genres | None = None


class SimilarRequest(_Request):
    item_id: RawId
    k: K = 10


class ModelInfoRequest(_Request):
    pass


# Ids the model never saw, by endpoint and kind: a rising rate means the catalog or the user base
# moved on from the training data (time to retrain), or a client sends ids of another system.
UNKNOWN_IDS = bentoml.metrics.Counter(
    name="recommender_unknown_ids",
    documentation="Request ids unknown to the served model (out-of-vocabulary)",
    labelnames=["endpoint", "kind"],
)


# Connections the HTTP protocol closed or refused by itself (no request reached the service), by
# reason: header_timeout (part of a request, then nothing for HEADER_TIMEOUT), no_request (nothing
# at all), over_limit (the worker had serve.max_connections open), invalid_request (not HTTP).
CLOSED_CONNECTIONS = bentoml.metrics.Counter(
    name="recommender_http_connections_closed",
    documentation="HTTP connections the server closed before any request reached the service",
    labelnames=["reason"],
)


@contextlib.contextmanager
def _client_errors() -> Iterator[None]:
    """The library's request errors as HTTP 4xx with their message (never a 500).

    A pydantic ``ValidationError`` raised here is a bug of ours (the request was validated
    before), not the client's: it becomes a 500, which BentoML would otherwise answer 400.
    """
    try:
        yield
    except BadRequest as exc:
        raise InvalidArgument(str(exc)) from None
    except NotFound as exc:
        raise HTTPNotFound(str(exc)) from None
    except ValidationError as exc:
        raise RuntimeError(f"the service built an invalid value: {exc}") from exc


def _is_client_error(exc: BaseException | None) -> bool:
    """Whether BentoML answers ``exc`` raised by a request with a 4xx."""
    if isinstance(exc, ValidationError):  # the request body did not validate
        return True
    return isinstance(exc, BentoMLException) and int(exc.error_code) < 500


class _NoClientErrorTracebacks(logging.Filter):
    """Drop BentoML's ERROR record (with a ~2.4 KB traceback) of a request answered 4xx.

    :class:`HttpGuard` logs every 4xx at INFO in one line instead; 5xx keep BentoML's ERROR record
    and traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_client_error(record.exc_info[1]))


# BentoML logs each exception a request raised through this logger (``log_exception``).
logging.getLogger("bentoml._internal.server.http_app").addFilter(_NoClientErrorTracebacks())


class _OneLineAccessLog(logging.Filter):
    """BentoML's access log writes the request path decoded, so a ``%0A`` in a URL would start a
    forged log line, and a 5 KB path would make a 5 KB line: escape and cap each field."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _one_line(arg, limit=500) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


logging.getLogger("bentoml.access").addFilter(_OneLineAccessLog())


class HttpGuard:
    """ASGI middleware in front of BentoML's routes: the service's HTTP contract.

    - ``GET /`` is :data:`INDEX_HTML`, a page that loads nothing from another host (BentoML's
      own index is a Swagger UI that loads Google Tag Manager).
    - API calls must send JSON (else 415) of at most ``max_bytes`` (else 413), all of it within
      ``body_timeout`` seconds (else 408: a stalled upload is the client's fault, where BentoML's
      request timeout would answer 504). BentoML also accepts form and multipart bodies and
      answers some malformed ones with a 500; this service's contract is JSON only.
    - Every 4xx has one shape, ``{"error": ...}`` (see :func:`_json_errors`), and one INFO log line.

    BentoML's own timeout middleware wraps this one, so ``body_timeout`` must be shorter than the
    service's ``traffic.timeout``.
    """

    def __init__(self, app: Any, max_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        send = _json_errors(send, method, path)
        if path == "/" and method in ("GET", "HEAD"):
            return await _send_index(send)
        if method != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media not in (b"", b"application/json"):
            return await _reply(send, 415, "send the request as Content-Type: application/json")
        body, more = b"", True
        try:
            async with asyncio.timeout(self.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_bytes:
                        return await _reply(
                            send,
                            413,
                            f"request body over {self.max_bytes} bytes (the service's limit)",
                            close=True,
                        )
        except TimeoutError:
            return await _reply(
                send,
                408,
                f"the request body did not arrive within {self.body_timeout:g} s "
                f"({len(body)} bytes received)",
                close=True,
            )
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def _json_errors(
    send: Callable[[dict], Awaitable[None]], method: str, path: str
) -> Callable[[dict], Awaitable[None]]:
    """Wrap ``send`` so every 4xx goes out as JSON ``{"error": ...}`` and is logged in one line.

    BentoML wraps the errors our code raises in a one-element list (``[{"error": ...}]``), names
    an internal class in its validation errors (the fields are in ``detail``), and Starlette
    answers 404 and 405 in plain text: each becomes ``{"error": "<what>"}``, other keys kept.
    """
    start: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            start = message  # held back until the body is known: its length may change
            return
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        status = start["status"]
        payload = _error_payload(status, b"".join(chunks), start["headers"], method, path)
        # One line each, of bounded length: the path and the reason come from the client.
        logger.info("%s %s %d %s", method, _one_line(path), status, _one_line(payload["error"]))
        body = json.dumps(payload).encode()
        drop = (b"content-length", b"content-type")
        headers = [(k, v) for k, v in start["headers"] if k.lower() not in drop]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _error_payload(
    status: int, body: bytes, headers: list[tuple[bytes, bytes]], method: str, path: str
) -> dict[str, Any]:
    """The ``{"error": ...}`` object of a 4xx response whose body BentoML or Starlette wrote."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and "error" in data:
        detail = data.get("detail")
        if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
            # A pydantic validation error: say which fields and why, not the internal class name.
            problems = [
                f"{'.'.join(str(part) for part in d.get('loc', ())) or 'body'}: {d.get('msg', '')}"
                for d in detail
            ]
            return {**data, "error": "; ".join(problems)}
        return data
    if status == 405:
        allowed = dict((k.lower(), v) for k, v in headers).get(b"allow", b"").decode("latin-1")
        message = f"method {method} is not allowed on {path}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
    elif status == 404:
        message = f"no such endpoint: {method} {path}"
    else:
        text = body.decode("utf-8", "replace").strip()
        message = text or HTTPStatus(status).phrase
    return {"error": message}


def _one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters (a log line a client cannot inflate)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


async def _reply(
    send: Callable[[dict], Awaitable[None]], status: int, message: str, close: bool = False
) -> None:
    payload = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    if close:  # the rest of the request body is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


#: ``/``'s Content-Security-Policy: nothing may load from anywhere, inline styles aside.
INDEX_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


async def _send_index(send: Callable[[dict], Awaitable[None]]) -> None:
    page = INDEX_HTML.encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"%d" % len(page)),
        (b"content-security-policy", INDEX_CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": page})


def _error_response(status: int, message: str) -> bytes:
    """A whole ``{"error": message}`` response that closes the connection, as bytes to write."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def connection_limits(wanted: int) -> tuple[int, int]:
    """The open connections one worker keeps, and the file descriptors all its connections may use.

    The soft file-descriptor limit is raised (up to the hard one) to fit ``wanted`` connections,
    ``FD_RESERVE`` and ``LINGER_SLOTS``. If it cannot be, fewer connections are kept: what the
    limit leaves beyond those two, or half of what it leaves beyond ``FD_RESERVE`` if that is more
    (the other half lets refused connections linger), so the worker never runs out of descriptors.
    """
    try:
        import resource
    except ImportError:  # not a Unix: no descriptor limit to read
        return wanted, wanted + LINGER_SLOTS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE + LINGER_SLOTS
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return wanted, wanted + LINGER_SLOTS
    budget = max(2, soft - FD_RESERVE)
    return max(1, min(wanted, max(budget - LINGER_SLOTS, budget // 2))), budget


class _ClosedConnections:
    """Counts the connections :class:`GuardedH11Protocol` closes, on ``/metrics`` and in the log:
    at most one line a second per reason, however many connections a flood brings."""

    MESSAGES: ClassVar[dict[str, tuple[int, str]]] = {
        "header_timeout": (
            logging.INFO,
            "closed %d connection(s) whose request headers were not complete within "
            f"{HEADER_TIMEOUT:g} s (408)",
        ),
        "no_request": (
            logging.INFO,
            f"closed %d connection(s) that sent no request within {HEADER_TIMEOUT:g} s",
        ),
        "over_limit": (
            logging.WARNING,
            "refused %d connection(s) (503): the worker had %d open, its limit "
            "(serve.max_connections)",
        ),
    }

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.flush_handle: asyncio.TimerHandle | None = None

    def add(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        CLOSED_CONNECTIONS.labels(reason=reason).inc()
        if reason not in self.MESSAGES:
            return
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.flush_handle is None:
            self.flush_handle = loop.call_later(1.0, self.flush)

    def flush(self) -> None:
        self.flush_handle = None
        counts, self.counts = self.counts, {}
        for reason, count in counts.items():
            level, message = self.MESSAGES[reason]
            args = (count, GuardedH11Protocol.max_connections)[: message.count("%d")]
            logger.log(level, message, *args)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with the guards that only a connection can keep.

    An ASGI middleware such as :class:`HttpGuard` sees a request once its headers are complete, so
    these live where uvicorn reads the socket (BentoML's worker runs uvicorn with ``http="auto"``;
    the service module maps that name to this class, see the end of the module):

    - **Header timeout.** A connection must complete a request's headers within
      ``header_timeout`` seconds of opening (or of the first byte of its next request on a
      kept-alive one), else it is closed, after a JSON 408 if part of a request had arrived.
      Between requests uvicorn's keep-alive timeout (5 s) closes an idle connection.
    - **Connection limit.** With ``max_connections`` open, a new connection is answered a JSON
      503 at once and closed (half-closed, then dropped after ``REFUSED_LINGER`` seconds or when
      the client closes; reset at once if even that would exceed ``fd_budget``).
    - **JSON 400s.** A request h11 cannot parse (a negative Content-Length, a NUL in a header, a
      malformed request line) is answered ``{"error": "invalid HTTP request: <why>"}`` (uvicorn's
      own answer is plain text), with h11's status (431 for headers over 16 KB), and logged in one
      INFO line like every other 4xx.
    """

    header_timeout: ClassVar[float] = HEADER_TIMEOUT
    max_connections: ClassVar[int] = 0  # set at the end of the module, from serve.max_connections
    fd_budget: ClassVar[int] = 0
    lingering: ClassVar[int] = 0  # refused connections still half-open, in this worker
    closed: ClassVar[_ClosedConnections] = _ClosedConnections()

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timer: asyncio.TimerHandle | None = None
        self.refused = False  # over the limit: answered 503, nothing it sends is read
        self.linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            return self._refuse(transport)
        super().connection_made(transport)
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.header_timer is None and self.conn.their_state is h11.IDLE:
            # The first bytes of the next request on a kept-alive connection.
            self.header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)
        super().data_received(data)
        if self.header_timer is not None and self.conn.their_state is not h11.IDLE:
            # The headers are complete (or the request was rejected).
            self.header_timer.cancel()
            self.header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
            GuardedH11Protocol.lingering -= 1
        if self.refused:
            return None
        return super().connection_lost(exc)

    def _headers_timed_out(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it gets no answer
            message = f"the request headers did not arrive within {self.header_timeout:g} s"
            self.transport.write(_error_response(408, message))
            self.closed.add("header_timeout", self.loop)
        else:
            self.closed.add("no_request", self.loop)
        self.transport.close()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.transport, self.refused = transport, True
        self.closed.add("over_limit", self.loop)
        if len(self.connections) + self.lingering >= self.fd_budget:
            return transport.abort()  # no room even to linger: reset at once
        message = (
            f"the server has {len(self.connections)} connections open, its limit: try again later"
        )
        transport.write(_error_response(503, message))
        if not transport.can_write_eof():  # TLS: close after the response
            return transport.close()
        # Half-close: the client reads the 503 and an end of file. Closing outright while its
        # request is unread would make the kernel reset the connection and drop the answer.
        transport.write_eof()
        GuardedH11Protocol.lingering += 1
        self.linger = self.loop.call_later(REFUSED_LINGER, transport.close)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this while handling h11's RemoteProtocolError, which says what was wrong.
        exc = sys.exc_info()[1]
        status, reason = 400, msg
        if isinstance(exc, h11.RemoteProtocolError):
            hint = exc.error_status_hint
            status, reason = (hint if 400 <= hint < 600 else 400), str(exc) or msg
        message = f"invalid HTTP request: {_one_line(reason)}"
        # METHOD /path STATUS reason, as for every 4xx: no method nor path could be read.
        logger.info("- - %d %s", status, message)
        self.closed.add("invalid_request", self.loop)
        self.transport.write(_error_response(status, message))
        self.transport.close()


class _NoInvalidRequestWarnings(logging.Filter):
    """uvicorn's WARNING "Invalid HTTP request received." for each request h11 cannot parse:
    :meth:`GuardedH11Protocol.send_400_response` logs it at INFO with the reason instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


logging.getLogger("uvicorn.error").addFilter(_NoInvalidRequestWarnings())


@bentoml.service(
    name="recommender", workers=ARGS.workers, traffic={"timeout": BODY_TIMEOUT + HANDLER_TIMEOUT}
)
class Recommender:
    """Ratings, top-K recommendations and similar items from the packaged champion."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from recommender import tracking

        # The bundle inside the imported MLflow model, loaded by this Bento's own library (Keras
        # with safe_mode): the model's logged code is not run, so a champion logged by an older
        # version of the project serves with the code this Bento was built with.
        where = f"the model {self.bento_model.tag}"
        try:
            folder = Path(tracking.bundle_dir(self.bento_model.path_of("mlflow_model")))
        except Exception as exc:
            _cannot_serve(f"cannot load {where}: {_one_line(exc)}", exc)
        # A missing or damaged file (a truncated model.keras, an .npz failing its CRC) is named
        # by the load itself, in seconds, before any TensorFlow (a factor family needs none).
        # Each file's bytes are checked against the bundle's files.sha256, and its digest
        # against the one register recorded on the version (the package stage's metadata).
        tags = self.bento_model.info.metadata.get("tags") or {}
        try:
            from recommender.scoring.bundle import CONTENT_TAG, ModelBundle

            bundle = ModelBundle.load(folder, expected_digest=tags.get(f"version.{CONTENT_TAG}"))
        except Exception as exc:
            message = _one_line(f"{type(exc).__name__}: {exc}", limit=400)
            _cannot_serve(f"cannot load {where} from {folder}: {message}", exc)
        ann = _load_ann(Path(self.bento_model.path_of("ann")), bundle, where)
        info = {**self.bento_model.info.metadata, "bento_model": str(self.bento_model.tag)}
        limits = {"max_k": ARGS.max_k, "max_pairs": ARGS.max_pairs}
        self.model = ServingModel(bundle, info, limits, ann=ann)
        if self.model.id_kind != ID_KIND:
            _cannot_serve(
                f"the model {self.bento_model.tag} takes {self.model.id_kind} ids but the service "
                f"was built for {ID_KIND} ids (rebuild the Bento with `make bento`)",
                None,
            )
        # TensorFlow, Keras and MLflow leave millions of long-lived objects behind; freezing them
        # keeps the garbage collector from walking them again during requests (a tail-latency
        # pause, and a per-request cost the no-op service does not pay).
        gc.collect()
        gc.freeze()
        if GuardedH11Protocol.max_connections < ARGS.max_connections:
            logger.warning(
                "at most %d open connections per worker, not serve.max_connections %d: the "
                "file-descriptor limit (ulimit -n) allows no more",
                GuardedH11Protocol.max_connections,
                ARGS.max_connections,
            )

    @bentoml.api(input_spec=PredictRequest)
    def predict(self, pairs: Pairs) -> PredictResponse[RawId]:
        """Predicted ratings of raw (user_id, item_id) pairs, each flagged if an id is unknown."""
        with _client_errors():
            response = self.model.predict(pairs)
        users = sum(p.unknown_user for p in response.predictions)
        items = sum(p.unknown_item for p in response.predictions)
        if users:
            UNKNOWN_IDS.labels(endpoint="predict", kind="user").inc(users)
        if items:
            UNKNOWN_IDS.labels(endpoint="predict", kind="item").inc(items)
        return response

    @bentoml.api(input_spec=RecommendRequest)
    def recommend(
        self,
        user_id: RawId,
        k: K = 10,
        exclude_rated: bool = True,
        genres: Genres | None = None,
    ) -> RecommendResponse[RawId]:
        """Top-k items for a user; an unknown user gets the most popular ones (cold_start)."""
        with _client_errors():
            response = self.model.recommend(user_id, k, exclude_rated, genres)
        if response.cold_start:
            UNKNOWN_IDS.labels(endpoint="recommend", kind="user").inc()
        return response

    @bentoml.api(input_spec=SimilarRequest)
    def similar_items(self, item_id: RawId, k: K = 10) -> SimilarResponse[RawId]:
        """The k items nearest to a known item by cosine similarity of item embeddings."""
        try:
            with _client_errors():
                return self.model.similar_items(item_id, k)
        except HTTPNotFound:
            UNKNOWN_IDS.labels(endpoint="similar_items", kind="item").inc()
            raise

    @bentoml.api(input_spec=ModelInfoRequest)
    def model_info(self) -> ModelInfo:
        """The served registered model: name, version, alias, test metrics and lineage tags."""
        return self.model.model_info()


def _load_ann(folder: Path, bundle: Any, where: str) -> Any:
    """The model's ANN index (the package stage built one for a large catalog), or None."""
    if not folder.is_dir():
        return None
    try:
        import faiss

        from recommender.scoring.ann import AnnIndex, ranking_factors

        # One query at a time per worker, and a worker per core: FAISS' own threads would only
        # contend with the other workers.
        faiss.omp_set_num_threads(1)
        factors = ranking_factors(bundle)
        if factors is None:
            raise ValueError("the model has no factors for its ANN index")
        return AnnIndex.load(folder, factors)
    except Exception as exc:
        message = _one_line(f"{type(exc).__name__}: {exc}", limit=400)
        _cannot_serve(f"cannot load the ANN index of {where} from {folder}: {message}", exc)


def _cannot_serve(message: str, exc: BaseException | None) -> NoReturn:
    """Stop: in a ``bentoml serve`` worker, exit at once with ``message`` as the one line on stderr.

    Raising instead would let uvicorn print a traceback and exit 0, and BentoML start the worker
    again. With no worker left, ``bentoml serve`` exits non-zero (``BENTOML_CONTAINERIZED``,
    above). Anywhere else (the service class used directly, in tests) it raises.
    """
    from bentoml._internal.context import server_context

    if server_context.worker_index is None:
        raise RuntimeError(message) from exc
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sys.stdout.flush()
    sys.stderr.write(f"{stamp} [ERROR] [recommender] {_one_line(message, limit=1000)}\n")
    sys.stderr.flush()
    os._exit(3)  # uvicorn's status for a failed startup


def _index_html() -> str:
    """``/``: what the service answers and where its OpenAPI schema is, with no external loads."""
    rows = "\n".join(
        f"<li><code>POST {html.escape(method.route)}</code>: "
        f"{html.escape((method.doc or '').strip().splitlines()[0] if method.doc else '')}</li>"
        for method in Recommender.apis.values()
    )
    example = html.escape(
        "curl -s -XPOST http://127.0.0.1:3000/recommend -H 'content-type: application/json' "
        """-d '{"user_id": 1, "k": 5}'"""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>recommender</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 50rem; margin: 2rem auto; padding: 0 1rem; }}
code, pre {{ background: #f3f3f3; padding: 0.1rem 0.3rem; }}
</style>
</head>
<body>
<h1>recommender</h1>
<p>Ratings, top-K recommendations and similar items from the registry's champion model.
Every endpoint takes and returns JSON.</p>
<ul>
{rows}
</ul>
<pre>{example}</pre>
<p>The OpenAPI schema: <a href="docs.json">/docs.json</a>.
Probes: <a href="healthz">/healthz</a>, <a href="readyz">/readyz</a>.
Prometheus metrics: <a href="metrics">/metrics</a>.</p>
</body>
</html>
"""


INDEX_HTML = _index_html()

Recommender.add_asgi_middleware(HttpGuard, max_bytes=MAX_BODY, body_timeout=BODY_TIMEOUT)

# BentoML's worker builds uvicorn's Config after importing this module, with the default
# ``http="auto"``, which uvicorn resolves through this table when the server starts (a class is
# taken as is): every connection of the worker goes through GuardedH11Protocol.
GuardedH11Protocol.max_connections, GuardedH11Protocol.fd_budget = connection_limits(
    ARGS.max_connections
)
cast(dict[str, Any], uvicorn_config.HTTP_PROTOCOLS).update(
    auto=GuardedH11Protocol, h11=GuardedH11Protocol
)
