"""Issue 20's connection guards, against a real ``bentoml serve`` of the built Bento on 127.0.0.1.

A connection whose request headers are not complete within ``HEADER_TIMEOUT`` is closed (a
thousand of them at once, while ``/recommend`` keeps answering); a worker keeps at most
``serve.max_connections`` connections open and answers the next ones a JSON 503; requests h11
cannot parse get a JSON 400 like every other 4xx.
(``recommender.serving.http``'s GuardedH11Protocol.)
"""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psutil
import pytest
import requests
from serving_helpers import SERVING, Packaged, env_for_children
from support import ROOT, Server, start_server, stop

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 5.0  # recommender.serving.http's
MARGIN = 3.0  # a loaded machine's scheduling, on top of it
PARTIAL = b"GET /recommend HTTP/1.1\r\nHost: x\r\n"  # headers begun, never finished


@pytest.fixture(scope="module", autouse=True)
def _enough_descriptors() -> None:
    """Room for this module's sockets: the soft descriptor limit raised to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 1300:
        pytest.skip(f"the descriptor limit ({soft}) leaves no room for 1,000 connections")


def address(server: Server) -> tuple[str, int]:
    url = urlsplit(server.url)
    assert url.hostname == "127.0.0.1" and url.port is not None
    return url.hostname, url.port


def worker(server: Server) -> psutil.Process:
    """The ``bentoml serve`` worker process (which runs uvicorn and the service)."""
    procs = psutil.Process(server.proc.pid).children(recursive=True)
    (found,) = [p for p in procs if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
    return found


def recommend(server: Server) -> tuple[int, float]:
    started = time.monotonic()
    resp = requests.post(f"{server.url}/recommend", json={"user_id": 1, "k": 5}, timeout=30)
    return resp.status_code, time.monotonic() - started


def parse(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    assert int(headers["content-length"]) == len(body), raw
    return int(lines[0].split()[1]), headers, json.loads(body)


def read_to_close(conn: socket.socket, timeout: float) -> tuple[bytes, float]:
    """All the server sends until it closes the connection, and the seconds that took."""
    started = time.monotonic()
    conn.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while data := conn.recv(65536):
            received += data
    return received, time.monotonic() - started


@contextlib.contextmanager
def connections(server: Server, count: int, first: bytes) -> Iterator[list[socket.socket]]:
    """``count`` open connections that each sent ``first``; closed on the way out."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            conn = socket.create_connection(address(server), timeout=10)
            opened.append(conn)
            if first:
                conn.sendall(first)
        yield opened
    finally:
        for conn in opened:
            conn.close()


def wait_closed(socks: list[socket.socket], deadline: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it (those closed by ``deadline``)."""
    got: dict[socket.socket, bytes] = {s: b"" for s in socks}
    closed: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as sel:
        for conn in socks:
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=min(left, 0.5)):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    got[conn] += data
                else:
                    closed[conn] = got[conn]
                    sel.unregister(conn)
    return closed


# --- 1. request headers that never complete ------------------------------------------------------


def test_a_thousand_partial_headers_are_closed_and_recommend_keeps_answering(
    server: Server,
) -> None:
    proc = worker(server)
    assert recommend(server)[0] == 200  # warm
    rss_before, fds_before = proc.memory_info().rss, proc.num_fds()
    started = time.monotonic()
    with connections(server, 1000, PARTIAL) as held:
        opened = time.monotonic()
        # While all of them are open, normal calls are answered, at once.
        calls = [recommend(server) for _ in range(20)]
        answered = time.monotonic()
        fds_held = proc.num_fds()
        closed = wait_closed(held, opened + HEADER_TIMEOUT + MARGIN)
        last_closed = time.monotonic()
    rss_after, fds_after = proc.memory_info().rss, proc.num_fds()
    latencies = sorted(seconds for _, seconds in calls)
    print(
        f"\n1,000 partial headers: opened in {opened - started:.2f} s; all closed by the server "
        f"{last_closed - started:.2f} s after the first was opened; recommend while held: "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms "
        f"(20 calls); worker fds {fds_before} -> {fds_held} held -> {fds_after}; worker RSS "
        f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB",
        file=sys.stderr,
    )
    assert all(status == 200 for status, _ in calls), calls
    # The calls were made while the connections were open (none closes before the timeout).
    assert answered - started < HEADER_TIMEOUT - 0.5, answered - started
    assert fds_held >= fds_before + 990  # all of them accepted (the warm call's may be gone)
    # Every one closed by the server within the timeout (plus the margin), after a JSON 408.
    assert len(closed) == 1000, f"{1000 - len(closed)} still open"
    assert last_closed - opened < HEADER_TIMEOUT + MARGIN
    assert last_closed - started > HEADER_TIMEOUT - 0.5  # not before the timeout
    for raw in closed.values():
        status, headers, payload = parse(raw)
        assert status == 408 and headers["connection"] == "close", raw
        assert payload == {"error": "the request headers did not arrive within 5 s"}
    assert fds_after <= fds_before + 10
    assert recommend(server)[0] == 200


def _silent(server: Server) -> tuple[bytes, float]:
    """Connect, send nothing."""
    with socket.create_connection(address(server), timeout=10) as conn:
        return read_to_close(conn, HEADER_TIMEOUT + MARGIN + 5)


def _trickle(server: Server) -> tuple[bytes, float]:
    """A header a byte at a time, two a second, never ending (a slowloris)."""
    started = time.monotonic()
    with socket.create_connection(address(server), timeout=10) as conn:
        header = PARTIAL + b"X-Pad: " + b"a" * 100
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in header:
                conn.sendall(bytes([byte]))
                conn.settimeout(0.5)
                try:
                    if data := conn.recv(65536):
                        received, _ = read_to_close(conn, 5)
                        return data + received, time.monotonic() - started
                    return b"", time.monotonic() - started
                except TimeoutError:
                    continue
        return b"", time.monotonic() - started


def _kept_alive(server: Server) -> tuple[bytes, float]:
    """A whole request and its answer, then the next request's headers begun and left."""
    with socket.create_connection(address(server), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = conn.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        time.sleep(1.0)
        conn.sendall(PARTIAL)
        return read_to_close(conn, HEADER_TIMEOUT + MARGIN + 5)


def test_silent_trickling_and_kept_alive_connections_are_closed_too(server: Server) -> None:
    with ThreadPoolExecutor(3) as pool:
        silent = pool.submit(_silent, server)
        trickle = pool.submit(_trickle, server)
        kept = pool.submit(_kept_alive, server)
        # Nothing sent: closed without a word, after the timeout.
        raw, elapsed = silent.result()
        assert raw == b"" and HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + MARGIN, elapsed
        # Bytes keep coming but the headers never end: the clock does not restart.
        raw, elapsed = trickle.result()
        assert parse(raw)[0] == 408, raw
        assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + MARGIN, elapsed
        # The second request on a kept-alive connection has its own timeout.
        raw, elapsed = kept.result()
        assert parse(raw)[0] == 408, raw
        assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + MARGIN, elapsed
    # A request sent whole after a pause under the timeout is answered as usual.
    with socket.create_connection(address(server), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(2)
        conn.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        raw, _ = read_to_close(conn, 10)
    assert raw.startswith(b"HTTP/1.1 200"), raw


# --- 2. requests h11 cannot parse ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (
            b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: -5\r\n\r\n{}",
            400,
            "bad Content-Length",
        ),
        (
            b"POST /recommend HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
            400,
            "illegal header line",
        ),
        (b"GET /recommend HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400, "illegal request line"),
        # Over h11's 16 KB of incomplete headers.
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000, 431, "too long"),
    ],
    ids=["negative-content-length", "nul-in-header", "bad-request-line", "huge-header"],
)
def test_a_request_h11_rejects_gets_a_json_error(
    server: Server, request_bytes: bytes, status: int, words: str
) -> None:
    before = server.log.stat().st_size
    with socket.create_connection(address(server), timeout=10) as conn:
        conn.sendall(request_bytes)
        raw, _ = read_to_close(conn, 10)
    got, headers, payload = parse(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert set(payload) == {"error"}
    assert payload["error"].startswith("invalid HTTP request: ") and words in payload["error"]
    # One INFO line, not uvicorn's WARNING.
    deadline = time.monotonic() + 10
    while True:
        new = server.log.read_bytes()[before:].decode(errors="replace")
        if "invalid HTTP request" in new or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lines = [line for line in new.splitlines() if "invalid HTTP request" in line]
    assert len(lines) == 1 and "[INFO]" in lines[0] and f"- - {status} " in lines[0], new
    assert "Invalid HTTP request received" not in new and "Traceback" not in new, new


# --- 3. the connection limit ---------------------------------------------------------------------

CAP = 40


@pytest.fixture(scope="module")
def capped_server(packaged: Packaged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same champion in a Bento built with ``serve.max_connections`` lowered to ``CAP``,
    served from a copy of the store: a ``bentoml serve`` empties its store's Prometheus folder,
    the session server's metrics included."""
    from recommender.serving.packaging import build_bento

    serve = packaged.params.serve.model_copy(update={"max_connections": CAP})
    bento, _ = build_bento(
        SERVING, packaged.record["bento_model"], serve, ROOT / "requirements.lock"
    )
    args = [sys.executable, "-m", "bentoml", "serve", bento]
    root = tmp_path_factory.mktemp("capped")
    home = root / "bentoml"
    shutil.copytree(
        packaged.bentoml_home, home, ignore=shutil.ignore_patterns("prometheus_multiproc_dir")
    )
    env = {**env_for_children(packaged), "BENTOML_HOME": str(home)}
    srv = start_server(args, "/readyz", env, root / "serve.log", timeout=120)
    try:
        yield srv
    finally:
        stop(srv.proc)


def _refused(server: Server) -> tuple[bytes, float]:
    with socket.create_connection(address(server), timeout=10) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return read_to_close(conn, 5)


def test_a_worker_keeps_at_most_max_connections_open(capped_server: Server) -> None:
    server = capped_server
    proc = worker(server)
    assert recommend(server)[0] == 200
    fds_before = proc.num_fds()
    with connections(server, CAP, PARTIAL) as held:
        started = time.monotonic()
        time.sleep(0.3)  # the worker has accepted them
        # Past the limit: a JSON 503 and the connection closed, at once.
        extra = [_refused(server) for _ in range(10)]
        resp = requests.post(f"{server.url}/recommend", json={"user_id": 1, "k": 5}, timeout=30)
        fds_full = proc.num_fds()
        # Below it again, a normal call is answered.
        for conn in held[:5]:
            conn.close()
        time.sleep(0.3)
        status, _ = recommend(server)
        elapsed = time.monotonic() - started
        # Still within the header timeout: the held connections were open throughout.
        assert elapsed < HEADER_TIMEOUT - 0.5, f"too slow to test ({elapsed:.1f} s)"
    for raw, seconds in extra:
        code, headers, payload = parse(raw)
        assert code == 503 and headers["connection"] == "close", raw
        assert "connections open, its limit" in payload["error"]
        assert seconds < 2, seconds
    assert resp.status_code == 503 and "error" in resp.json(), resp.text
    assert status == 200
    assert fds_full <= fds_before + CAP + 5  # the refused ones hold no descriptor for long
    assert recommend(server)[0] == 200
    # The refusals are counted and logged in one line a second, not one each.
    time.sleep(1.5)
    lines = [x for x in server.log.read_text().splitlines() if "refused" in x and "(503)" in x]
    assert lines and all("[WARNING]" in x for x in lines), lines
    assert sum(int(x.split("refused ")[1].split()[0]) for x in lines) == 11, lines
    metrics = requests.get(f"{server.url}/metrics", timeout=30).text.splitlines()
    (line,) = [x for x in metrics if x.startswith("recommender_http_connections_closed_total")
               and 'reason="over_limit"' in x]  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) == 11, line


def test_the_limit_fits_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from recommender.serving import http

    limits = {"soft": 1024, "hard": 1024}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, new: limits.update(soft=new[0]))
    reserve, slots = http.FD_RESERVE, http.LINGER_SLOTS
    # A hard limit that allows it: the soft one is raised, the limit kept.
    limits.update(soft=1024, hard=100_000)
    assert http.connection_limits(4000) == (4000, 4000 + slots)
    assert limits["soft"] == 4000 + reserve + slots
    # One that does not: fewer connections, half of what the descriptors allow.
    limits.update(soft=1024, hard=1024)
    assert http.connection_limits(4000) == ((1024 - reserve) // 2, 1024 - reserve)
    limits.update(soft=3000, hard=3000)
    assert http.connection_limits(4000) == (3000 - reserve - slots, 3000 - reserve)
    assert http.connection_limits(100) == (100, 3000 - reserve)
