"""The built Bento behind a real ``bentoml serve`` process, over HTTP on 127.0.0.1.

Parity with the offline code path (the same bundle, loaded by the test), every kind of bad request
answered 4xx with a message, BentoML's health and metrics endpoints, and generated requests (from
hypothesis, and from schemathesis on the service's own OpenAPI schema) never getting a 5xx.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from serving_helpers import Packaged
from support import Server

pytestmark = pytest.mark.slow


def post(server: Server, endpoint: str, body: object, **kwargs: object) -> requests.Response:
    return requests.post(f"{server.url}/{endpoint}", json=body, timeout=30, **kwargs)


def test_predict_equals_the_offline_bundle_on_1000_test_pairs(
    server: Server, packaged: Packaged
) -> None:
    test = packaged.processed.test.head(1000)
    users, items = test["user_id"].tolist(), test["item_id"].tolist()
    pairs = [{"user_id": u, "item_id": i} for u, i in zip(users, items, strict=True)]
    resp = post(server, "predict", {"pairs": pairs})
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert len(got) == 1000
    assert [(p["user_id"], p["item_id"]) for p in got] == list(zip(users, items, strict=True))
    offline = packaged.bundle.predict_raw(users, items)
    np.testing.assert_allclose([p["rating"] for p in got], offline, atol=1e-5, rtol=0)
    bundle = packaged.bundle
    assert [p["unknown_user"] for p in got] == (bundle.user_index(users) == 0).tolist()
    assert [p["unknown_item"] for p in got] == (bundle.item_index(items) == 0).tolist()


def test_recommend_equals_the_offline_top_k(server: Server, packaged: Packaged) -> None:
    bundle = packaged.bundle
    users = packaged.processed.test["user_id"].drop_duplicates().head(30).tolist()
    known = [u for u in users if bundle.user_index([u])[0] > 0]
    offline = bundle.recommend(bundle.user_index(known), 10)
    for user, want_items, want_scores in zip(known, offline.items, offline.scores, strict=True):
        resp = post(server, "recommend", {"user_id": user, "k": 10})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["cold_start"] is False
        want = bundle.item_vocab.decode(want_items).tolist()
        assert [i["item_id"] for i in body["items"]] == want
        # float32 dot products: one user's and a batch's BLAS kernels sum in other orders, so
        # a small score can differ by an ulp of the largest terms (~1e-7), not of itself.
        np.testing.assert_allclose(
            [i["score"] for i in body["items"]], want_scores, rtol=1e-6, atol=1e-6
        )
    assert len(known) >= 20

    cold = post(server, "recommend", {"user_id": 10**12, "k": 3}).json()
    top = bundle.popular(np.array([0]), 3)  # user 0: unknown, has rated nothing
    assert cold["cold_start"] is True
    assert [i["item_id"] for i in cold["items"]] == bundle.item_vocab.decode(top.items[0]).tolist()


def test_similar_items_and_model_info(server: Server, packaged: Packaged) -> None:
    bundle = packaged.bundle
    item = int(packaged.processed.train["item_id"].iloc[0])
    body = post(server, "similar_items", {"item_id": item, "k": 5}).json()
    top = bundle.similar(int(bundle.item_index([item])[0]), 5)
    assert [i["item_id"] for i in body["items"]] == bundle.item_vocab.decode(top.items).tolist()

    info = post(server, "model_info", {}).json()
    assert info["version"] == packaged.version and info["alias"] == "champion"
    assert info["metrics"]["test_rmse"] == pytest.approx(packaged.record["metrics"]["test_rmse"])
    assert info["tags"]["version.gate.decision"] == "promoted"


BAD_REQUESTS = [
    # (endpoint, raw body, content type, expected status, a word the message must contain)
    ("recommend", '{"user_id": 1, "k": 101}', "application/json", 400, "less than or equal"),
    ("recommend", '{"user_id": 1, "k": 0}', "application/json", 400, "greater than"),
    ("recommend", '{"user_id": "abc"}', "application/json", 400, "integer"),
    ("recommend", '{"user_id": true}', "application/json", 400, "integer"),
    ("recommend", '{"user_id": 1.5}', "application/json", 400, "integer"),
    ("recommend", '{"k": 5}', "application/json", 400, "user_id"),
    ("recommend", '{"user_id": 1, "topk": 5}', "application/json", 400, "topk"),
    ("recommend", '{"user_id": 1, "genres": ["Nope"]}', "application/json", 400, "unknown genre"),
    ("recommend", '{"user_id": 1, "genres": "Drama"}', "application/json", 400, "list"),
    ("recommend", '{"user_id": 1, "exclude_rated": "maybe"}', "application/json", 400, "bool"),
    ("recommend", "{not json", "application/json", 400, "JSON"),
    ("recommend", "[1, 2]", "application/json", 400, "object"),
    ("recommend", "null", "application/json", 400, "object"),
    ("recommend", '{"user_id": 99999999999999999999}', "application/json", 400, "less than"),
    ("recommend", "user_id=1", "application/x-www-form-urlencoded", 415, "application/json"),
    ("recommend", "--x\r\n", "multipart/form-data; boundary=x", 415, "application/json"),
    ("predict", '{"pairs": []}', "application/json", 400, "at least 1"),
    ("predict", '{"pairs": [{"user_id": 1}]}', "application/json", 400, "item_id"),
    ("predict", '{"pairs": {"user_id": 1, "item_id": 2}}', "application/json", 400, "list"),
    ("predict", '{"pairs": [[1, 2]]}', "application/json", 400, "Pair"),
    ("similar_items", '{"item_id": 123456789}', "application/json", 404, "unknown to the model"),
    ("similar_items", '{"item_id": 1, "k": 1000}', "application/json", 400, "less than"),
    ("model_info", '{"verbose": true}', "application/json", 400, "verbose"),
]
# /feedback's hostile bodies: (raw JSON body, expected status, a word the message must contain).
BAD_FEEDBACK = [
    ('{"user_id": 1, "item_id": 2}', 400, "rating or event"),
    ('{"user_id": 1, "item_id": 2, "rating": null, "event": null}', 400, "rating or event"),
    ('{"user_id": 1, "item_id": 2, "rating": 99}', 400, "scale"),
    ('{"user_id": 1, "item_id": 2, "rating": 1e999}', 400, "finite"),
    ('{"user_id": 1, "item_id": 2, "event": "like"}', 400, "event"),
    ('{"user_id": 1, "item_id": 2, "event": "view", "timestamp": -5}', 400, "timestamp"),
    # Year 10**292: retraining would take it as the newest rating, and validate refuses it.
    ('{"user_id": 1, "item_id": 2, "event": "view", "timestamp": 1e300}', 400, "timestamp"),
    ('{"user_id": "a", "item_id": 2, "event": "view"}', 400, "integer"),
    ('{"user_id": 1, "item_id": 2, "event": "view", "why": 1}', 400, "why"),
    ('{"item_id": 2, "rating": 3}', 400, "user_id"),
    ('{"user_id": 1, "item_id": 2, "event": "view", "request_id": ""}', 400, "request_id"),
]
BAD_REQUESTS += [("feedback", b, "application/json", code, w) for b, code, w in BAD_FEEDBACK]
BAD_REQUESTS.append(
    ("feedback", "user_id=1&event=view", "application/x-www-form-urlencoded", 415, "json")
)


@pytest.mark.parametrize(("endpoint", "body", "ctype", "status", "word"), BAD_REQUESTS)
def test_bad_requests_get_4xx_with_a_message(
    server: Server, endpoint: str, body: str, ctype: str, status: int, word: str
) -> None:
    resp = requests.post(
        f"{server.url}/{endpoint}", data=body, headers={"Content-Type": ctype}, timeout=30
    )
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert isinstance(payload, dict) and "error" in payload  # one shape for every error
    assert word.lower() in resp.text.lower()


def test_too_many_pairs_and_huge_bodies_are_refused(server: Server) -> None:
    pairs = [{"user_id": 1, "item_id": 2}] * 1001
    resp = post(server, "predict", {"pairs": pairs})
    assert resp.status_code == 400 and "at most 1000" in resp.text
    huge = json.dumps({"pairs": [{"user_id": 1, "item_id": 2}] * 100_000})
    resp = requests.post(
        f"{server.url}/predict", data=huge, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert resp.status_code == 413 and "limit" in resp.json()["error"]


def test_health_metrics_and_the_unknown_id_counter(server: Server) -> None:
    for path in ("healthz", "livez", "readyz"):
        assert requests.get(f"{server.url}/{path}", timeout=10).status_code == 200

    def unknown_items() -> float:
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("recommender_unknown_ids_total") and (
                'endpoint="predict"' in line and 'kind="item"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = unknown_items()
    pairs = [{"user_id": 1, "item_id": -1}, {"user_id": 1, "item_id": -2}]
    assert post(server, "predict", {"pairs": pairs}).status_code == 200
    assert unknown_items() == before + 2
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "bentoml_service_request_total" in metrics


# --- generated requests ------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Known ids (1..200) often enough to get answers, and everything else.
IDS = st.integers(1, 200) | st.integers(-(2**64), 2**64) | st.text(max_size=10) | JSON
FIELDS = {
    "recommend": st.fixed_dictionaries(
        {"user_id": IDS},
        optional={"k": st.integers(-5, 200) | JSON, "exclude_rated": JSON, "genres": JSON},
    ),
    "similar_items": st.fixed_dictionaries({"item_id": IDS}, optional={"k": JSON}),
    "predict": st.fixed_dictionaries(
        {"pairs": st.lists(st.fixed_dictionaries({"user_id": IDS, "item_id": IDS}), max_size=5)}
    ),
    "model_info": st.just({}),
    "feedback": st.fixed_dictionaries(
        {"user_id": IDS, "item_id": IDS},
        optional={
            "rating": st.floats() | st.integers(-2, 8) | JSON,
            "event": st.sampled_from(["click", "view", "rate", "like", ""]) | JSON,
            "timestamp": st.floats() | st.integers(-(2**64), 2**64) | JSON,
            "request_id": st.text(max_size=200) | JSON,
        },
    ),
}
# Bodies shaped for their endpoint (with wrong values inside), and any JSON at all.
MATCHED = st.sampled_from(sorted(FIELDS)).flatmap(lambda e: st.tuples(st.just(e), FIELDS[e]))
BODIES = st.one_of(MATCHED, st.tuples(st.sampled_from(sorted(FIELDS)), JSON))


def test_generated_requests_never_get_a_5xx(server: Server) -> None:
    statuses: list[int] = []

    @settings(
        max_examples=250,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(request=BODIES)
    def send(request: tuple[str, object]) -> None:
        endpoint, body = request
        # As Python writes it: NaN and infinities as the bare tokens a hostile client can send.
        resp = requests.post(
            f"{server.url}/{endpoint}",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        statuses.append(resp.status_code)
        assert resp.status_code < 500, (endpoint, body, resp.text)
        if resp.status_code == 200 and endpoint in ("recommend", "similar_items"):
            assert isinstance(resp.json()["items"], list)

    send()
    assert len(statuses) >= 200
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)


def test_openapi_generated_requests_never_get_a_5xx(server: Server) -> None:
    # Schemathesis reads the service's own OpenAPI schema and generates valid and invalid bodies.
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json").include(method="POST")
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    statuses: list[int] = []

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(case=cases)
    def call(case: schemathesis.Case) -> None:
        resp = case.call_and_validate(checks=[not_a_server_error], timeout=30)
        statuses.append(resp.status_code)

    call()
    assert len(statuses) >= 200
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)
