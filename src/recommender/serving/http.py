"""The service's HTTP contract, kept in front of BentoML's handlers and below them.

``serving/service.py`` is a thin BentoML class; what makes its HTTP behaviour dependable is here:

- :class:`HttpGuard` (ASGI middleware): ``/`` is Swagger UI from this package's pinned copy
  (:mod:`.swagger`), loading nothing from another host; API calls must send JSON (else 415) of at
  most ``max_bytes`` (else 413), all of it within ``body_timeout`` seconds (else 408); every 4xx is
  JSON ``{"error": ...}`` (405 and 404 included) and is logged at INFO in one line, without a
  traceback (5xx stay ERROR with one).
- :class:`GuardedH11Protocol` (uvicorn's h11 protocol, which BentoML's worker is made to use,
  :func:`install`): closes a connection whose request headers are not complete within
  ``HEADER_TIMEOUT`` seconds (after a JSON 408 if part of a request came), keeps at most
  ``max_connections`` connections open per worker (the next get a JSON 503 and are closed), and
  answers requests h11 cannot parse with a JSON 400 (uvicorn's is plain text).
- Log filters: BentoML's traceback of a request answered 4xx is dropped
  (:class:`NoClientErrorTracebacks`), the access log is escaped to one bounded line, and uvicorn's
  warning per unparsable request is replaced by the INFO line above.
- :func:`client_errors` maps the library's request errors to BentoML's 4xx exceptions.
- Request ids: every response carries ``X-Request-ID``, the client's own when it sent a valid one
  (:data:`CLIENT_REQUEST_ID`), else a new ``uuid4().hex``; the API functions read it with
  :func:`request_id` (the inference log records it, ``/feedback`` answers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any, ClassVar, cast

import h11
from bentoml.exceptions import BentoMLException, InvalidArgument
from bentoml.exceptions import NotFound as HTTPNotFound
from pydantic import ValidationError
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.h11_impl import H11Protocol

from recommender.serving import swagger
from recommender.serving.api import BadRequest, NotFound
from recommender.serving.bentoml_internals import request_error_logger

Send = Callable[[dict], Awaitable[None]]

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

#: A client's own ``X-Request-ID`` is kept when it is this (else the response gets a new id): short
#: and plain enough to go into a log line or a header as is.
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
#: The current request's id, set by :class:`HttpGuard` for the request's task. BentoML runs a
#: sync API function in a worker thread with a copy of that task's context, so it sees it too.
REQUEST_ID: ContextVar[str | None] = ContextVar("recommender_request_id", default=None)


def request_id() -> str:
    """This request's ``X-Request-ID`` (a new id outside an HTTP request: a direct call)."""
    return REQUEST_ID.get() or uuid.uuid4().hex


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` if valid (the first such header), else a new id."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            if CLIENT_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


def max_body(max_pairs: int) -> int:
    """Largest request body: generous for ``max_pairs`` pairs of 128-character ids, small enough
    that a huge upload is refused before anything parses it."""
    return 64 * 1024 + 512 * max_pairs


# --- errors and log lines ------------------------------------------------------------------------


@contextlib.contextmanager
def client_errors() -> Iterator[None]:
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


def is_client_error(exc: BaseException | None) -> bool:
    """Whether BentoML answers ``exc`` raised by a request with a 4xx."""
    if isinstance(exc, ValidationError):  # the request body did not validate
        return True
    return isinstance(exc, BentoMLException) and int(exc.error_code) < 500


def one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters (a log line a client cannot inflate)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class NoClientErrorTracebacks(logging.Filter):
    """Drop BentoML's ERROR record (with a ~2.4 KB traceback) of a request answered 4xx.

    :class:`HttpGuard` logs every 4xx at INFO in one line instead; 5xx keep BentoML's ERROR record
    and traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_client_error(record.exc_info[1]))


class OneLineAccessLog(logging.Filter):
    """BentoML's access log writes the request path decoded, so a ``%0A`` in a URL would start a
    forged log line, and a 5 KB path would make a 5 KB line: escape and cap each field."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                one_line(arg, limit=500) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


class NoInvalidRequestWarnings(logging.Filter):
    """uvicorn's WARNING "Invalid HTTP request received." for each request h11 cannot parse:
    :meth:`GuardedH11Protocol.send_400_response` logs it at INFO with the reason instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


def install_log_filters() -> None:
    """Put the three filters on BentoML's and uvicorn's loggers (once per process)."""
    for name, kind in (
        (request_error_logger().name, NoClientErrorTracebacks),
        ("bentoml.access", OneLineAccessLog),
        ("uvicorn.error", NoInvalidRequestWarnings),
    ):
        target = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in target.filters):
            target.addFilter(kind())


# --- the ASGI middleware -------------------------------------------------------------------------


class HttpGuard:
    """ASGI middleware in front of BentoML's routes: the service's HTTP contract.

    - ``GET /`` is Swagger UI from pinned local assets (:mod:`.swagger`, its files under
      ``/swagger-ui/``), with a Content-Security-Policy that lets it load only from this server.
    - API calls must send JSON (else 415) of at most ``max_bytes`` (else 413), all of it within
      ``body_timeout`` seconds (else 408: a stalled upload is the client's fault, where BentoML's
      request timeout would answer 504). BentoML also accepts form and multipart bodies and
      answers some malformed ones with a 500; this service's contract is JSON only.
    - Every 4xx has one shape, ``{"error": ...}`` (see :func:`json_errors`), and one INFO log line.
    - Every response carries ``X-Request-ID`` (:func:`request_id_of`), also in :data:`REQUEST_ID`
      while the request is handled.

    BentoML's own timeout middleware wraps this one, so ``body_timeout`` must be shorter than the
    service's ``traffic.timeout``. ``routes`` are the service's ``(route, summary)`` pairs, listed
    on ``/`` above Swagger UI.
    """

    def __init__(
        self,
        app: Any,
        max_bytes: int,
        body_timeout: float,
        routes: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.routes = routes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id_of(scope["headers"])
        token = REQUEST_ID.set(rid)
        try:
            # Outermost, so the id is on every response, the 4xx rewritten below included.
            return await self._handle(scope, receive, with_request_id(send, rid))
        finally:
            REQUEST_ID.reset(token)

    async def _handle(self, scope: dict, receive: Callable, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        send = json_errors(send, method, path)
        if method in ("GET", "HEAD"):
            if path == "/":
                return await _send_index(send, scope, self.routes)
            asset = swagger.asset(path)
            if asset is not None:
                return await _send_asset(send, *asset)
        if method != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media not in (b"", b"application/json"):
            return await _reply(send, 415, "send the request as Content-Type: application/json")
        body = await self._read_body(receive, send)
        if body is None:
            return None
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _read_body(self, receive: Callable, send: Send) -> bytes | None:
        """The whole request body, or None once the request was answered (or the client left)."""
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
                        reason = f"request body over {self.max_bytes} bytes (the service's limit)"
                        await _reply(send, 413, reason, close=True)
                        return None
        except TimeoutError:
            await _reply(
                send,
                408,
                f"the request body did not arrive within {self.body_timeout:g} s "
                f"({len(body)} bytes received)",
                close=True,
            )
            return None
        return body


def with_request_id(send: Send, rid: str) -> Send:
    """Wrap ``send`` so the response's headers carry ``X-Request-ID: rid`` (and no other)."""
    header = (b"x-request-id", rid.encode("ascii"))

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
            message = {**message, "headers": [*headers, header]}
        await send(message)

    return wrapped


def json_errors(send: Send, method: str, path: str) -> Send:
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
        payload = error_payload(status, b"".join(chunks), start["headers"], method, path)
        # One line each, of bounded length: the path and the reason come from the client.
        logger.info("%s %s %d %s", method, one_line(path), status, one_line(payload["error"]))
        body = json.dumps(payload).encode()
        drop = (b"content-length", b"content-type")
        headers = [(k, v) for k, v in start["headers"] if k.lower() not in drop]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def error_payload(
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


async def _reply(send: Send, status: int, message: str, close: bool = False) -> None:
    payload = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    if close:  # the rest of the request body is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


#: A ``Host`` header the index page may echo into its examples (a name or address, and a port).
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def served_origin(scope: dict) -> str:
    """``http://host:port`` as the client reached this server: its ``Host`` header when that is a
    plain host and port, else the address and port the server listens on."""
    host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
    if _HOST.match(host):
        return f"http://{host}"
    address, port = scope.get("server") or ("127.0.0.1", 3000)
    address = "127.0.0.1" if address in ("0.0.0.0", "::", None) else address
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


async def _send_index(send: Send, scope: dict, routes: tuple[tuple[str, str], ...]) -> None:
    page = swagger.index_html(routes, served_origin(scope)).encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"%d" % len(page)),
        (b"content-security-policy", swagger.INDEX_CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-cache"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": page})


async def _send_asset(send: Send, content: bytes, media_type: str) -> None:
    headers = [
        (b"content-type", media_type.encode()),
        (b"content-length", b"%d" % len(content)),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"public, max-age=86400"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})


# --- below HTTP: the connection ------------------------------------------------------------------


def error_response(status: int, message: str) -> bytes:
    """A whole ``{"error": message}`` response that closes the connection, as bytes to write.

    No request was read (or none could be parsed), so its ``X-Request-ID`` is always a new one.
    """
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {uuid.uuid4().hex}\r\n"
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


class ClosedConnections:
    """Counts the connections :class:`GuardedH11Protocol` closes, on ``/metrics`` (``counter``,
    labelled by reason) and in the log: at most one line a second per reason, however many
    connections a flood brings."""

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
        self.counter: Any = None  # a Prometheus counter with a ``reason`` label (install())

    def add(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        if self.counter is not None:
            self.counter.labels(reason=reason).inc()
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
    :func:`install` maps that name to this class):

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
    max_connections: ClassVar[int] = 0  # set by install(), from serve.max_connections
    fd_budget: ClassVar[int] = 0
    lingering: ClassVar[int] = 0  # refused connections still half-open, in this worker
    closed: ClassVar[ClosedConnections] = ClosedConnections()

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
            self.transport.write(error_response(408, message))
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
        transport.write(error_response(503, message))
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
        message = f"invalid HTTP request: {one_line(reason)}"
        # METHOD /path STATUS reason, as for every 4xx: no method nor path could be read.
        logger.info("- - %d %s", status, message)
        self.closed.add("invalid_request", self.loop)
        self.transport.write(error_response(status, message))
        self.transport.close()


def install(max_connections: int, closed_counter: Any) -> None:
    """Make every connection of this worker go through :class:`GuardedH11Protocol`, at most
    ``max_connections`` of them (fewer if the file-descriptor limit allows fewer), counting those
    it closes on ``closed_counter``; and put the log filters in place.

    BentoML's worker builds uvicorn's Config after importing the service module, with the default
    ``http="auto"``, which uvicorn resolves through ``HTTP_PROTOCOLS`` when the server starts (a
    class is taken as is): so this runs at the service module's import.
    """
    limits = connection_limits(max_connections)
    GuardedH11Protocol.max_connections, GuardedH11Protocol.fd_budget = limits
    GuardedH11Protocol.closed.counter = closed_counter
    cast(dict[str, Any], uvicorn_config.HTTP_PROTOCOLS).update(
        auto=GuardedH11Protocol, h11=GuardedH11Protocol
    )
    install_log_filters()
