"""The inference log sent over OTLP (``serve.inference_log_exporter: otlp``), against a real
``bentoml serve`` and a loopback OTLP/HTTP receiver in the test (it decodes each ``POST
/v1/logs`` as OpenTelemetry's protobuf ``ExportLogsServiceRequest``).

The Bento is built by the package stage's code with the collector's endpoint, and served from a
folder and a BentoML home of its own. The tests run in order: records reach the collector, then
the collector goes away and the service answers all the same.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from serving_helpers import Packaged, bento_with, errors_counted, serve_in
from support import Server, free_port, stop

from recommender.serving.inference_log import COLUMNS

pytestmark = pytest.mark.slow

#: BentoML's own columns in every record, after the monitor's (as in the file log).
BENTOML_COLUMNS = ("timestamp", "request_id", "trace_id")


def plain(value: Any) -> Any:
    """An OTLP ``AnyValue`` as the Python value it encodes."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind)


class Collector:
    """A loopback OTLP/HTTP logs receiver: every log record it was sent, decoded, as
    ``{"resource": {...}, "scope": name, "body": ...}``."""

    def __init__(self, port: int) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        self.records: list[dict[str, Any]] = []
        self.posts: list[str] = []
        lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    data = gzip.decompress(data)
                with lock:
                    received.posts.append(f"{self.path} {self.headers.get('Content-Type')}")
                if self.path != "/v1/logs":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportLogsServiceRequest.FromString(data)
                found = []
                for resource_logs in request.resource_logs:
                    resource = {a.key: plain(a.value) for a in resource_logs.resource.attributes}
                    for scope_logs in resource_logs.scope_logs:
                        for record in scope_logs.log_records:
                            body = plain(record.body)
                            found.append(
                                {"resource": resource, "scope": scope_logs.scope.name, "body": body}
                            )
                with lock:
                    received.records.extend(found)
                reply = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def data(self, monitor: str) -> dict[str, dict[str, Any]]:
        """``monitor``'s records by ``x_request_id``."""
        scope = f"bentoml_monitor_data.{monitor}"
        return {r["body"]["x_request_id"]: r for r in list(self.records) if r["scope"] == scope}


@dataclass(frozen=True)
class Otlp:
    """A server whose inference log goes to a loopback collector."""

    server: Server
    collector: Collector
    folder: Path  # where the server runs
    bento: str


@pytest.fixture(scope="module")
def otlp(packaged: Packaged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Otlp]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/logs"
    bento = bento_with(packaged, inference_log_exporter="otlp", otlp_endpoint=endpoint)
    collector = Collector(port)
    folder = tmp_path_factory.mktemp("otlp")
    try:
        server = serve_in(packaged, folder, bento)
    except BaseException:
        collector.close()
        raise
    try:
        yield Otlp(server, collector, folder, bento)
    finally:
        stop(server.proc)
        collector.close()


def post(server: Server, endpoint: str, body: Any, request_id: str) -> requests.Response:
    headers = {"X-Request-ID": request_id}
    return requests.post(f"{server.url}/{endpoint}", json=body, headers=headers, timeout=30)


def test_only_an_otlp_bento_installs_the_exporter(otlp: Otlp, packaged: Packaged) -> None:
    import bentoml

    from recommender.serving import bento_contents

    def pins(bento: str) -> dict[str, str]:
        return bento_contents.read_pins(
            Path(bentoml.bentos.get(bento).path) / "env" / "python" / "requirements.txt"
        )

    exporter = bento_contents.read_pins(bento_contents.FOLDER / "otlp.txt")
    assert "opentelemetry-exporter-otlp-proto-http" in exporter
    assert exporter.items() <= pins(otlp.bento).items()
    assert "opentelemetry-exporter-otlp-proto-http" not in pins(packaged.record["bento"])


def test_each_answer_reaches_the_collector_as_the_file_logs_record(
    otlp: Otlp, packaged: Packaged
) -> None:
    server, collector, folder = otlp.server, otlp.collector, otlp.folder
    train = packaged.processed.train
    user, item = int(train["user_id"].iloc[0]), int(train["item_id"].iloc[0])
    started = time.time()
    rec = post(server, "recommend", {"user_id": user, "k": 4}, "otlp-rec")
    sim = post(server, "similar_items", {"item_id": item, "k": 3}, "otlp-sim")
    pred = post(server, "predict", {"pairs": [{"user_id": user, "item_id": item}]}, "otlp-pred")
    fb_body = {"user_id": user, "item_id": item, "event": "click", "request_id": "otlp-rec"}
    fb = post(server, "feedback", fb_body, "otlp-fb")
    assert [r.status_code for r in (rec, sim, pred, fb)] == [200, 200, 200, 200]
    sent = {"recommend": "otlp-rec", "similar_items": "otlp-sim", "predict": "otlp-pred",
            "feedback": "otlp-fb"}  # fmt: skip

    deadline = time.monotonic() + 30  # the exporter sends its queue every second
    while time.monotonic() < deadline:
        if all(rid in collector.data(name) for name, rid in sent.items()):
            break
        time.sleep(0.2)
    got = {name: collector.data(name).get(rid) for name, rid in sent.items()}
    assert all(got.values()), (got, collector.posts, server.log.read_text()[-3000:])
    assert set(collector.posts) == {"/v1/logs application/x-protobuf"}

    model = {
        "model_name": packaged.params.tracking.registered_model,
        "model_version": packaged.version,
    }
    for name, record in got.items():
        body = record["body"]
        columns = tuple(c for c, _, _ in COLUMNS[name])
        assert tuple(body) == (*columns, *BENTOML_COLUMNS), body
        assert {k: body[k] for k in model} == model
        assert started - 1 <= body["time"] <= time.time() + 1
        assert record["resource"]["service.name"] == "recommender"

    body = got["recommend"]["body"]
    assert (body["user_id"], body["k"], body["exclude_rated"]) == (user, 4, True)
    assert body["items"] == [i["item_id"] for i in rec.json()["items"]]
    assert body["scores"] == [i["score"] for i in rec.json()["items"]]
    assert body["cold_start"] is False and body["genres"] is None
    body = got["similar_items"]["body"]
    assert (body["item_id"], body["k"], body["unknown_item"]) == (item, 3, False)
    assert body["items"] == [i["item_id"] for i in sim.json()["items"]]
    body = got["predict"]["body"]
    assert body["user_ids"] == [user] and body["item_ids"] == [item]
    assert body["scores"] == [p["rating"] for p in pred.json()["predictions"]]
    body = got["feedback"]["body"]
    assert (body["user_id"], body["item_id"], body["event"]) == (user, item, "click")
    assert body["rating"] is None and body["served_request_id"] == "otlp-rec"

    # Each monitor's schema, once per worker, under a scope of its own.
    for name in sent:
        schemas = [r for r in collector.records if r["scope"] == f"bentoml_monitor_schema.{name}"]
        assert len(schemas) == 1, schemas
        assert [c["name"] for c in schemas[0]["body"]["columns"]] == list(
            c for c, _, _ in COLUMNS[name]
        )
    # The records went to the collector only: no log files where the server runs.
    assert not (folder / packaged.params.serve.log_dir).exists()
    assert not [*folder.rglob("data.*.log*"), *folder.rglob("schema.*.log*")]
    assert errors_counted(server) == 0


def test_with_the_collector_down_answers_are_200_and_lost_records_counted(
    otlp: Otlp, packaged: Packaged
) -> None:
    server, collector = otlp.server, otlp.collector
    collector.close()  # the port now refuses connections
    train = packaged.processed.train
    user, item = int(train["user_id"].iloc[0]), int(train["item_id"].iloc[0])
    before = errors_counted(server)
    calls = [
        ("recommend", {"user_id": user, "k": 3}),
        ("similar_items", {"item_id": item}),
        ("predict", {"pairs": [{"user_id": user, "item_id": item}]}),
        ("feedback", {"user_id": user, "item_id": item, "event": "view"}),
    ] * 5
    took = []
    for i, (name, body) in enumerate(calls):
        started = time.perf_counter()
        resp = post(server, name, body, f"down-{i}")
        took.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-request-id"] == f"down-{i}"
    assert max(took) < 2.0, took  # queued, never sent in the request's time

    # The exporter gives a batch up after its retries (about 7 s on a refused connection).
    deadline = time.monotonic() + 60
    while errors_counted(server) < before + len(calls) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert errors_counted(server) == before + len(calls)
    time.sleep(0.5)  # let the server's output reach its log
    text = server.log.read_text()
    warnings = [line for line in text.splitlines() if "inference log: cannot write" in line]
    assert len(warnings) == 1, warnings
    assert "[WARNING]" in warnings[0] and "OTLP collector at http://127.0.0.1:" in warnings[0]
    assert "Traceback" not in text, text[-3000:]


def test_a_full_queue_drops_and_counts_records_instead_of_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recommender.serving import inference_errors, inference_otlp

    counted: list[int] = []

    class Counter:
        def inc(self, amount: int = 1) -> None:
            counted.append(amount)

    monkeypatch.setattr(inference_errors.WriteErrors, "counter", Counter())
    monkeypatch.setattr(inference_errors.WriteErrors, "warned", True)  # no warning line here
    monkeypatch.setattr(inference_otlp, "QUEUE_SIZE", 3)
    port = free_port()
    collector = Collector(port)
    try:
        handler = inference_otlp.OTLPHandler(f"http://127.0.0.1:{port}/v1/logs")
        logger = logging.getLogger("bentoml_monitor_data.queue_test")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            # Faster than the batch thread (it sends every second): three wait, seven are dropped.
            for n in range(10):
                logger.info({"x_request_id": f"q{n}", "k": n})
            assert sum(counted) == 7 and handler.queued == 3
            handler.provider.shutdown()  # sends what waits
        finally:
            logger.removeHandler(handler)
    finally:
        collector.close()
    assert sorted(collector.data("queue_test")) == ["q0", "q1", "q2"]
    assert collector.data("queue_test")["q1"]["body"] == {"x_request_id": "q1", "k": 1}
    assert sum(counted) == 7 and handler.queued == 0
