"""Issue 11's hardening, against a real ``bentoml serve`` on 127.0.0.1.

A stalled request body is the client's fault (408, not 504); every 4xx is JSON and one INFO log
line (no traceback); the pages the service serves load nothing from another host; and a champion
that cannot load ends ``bentoml serve`` with a non-zero status and a one-line error, instead of
restarting its worker forever. (Strict request fields: ``test_strict_requests.py``.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from serving_helpers import Packaged, env_for_children
from support import Server, change_first_user_id, free_port, stop

pytestmark = pytest.mark.slow

BODY_TIMEOUT = 5.0  # recommender.serving.http's
TRAFFIC_TIMEOUT = 15.0  # BentoML's timeout middleware answers 504 after this


def post(server: Server, endpoint: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/{endpoint}", json=body, timeout=30)


# --- 1. a stalled body ---------------------------------------------------------------------------


def _raw_request(
    server: Server, head: bytes, chunks: list[bytes], pause: float
) -> tuple[float, bytes]:
    """Send ``head``, then ``chunks`` ``pause`` seconds apart (never the whole declared body);
    return the seconds until the server answered and all it sent until it closed the connection."""
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=TRAFFIC_TIMEOUT + 15) as conn:
        started = time.monotonic()
        conn.sendall(head)
        received = b""
        for chunk in chunks:
            conn.sendall(chunk)
            conn.settimeout(pause)
            try:
                received = conn.recv(65536)
            except TimeoutError:
                continue
            break
        conn.settimeout(TRAFFIC_TIMEOUT + 15)
        if not received:
            received = conn.recv(65536)
        elapsed = time.monotonic() - started
        with contextlib.suppress(ConnectionResetError):
            while data := conn.recv(65536):  # the server closes the connection after a 408
                received += data
    return elapsed, received


def _status_and_json(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def test_a_stalled_or_trickled_body_gets_408_json_before_the_504(server: Server) -> None:
    head = (
        b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n"
    )
    with ThreadPoolExecutor(2) as pool:
        # Part of the body, then nothing; and a client sending a byte a second (never done).
        stalled = pool.submit(_raw_request, server, head + b'{"user_id": 1', [], 0)
        trickled = pool.submit(_raw_request, server, head, [b" "] * 60, 1.0)
        results = [stalled.result(), trickled.result()]
    for elapsed, raw in results:
        status, headers, payload = _status_and_json(raw)
        assert status == 408, raw
        assert set(payload) == {"error"} and "did not arrive within 5 s" in payload["error"]
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert BODY_TIMEOUT - 0.5 <= elapsed < TRAFFIC_TIMEOUT - 2, elapsed
    # The server is fine afterwards.
    assert post(server, "recommend", {"user_id": 1, "k": 2}).status_code == 200


# --- 2. 405 and 404 are JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/recommend", 405, ["GET", "/recommend", "POST"]),
        ("PUT", "/predict", 405, ["PUT", "/predict", "POST"]),
        ("DELETE", "/model_info", 405, ["DELETE", "/model_info"]),
        ("POST", "/", 405, ["POST"]),
        ("POST", "/healthz", 405, ["POST", "/healthz"]),
        ("GET", "/no-such-endpoint", 404, ["/no-such-endpoint"]),
        ("POST", "/no-such-endpoint", 404, ["/no-such-endpoint"]),
    ],
)
def test_wrong_method_and_unknown_path_get_json_errors(
    server: Server, method: str, path: str, status: int, words: list[str]
) -> None:
    resp = requests.request(method, server.url + path, timeout=30)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    payload = resp.json()
    assert set(payload) == {"error"}
    assert all(word in payload["error"] for word in words), payload


# --- 4. a 4xx is one INFO line, not an ERROR with a traceback ------------------------------------


def _log_lines_with(log: Path, marker: str, count: int, timeout: float = 10) -> list[str]:
    """The service's own lines mentioning ``marker``, once there are ``count`` (or at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            line
            for line in log.read_text().splitlines()
            if marker in line and "(scheme=http," not in line
        ]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_a_4xx_is_logged_at_info_in_one_line(server: Server) -> None:
    before = server.log.stat().st_size
    marker = f"zz{uuid.uuid4().hex[:12]}"
    requests_4xx: list[tuple[str, str, Any, int]] = [
        ("POST", "/recommend", {"user_id": 1, marker: 1}, 400),  # an unknown field
        ("POST", "/similar_items", {"item_id": 10**12 + 7}, 404),  # raised by our code
        ("POST", "/recommend", {"user_id": 1, "genres": [marker]}, 400),  # raised by our code
        ("GET", f"/{marker}", None, 404),  # Starlette's own
        ("GET", "/recommend", None, 405),
    ]
    for method, path, body, status in requests_4xx:
        resp = requests.request(method, server.url + path, json=body, timeout=30)
        assert resp.status_code == status, resp.text
    # The marker is in three of the requests' reasons or paths: one INFO line each (the access
    # log's own line, "(scheme=http,...", aside).
    ours = _log_lines_with(server.log, marker, count=3)
    assert len(ours) == 3 and all("[INFO]" in line for line in ours), ours
    assert any(f"POST /recommend 400 {marker}: Extra inputs are not permitted" in x for x in ours)
    assert any(f"GET /{marker} 404 no such endpoint" in x for x in ours)
    assert any("POST /recommend 400 unknown genre(s)" in x for x in ours)
    time.sleep(0.5)  # anything else these requests log is written by now
    new = server.log.read_bytes()[before:].decode()
    assert "POST /similar_items 404 item_id" in new
    assert "GET /recommend 405 method GET is not allowed on /recommend" in new
    assert "Traceback" not in new and "[ERROR]" not in new, new[-3000:]


def test_a_4xx_log_line_is_bounded_and_cannot_be_split(server: Server) -> None:
    marker = f"zz{uuid.uuid4().hex[:12]}"
    # A newline (%0A) and a 5 KB path: still one line, of bounded length.
    path = f"/{marker}%0A[ERROR] forged line {'a' * 5000}"
    assert requests.get(server.url + path, timeout=30).status_code == 404
    ours = _log_lines_with(server.log, marker, count=1)
    assert len(ours) == 1 and len(ours[0]) < 700, ours
    assert "[INFO]" in ours[0] and "forged line" in ours[0]
    # BentoML's access line for the same request is written after the response: wait for it too.
    deadline = time.monotonic() + 10
    while True:
        lines = server.log.read_text(errors="replace").splitlines()
        access = [line for line in lines if marker in line and "(scheme=http," in line]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(access) == 1 and len(access[0]) < 1000, access
    assert not any(line.startswith("[ERROR] forged") for line in lines)


# --- 5. no third-party loads ---------------------------------------------------------------------

#: Elements and attributes through which a page makes the browser fetch something.
LOADING_ATTRS = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")
JS_URL = re.compile(r"""https?://[^\s'"<>)]+|//[a-z0-9.-]+\.[a-z]{2,}/""", re.IGNORECASE)


class _Loads(HTMLParser):
    """Every URL a page loads (not the links a user may click), and its local ``<a>`` links."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        for attr in LOADING_ATTRS.get(tag, ()):
            if attr in values:
                if attr == "srcset":
                    self.loads += [part.split()[0] for part in values[attr].split(",") if part]
                else:
                    self.loads.append(values[attr])
        if "style" in values:
            self.loads += [a or b for a, b in CSS_URL.findall(values["style"])]
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.loads += [a or b for a, b in CSS_URL.findall(data)]
        elif self._in == "script":  # URLs an inline script may inject (Tag Manager does)
            self.loads += JS_URL.findall(data)


def _third_party(base: str, urls: list[str]) -> list[str]:
    bad = []
    for url in urls:
        full = urljoin(base, url.strip())
        parts = urlsplit(full)
        if parts.scheme in ("data", "about", "blob"):
            continue
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            bad.append(url)
    return bad


def third_party_loads(base: str, page: str) -> tuple[list[str], list[str]]:
    parser = _Loads()
    parser.feed(page)
    return _third_party(base, parser.loads), parser.links


def test_the_checker_catches_bentomls_own_index_page() -> None:
    # The page BentoML serves at / by default: Tag Manager's script and iframe.
    import _bentoml_impl.server as impl

    page = (Path(impl.__file__).parent / "main-openapi.html").read_text()
    bad, _ = third_party_loads("http://127.0.0.1:3000/", page)
    assert any("googletagmanager.com/gtm.js" in url for url in bad)
    assert any("googletagmanager.com/ns.html" in url for url in bad)
    assert _third_party("http://127.0.0.1/", ["//cdn.example.com/x.js", "/a.css", "b.png"]) == [
        "//cdn.example.com/x.js"
    ]


def test_no_page_loads_anything_from_another_host(server: Server) -> None:
    # Every HTML page reachable from / by its local links, and the usual docs paths.
    queue = ["/", "/docs", "/ui", "/index.html", "/static_content/", "/static_content/index.html"]
    seen: set[str] = set()
    pages = 0
    while queue:
        url = urljoin(server.url + "/", queue.pop(0))
        if url in seen or urlsplit(url).hostname != "127.0.0.1":
            continue
        seen.add(url)
        resp = requests.get(url, timeout=30)
        if resp.status_code != 200 or not resp.headers["content-type"].startswith("text/html"):
            continue
        pages += 1
        bad, links = third_party_loads(url, resp.text)
        assert bad == [], (url, bad)
        # Local stylesheets and scripts it loads must not reach out either.
        parser = _Loads()
        parser.feed(resp.text)
        for asset in parser.loads:
            asset_resp = requests.get(urljoin(url, asset), timeout=30)
            assert asset_resp.status_code == 200, asset
            if "css" in asset_resp.headers.get("content-type", ""):
                found = [a or b for a, b in CSS_URL.findall(asset_resp.text)]
                assert _third_party(asset_resp.url, found) == [], asset
        queue += links
    assert pages >= 1 and server.url + "/" in seen

    index = requests.get(server.url + "/", timeout=30)
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert "default-src 'none'" in index.headers["content-security-policy"]
    routes = ("/predict", "/recommend", "/similar_items", "/feedback", "/model_info")
    for route in (*routes, "docs.json"):
        assert route in index.text
    # The OpenAPI schema is still served.
    spec = requests.get(server.url + "/docs.json", timeout=30)
    assert spec.status_code == 200
    assert set(routes) <= set(spec.json()["paths"])
    assert requests.head(server.url + "/", timeout=30).status_code == 200


# --- 6. a champion that cannot load --------------------------------------------------------------


def _truncate_the_model(home: Path) -> str:
    (model_file,) = home.joinpath("models").rglob("model.keras")
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    return "model.keras is damaged (truncated or corrupt"


def _change_one_byte_of_the_vocabulary(home: Path) -> str:
    (vocab,) = home.joinpath("models").rglob("vocab.json")
    change_first_user_id(vocab)
    return f"{vocab}: changed since the model was saved"


@pytest.mark.parametrize("damage", [_truncate_the_model, _change_one_byte_of_the_vocabulary])
def test_a_damaged_champion_ends_bentoml_serve_with_a_one_line_error(
    packaged: Packaged, tmp_path: Path, damage: Any
) -> None:
    home = tmp_path / "bentoml"
    shutil.copytree(
        packaged.bentoml_home, home, ignore=shutil.ignore_patterns("prometheus_multiproc_dir")
    )
    says = damage(home)
    env = {**env_for_children(packaged), "BENTOML_HOME": str(home)}
    env.pop("BENTOML_CONTAINERIZED", None)  # the service itself must turn restarts off
    port = free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    args = [sys.executable, "-m", "bentoml", "serve", packaged.record["bento"]]
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [*args, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            cwd=tmp_path,
        )
    started = time.monotonic()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bentoml serve still running after 60 s:\n{err.read_text()[-3000:]}")
    finally:
        stop(proc)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    errors = [line for line in err.read_text().splitlines() if "[recommender]" in line]
    assert len(errors) == 1, err.read_text()[-3000:]
    (line,) = errors
    assert "[ERROR]" in line and packaged.record["bento_model"] in line
    assert says in line
    # One worker start, not a restart loop.
    assert "cannot load" not in out.read_text()
    assert err.read_text().count("cannot load the model") == 1
    # Nothing listens on the port any more.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert elapsed < 60


# --- the log filter, in-process -----------------------------------------------------------------


def test_the_log_filter_drops_only_client_error_tracebacks(service_module: Any) -> None:
    # service_module: the service imported in this process, which installs the filter.
    from bentoml.exceptions import InternalServerError, InvalidArgument, NotFound
    from pydantic import BaseModel, ValidationError

    from recommender.serving import http
    from recommender.serving.bentoml_internals import request_error_logger

    class Model(BaseModel):
        x: int

    with pytest.raises(ValidationError) as invalid:
        Model.model_validate({"x": "a"})

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("bentoml", logging.ERROR, "", 0, "Exception", (), info)

    keep = http.NoClientErrorTracebacks().filter
    assert not keep(record(InvalidArgument("bad k")))
    assert not keep(record(NotFound("no such item")))
    assert not keep(record(invalid.value))
    assert keep(record(RuntimeError("a bug")))
    assert keep(record(InternalServerError("a bug")))
    assert keep(record(None))
    # Installed on the logger BentoML reports request exceptions with.
    bentoml_logger = request_error_logger()
    assert any(isinstance(f, http.NoClientErrorTracebacks) for f in bentoml_logger.filters)
