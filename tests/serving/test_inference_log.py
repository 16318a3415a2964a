"""Issue 23's service side, against a real ``bentoml serve`` on 127.0.0.1: every response's
``X-Request-ID``, the inference log (``bentoml.monitor``, one JSON line per call, the columns of
``/tmp/loop/contract.md``), and ``POST /feedback``.

The session's server runs in the packaged champion's folder with ``serve.log_dir`` relative
(``logs/inference``), so its log is there; the tests that kill a server, break its log folder or
turn the log off start one of their own, in a folder of their own, with a BentoML home of its own
(a second server on the same home would wipe the first one's Prometheus files). The log sent over
OTLP is ``test_inference_otlp.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from serving_helpers import Packaged, bento_with, errors_counted, serve_in
from support import Server, child_env, stop

pytestmark = pytest.mark.slow

#: BentoML's own columns in every record (not relied on by the readers).
BENTOML_COLUMNS = ("timestamp", "request_id", "trace_id")
COMMON = ("x_request_id", "time", "latency_ms", "model_name", "model_version")
#: The contract's columns, per monitor.
CONTRACT = {
    "recommend": (
        *COMMON,
        *("user_id", "k", "exclude_rated", "genres", "items", "scores", "cold_start"),
    ),
    "similar_items": (*COMMON, "item_id", "k", "items", "scores", "unknown_item"),
    "predict": (*COMMON, "user_ids", "item_ids", "scores", "unknown_users", "unknown_items"),
    "feedback": (
        *COMMON,
        *("user_id", "item_id", "rating", "event", "event_time", "served_request_id"),
    ),
}
HEX_ID = r"[0-9a-f]{32}"


def post(server: Server, endpoint: str, body: Any, **headers: str) -> requests.Response:
    return requests.post(f"{server.url}/{endpoint}", json=body, headers=headers, timeout=30)


def read_log(log_dir: Path, name: str) -> tuple[list[dict], list[str]]:
    """A monitor's records from every data file, and the lines that are not a whole JSON record.

    Only a file's last line may be cut short (a server killed while writing it); any other bad
    line fails here.
    """
    records, cut = [], []
    files = sorted((log_dir / name / "data").glob("data.*.log*"))
    for file in files:
        text = file.read_text()
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                last = i == len(lines) - 1  # no newline after it: the write was cut short
                assert last, f"{file}: line {i + 1} is damaged and is not the last: {line[:200]}"
                cut.append(line)
    return records, cut


def by_request_id(log_dir: Path, name: str) -> dict[str, dict]:
    records, cut = read_log(log_dir, name)
    assert cut == []
    for record in records:
        assert tuple(record) == (*CONTRACT[name], *BENTOML_COLUMNS), record
    return {r["x_request_id"]: r for r in records}


def _known(packaged: Packaged) -> tuple[int, int]:
    train = packaged.processed.train
    return int(train["user_id"].iloc[0]), int(train["item_id"].iloc[0])


# --- X-Request-ID --------------------------------------------------------------------------------


def test_every_response_carries_a_request_id_and_keeps_a_valid_client_one(server: Server) -> None:
    user = {"user_id": 1, "k": 2}
    responses = [
        post(server, "recommend", user),  # 200
        post(server, "recommend", {"user_id": 1, "k": 0}),  # 400 (validation)
        post(server, "similar_items", {"item_id": 10**12}),  # 404 (raised by our code)
        requests.get(f"{server.url}/recommend", timeout=30),  # 405
        requests.get(f"{server.url}/no-such-page", timeout=30),  # 404 (Starlette's)
        requests.get(f"{server.url}/healthz", timeout=30),
        requests.get(f"{server.url}/metrics", timeout=30),
        requests.get(f"{server.url}/", timeout=30),  # the Swagger UI page
    ]
    assert [r.status_code for r in responses] == [200, 400, 404, 405, 404, 200, 200, 200]
    ids = [r.headers.get("x-request-id", "") for r in responses]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids), ids
    assert len(set(ids)) == len(ids)

    own = "client-7.a:B_9"
    assert post(server, "recommend", user, **{"X-Request-ID": own}).headers["x-request-id"] == own
    longest = "x" * 128
    got = post(server, "recommend", user, **{"X-Request-ID": longest}).headers["x-request-id"]
    assert got == longest
    for bad in ("x" * 129, "has space", "semi;colon", "é"):
        resp = requests.post(
            f"{server.url}/recommend",
            json=user,
            headers={"X-Request-ID": bad.encode("utf-8")},  # type: ignore[dict-item]
            timeout=30,
        )
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] != bad and len(resp.headers["x-request-id"]) == 32


# --- the log -------------------------------------------------------------------------------------


def test_each_answer_is_one_record_under_its_request_id(server: Server, packaged: Packaged) -> None:
    log_dir = packaged.root / "logs" / "inference"  # serve.log_dir, relative to the server's cwd
    user, item = _known(packaged)
    started = time.time()
    rec = post(server, "recommend", {"user_id": user, "k": 4}, **{"X-Request-ID": "mine-1"})
    cold = post(server, "recommend", {"user_id": 10**12, "k": 3, "exclude_rated": False})
    sim = post(server, "similar_items", {"item_id": item, "k": 3})
    unknown = post(server, "similar_items", {"item_id": 10**12, "k": 3})
    pairs = [{"user_id": user, "item_id": item}, {"user_id": 10**12, "item_id": -1}]
    pred = post(server, "predict", {"pairs": pairs})
    rating = float(packaged.bundle.scale.max)
    fb_body = {"user_id": user, "item_id": item, "rating": rating, "timestamp": 1_700_000_000}
    fb = post(server, "feedback", {**fb_body, "request_id": "mine-1"})
    fb_event = post(server, "feedback", {"user_id": 10**12, "item_id": -7, "event": "click"})
    ended = time.time()
    statuses = [r.status_code for r in (rec, cold, sim, unknown, pred, fb, fb_event)]
    assert statuses == [200, 200, 200, 404, 200, 200, 200]
    assert rec.headers["x-request-id"] == "mine-1"

    model = {
        "model_name": packaged.params.tracking.registered_model,
        "model_version": packaged.version,
    }

    def check(record: dict, resp: requests.Response) -> None:
        assert record["x_request_id"] == resp.headers["x-request-id"]
        assert started - 1 <= record["time"] <= ended + 1
        assert 0 <= record["latency_ms"] <= (ended - started) * 1000
        assert {k: record[k] for k in model} == model

    recommend = by_request_id(log_dir, "recommend")
    for resp, body in ((rec, {"user_id": user, "k": 4}), (cold, {"user_id": 10**12, "k": 3})):
        record = recommend[resp.headers["x-request-id"]]
        check(record, resp)
        answer = resp.json()
        assert record["user_id"] == body["user_id"] and record["k"] == body["k"]
        assert record["items"] == [i["item_id"] for i in answer["items"]]
        assert record["scores"] == [i["score"] for i in answer["items"]]
        assert record["cold_start"] is answer["cold_start"]
        assert record["genres"] is None
    assert recommend["mine-1"]["exclude_rated"] is True
    assert recommend[cold.headers["x-request-id"]]["exclude_rated"] is False
    assert recommend[cold.headers["x-request-id"]]["cold_start"] is True

    similar = by_request_id(log_dir, "similar_items")
    record = similar[sim.headers["x-request-id"]]
    check(record, sim)
    assert record["item_id"] == item and record["k"] == 3 and record["unknown_item"] is False
    assert record["items"] == [i["item_id"] for i in sim.json()["items"]]
    assert record["scores"] == [i["score"] for i in sim.json()["items"]]
    record = similar[unknown.headers["x-request-id"]]
    check(record, unknown)
    assert record["unknown_item"] is True and record["items"] == [] and record["scores"] == []

    record = by_request_id(log_dir, "predict")[pred.headers["x-request-id"]]
    check(record, pred)
    got = pred.json()["predictions"]
    assert record["user_ids"] == [user, 10**12] and record["item_ids"] == [item, -1]
    assert record["scores"] == [p["rating"] for p in got]
    assert (record["unknown_users"], record["unknown_items"]) == (1, 1)

    feedback = by_request_id(log_dir, "feedback")
    for resp in (fb, fb_event):
        assert resp.json() == {"request_id": resp.headers["x-request-id"], "accepted": True}
        check(feedback[resp.headers["x-request-id"]], resp)
    record = feedback[fb.headers["x-request-id"]]
    assert (record["user_id"], record["item_id"], record["rating"]) == (user, item, rating)
    assert record["event"] is None and record["event_time"] == 1_700_000_000.0
    assert record["served_request_id"] == "mine-1"
    record = feedback[fb_event.headers["x-request-id"]]
    assert (record["user_id"], record["item_id"], record["event"]) == (10**12, -7, "click")
    assert record["rating"] is None and record["served_request_id"] is None
    assert record["event_time"] == record["time"]


def test_the_schema_is_written_once_per_worker_with_the_contract_columns(
    server: Server, packaged: Packaged
) -> None:
    log_dir = packaged.root / "logs" / "inference"
    user, item = _known(packaged)
    assert post(server, "recommend", {"user_id": user}).status_code == 200
    assert post(server, "similar_items", {"item_id": item}).status_code == 200
    assert post(server, "predict", {"pairs": [{"user_id": user, "item_id": item}]}).ok
    assert post(server, "feedback", {"user_id": user, "item_id": item, "event": "view"}).ok
    for name, columns in CONTRACT.items():
        (schema,) = (log_dir / name / "schema").glob("schema.*.log")
        lines = schema.read_text().splitlines()
        assert len(lines) == 1, lines
        assert [c["name"] for c in json.loads(lines[0])["columns"]] == list(columns)
        data = sorted((log_dir / name / "data").glob("data.*.log"))
        assert [p.name.split(".")[1] for p in data] == [schema.name.split(".")[1]]
    # Nowhere else: not in the Bento's folder of the store (the worker's import directory).
    assert not list(packaged.bentoml_home.rglob("data.*.log"))


# --- /feedback's input ---------------------------------------------------------------------------


def _feedback_cases(packaged: Packaged) -> list[tuple[str, dict[str, Any] | str, str]]:
    scale = packaged.bundle.scale
    ok = {"user_id": 1, "item_id": 2}
    return [
        ("neither", ok, "rating or event"),
        ("both null", {**ok, "rating": None, "event": None}, "rating or event"),
        ("over the scale", {**ok, "rating": scale.max + scale.step}, "rating"),
        ("under the scale", {**ok, "rating": scale.min - scale.step}, "rating"),
        ("between steps", {**ok, "rating": scale.min + scale.step / 2}, "rating"),
        ("rating as text", {**ok, "rating": "5"}, "rating"),
        ("rating as bool", {**ok, "rating": True}, "rating"),
        ("rating NaN", '{"user_id": 1, "item_id": 2, "rating": NaN}', "rating"),
        ("user id as text", {**ok, "user_id": "1", "event": "view"}, "user_id"),
        ("item id float", {**ok, "item_id": 2.5, "event": "view"}, "item_id"),
        ("missing item", {"user_id": 1, "event": "view"}, "item_id"),
        ("extra field", {**ok, "event": "view", "comment": "nice"}, "comment"),
        ("unknown event", {**ok, "event": "like"}, "event"),
        ("negative time", {**ok, "event": "view", "timestamp": -1}, "timestamp"),
        ("time as text", {**ok, "event": "view", "timestamp": "2024-01-01"}, "timestamp"),
        ("empty request id", {**ok, "event": "view", "request_id": ""}, "request_id"),
        ("long request id", {**ok, "event": "view", "request_id": "x" * 129}, "request_id"),
        ("request id number", {**ok, "event": "view", "request_id": 7}, "request_id"),
    ]


def test_feedback_refuses_bad_input_with_a_400_naming_the_field(
    server: Server, packaged: Packaged
) -> None:
    for case, body, field in _feedback_cases(packaged):
        if isinstance(body, str):
            resp = requests.post(
                f"{server.url}/feedback",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
        else:
            resp = post(server, "feedback", body)
        assert resp.status_code == 400, (case, resp.text)
        assert set(resp.json()) >= {"error"} and field in resp.json()["error"], (case, resp.text)
        assert len(resp.headers["x-request-id"]) == 32


def test_feedback_takes_unknown_ids_events_and_times(server: Server, packaged: Packaged) -> None:
    scale = packaged.bundle.scale
    new = {"user_id": 10**12 + 1, "item_id": 10**12 + 2}
    bodies = [
        {**new, "rating": scale.min},
        {**new, "rating": scale.max, "event": "rate", "timestamp": 0},
        {**new, "event": "purchase", "timestamp": 1_700_000_000.5, "request_id": "r" * 128},
        *({**new, "event": event} for event in ("click", "view", "add_to_cart", "skip")),
    ]
    for body in bodies:
        resp = post(server, "feedback", body)
        assert resp.status_code == 200, (body, resp.text)
        assert resp.json() == {"request_id": resp.headers["x-request-id"], "accepted": True}


# --- a killed server -----------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_server_leaves_every_answered_record_whole(
    packaged: Packaged, tmp_path: Path
) -> None:
    server = serve_in(packaged, tmp_path)
    user, item = _known(packaged)
    calls = [
        ("recommend", {"user_id": user, "k": 10}),
        ("predict", {"pairs": [{"user_id": user, "item_id": item}] * 200}),  # a long line
        ("similar_items", {"item_id": item, "k": 10}),
        ("feedback", {"user_id": user, "item_id": item, "event": "view"}),
    ]
    answered: dict[str, list[str]] = {name: [] for name, _ in calls}
    stop_sending = threading.Event()

    def client(offset: int) -> None:
        with requests.Session() as session:
            i = offset
            while not stop_sending.is_set():
                name, body = calls[i % len(calls)]
                i += 1
                try:
                    resp = session.post(f"{server.url}/{name}", json=body, timeout=10)
                except requests.RequestException:
                    return  # the server is gone
                if resp.status_code == 200:
                    answered[name].append(resp.headers["x-request-id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    # The workers, which write the log: BentoML starts each in a process group of its own, so
    # killing the server's group would leave them running.
    workers = children(server.proc.pid)
    assert workers
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while sum(map(len, answered.values())) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in workers:  # mid-traffic: the clients are still sending
            os.kill(pid, signal.SIGKILL)
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
    finally:
        stop_sending.set()
        for t in threads:
            t.join(timeout=30)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop(server.proc)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    assert sum(map(len, answered.values())) >= 400, {k: len(v) for k, v in answered.items()}
    log_dir = tmp_path / "logs" / "inference"
    for name, ids in answered.items():
        records, cut = read_log(log_dir, name)  # fails on a damaged line that is not the last
        assert len(cut) <= len(list((log_dir / name / "data").glob("data.*.log*")))
        for record in records:
            assert tuple(record) == (*CONTRACT[name], *BENTOML_COLUMNS)
        # Written before its answer was sent: every answered request is in the log.
        logged = {r["x_request_id"] for r in records}
        assert set(ids) <= logged, (name, len(set(ids) - logged))
        assert ids, name


# --- an unwritable log ---------------------------------------------------------------------------


def test_an_unwritable_log_still_answers_counts_and_warns_once(
    packaged: Packaged, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs" / "inference"
    log_dir.mkdir(parents=True)
    # predict's folder cannot be made (a file is in the way): bentoml.monitor itself raises.
    (log_dir / "predict").write_text("not a folder\n")
    # recommend's data file is a full disk: every write of a record fails (logging's handleError).
    data = log_dir / "recommend" / "data"
    data.mkdir(parents=True)
    for worker in range(4):  # whichever index the worker has
        (data / f"data.{worker}.log").symlink_to("/dev/full")
    server = serve_in(packaged, tmp_path)
    try:
        user, item = _known(packaged)
        before = errors_counted(server)
        for _ in range(5):
            assert post(server, "recommend", {"user_id": user, "k": 3}).status_code == 200
            pairs = [{"user_id": user, "item_id": item}]
            assert post(server, "predict", {"pairs": pairs}).status_code == 200
        assert errors_counted(server) == before + 10
        # The other monitors write as usual.
        fb = post(server, "feedback", {"user_id": user, "item_id": item, "event": "skip"})
        assert fb.status_code == 200
        assert fb.headers["x-request-id"] in by_request_id(log_dir, "feedback")
        assert errors_counted(server) == before + 10
        time.sleep(0.5)  # let the server's output reach its log
        text = server.log.read_text()
    finally:
        stop(server.proc)
    # One line for the process (its first error: recommend's, sent first), no traceback.
    warnings = [line for line in text.splitlines() if "inference log: cannot write" in line]
    assert len(warnings) == 1, warnings
    assert "[WARNING]" in warnings[0]
    assert "recommend/data/data." in warnings[0] and "No space left on device" in warnings[0]
    assert "Traceback" not in text, text[-3000:]


def test_with_the_log_off_nothing_is_written_and_every_answer_still_has_its_id(
    packaged: Packaged, tmp_path: Path
) -> None:
    server = serve_in(packaged, tmp_path, bento_with(packaged, inference_log=False))
    try:
        user, item = _known(packaged)
        calls = [
            ("recommend", {"user_id": user, "k": 3}),
            ("recommend", {"user_id": 10**12, "k": 3}),  # cold start
            ("similar_items", {"item_id": item, "k": 3}),
            ("similar_items", {"item_id": 10**12}),  # 404, logged when the log is on
            ("predict", {"pairs": [{"user_id": user, "item_id": item}]}),
            ("feedback", {"user_id": user, "item_id": item, "event": "click"}),
            ("model_info", {}),
        ]
        responses = [post(server, name, body, **{"X-Request-ID": f"off-{i}"})
                     for i, (name, body) in enumerate(calls)]  # fmt: skip
        assert [r.status_code for r in responses] == [200, 200, 200, 404, 200, 200, 200]
        assert [r.headers["x-request-id"] for r in responses] == [
            f"off-{i}" for i in range(len(calls))
        ]
        assert responses[5].json() == {"request_id": "off-5", "accepted": True}
        assert errors_counted(server) == 0
    finally:
        stop(server.proc)
    # Not under serve.log_dir (relative to where the server ran), nor anywhere else it could reach.
    assert not (tmp_path / packaged.params.serve.log_dir).exists()
    written = [*tmp_path.rglob("data.*.log*"), *tmp_path.rglob("schema.*.log*")]
    assert written == [], written


def test_the_x_request_id_is_unique_per_request(server: Server) -> None:
    ids = {post(server, "recommend", {"user_id": 1}).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == 32 for i in ids)
    assert uuid.UUID(hex=next(iter(ids))).version == 4


# --- the exporter, in a process of its own -----------------------------------------------------

#: The service's monitoring config on a class of its own; records of three monitors written in
#: turn through InferenceLog, predict's on a full disk; prints the errors counted.
MONITORS = """
import json, os
from types import SimpleNamespace as NS
import bentoml
from recommender.serving import inference_log as il

class Counter:
    n = 0
    def inc(self, amount=1):
        Counter.n += amount

il.install(Counter())
@bentoml.service(monitoring=il.monitoring_config(True, "logs"))
class Probe:
    pass

Probe.inject_config()  # as bentoml serve does in each worker

os.makedirs("logs/predict/data")
os.symlink("/dev/full", "logs/predict/data/data.0.log")
log = il.InferenceLog(True, "model", "3")
log.enabled = True  # outside a bentoml serve worker
request = {"user_id": 1, "k": 1, "exclude_rated": True, "genres": None}
answer = NS(items=[NS(item_id=5, score=0.5)], cold_start=False)
pair = NS(user_id=1, item_id=5, rating=4.0, unknown_user=False, unknown_item=False)
event = {"user_id": 2, "item_id": 6, "event": "view"}
writes = [
    lambda n: log.recommend(il.Clock(), f"r{n}", request, answer),
    lambda n: log.feedback(il.Clock(), f"f{n}", event),
    lambda n: log.predict(il.Clock(), f"p{n}", NS(predictions=[pair])),
]
for n in range(2):
    for write in writes:
        write(n)
print(json.dumps({"errors": Counter.n}))
"""


def test_each_monitor_writes_its_own_files_and_a_full_disk_is_counted(tmp_path: Path) -> None:
    # BentoML 1.4.40's DefaultMonitor would send recommend's second record to feedback's file
    # (its loggers are shared by every monitor); InferenceMonitor gives each its own files.
    proc = subprocess.run(
        [sys.executable, "-c", MONITORS],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"errors": 2}
    log_dir = tmp_path / "logs"
    for name, ids in (("recommend", {"r0", "r1"}), ("feedback", {"f0", "f1"})):
        records = by_request_id(log_dir, name)
        assert set(records) == ids
        models = {(r["model_name"], r["model_version"]) for r in records.values()}
        assert models == {("model", "3")}
    assert (log_dir / "predict" / "data" / "data.0.log").resolve() == Path("/dev/full")
    assert (log_dir / "predict" / "schema" / "schema.0.log").is_file()
    warnings = [line for line in proc.stderr.splitlines() if "inference log: cannot write" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_logging_config_is_bentomls_default_with_our_handler() -> None:
    import yaml
    from bentoml._internal.monitoring.default import DEFAULT_CONFIG_YAML

    from recommender.serving import inference_log

    ours = yaml.safe_load(inference_log.LOG_CONFIG.read_text())
    theirs = yaml.safe_load(DEFAULT_CONFIG_YAML)
    handler = f"{inference_log.__name__}.{inference_log.InferenceLogHandler.__name__}"
    for name, config in ours["handlers"].items():
        assert config.pop("class") == handler and config.pop("delay") is True
        theirs["handlers"][name].pop("class")
        theirs["handlers"][name].setdefault("when", "D")  # the schema's handler now rotates too
    assert ours["formatters"]["bentoml_json"].pop("class") == "pythonjsonlogger.json.JsonFormatter"
    assert theirs["formatters"]["bentoml_json"].pop("class").endswith(".JsonFormatter")
    assert ours == theirs
