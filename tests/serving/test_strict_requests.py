"""Every request field is strict: ``"5"`` is not a ``k``, ``"yes"`` not a boolean, ``true`` not a
number; the 400 names the field with pydantic's message. Ids keep the model's type (integers, or
strings for a model trained on text ids).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import requests
from serving_helpers import SERVING, Packaged, env_for_children
from support import Server

pytestmark = pytest.mark.slow


def post(server: Server, endpoint: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/{endpoint}", json=body, timeout=30)


# --- over HTTP --------------------------------------------------------------------

COERCIBLE = [
    # (endpoint, body, the field the message must name)
    ("recommend", {"user_id": 1, "k": "5"}, "k"),
    ("recommend", {"user_id": 1, "k": True}, "k"),
    ("recommend", {"user_id": 1, "k": 5.0}, "k"),
    ("recommend", {"user_id": 1, "exclude_rated": "yes"}, "exclude_rated"),
    ("recommend", {"user_id": 1, "exclude_rated": 1}, "exclude_rated"),
    ("recommend", {"user_id": 1, "exclude_rated": "false"}, "exclude_rated"),
    ("recommend", {"user_id": 1, "genres": [1]}, "genres.0"),
    ("recommend", {"user_id": "1"}, "user_id"),
    ("similar_items", {"item_id": 1, "k": "3"}, "k"),
    ("similar_items", {"item_id": 1.0}, "item_id"),
    ("predict", {"pairs": [{"user_id": "1", "item_id": 2}]}, "pairs.0.user_id"),
    ("predict", {"pairs": [{"user_id": 1, "item_id": False}]}, "pairs.0.item_id"),
]


@pytest.mark.parametrize(("endpoint", "body", "field"), COERCIBLE)
def test_no_request_field_is_coerced(server: Server, endpoint: str, body: dict, field: str) -> None:
    resp = post(server, endpoint, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    # "k: Input should be a valid integer": the field, then pydantic's message.
    assert re.match(rf"{re.escape(field)}: Input should be a valid (integer|boolean|string)", error)
    assert [str(part) for part in resp.json()["detail"][0]["loc"]] == field.split(".")


def test_the_strict_types_still_take_what_they_should(server: Server) -> None:
    resp = post(server, "recommend", {"user_id": 1, "k": 3, "exclude_rated": False})
    assert resp.status_code == 200 and len(resp.json()["items"]) == 3
    resp = post(server, "recommend", {"user_id": 1, "genres": []})
    assert resp.status_code == 200
    resp = post(server, "predict", {"pairs": [{"user_id": 1, "item_id": 2}]})
    assert resp.status_code == 200


# --- the request models of serving/service.py -------------------------------------

#: Bodies of each request model, as (model, body, valid?); ``ID`` is an id of the model's type
#: and ``OTHER`` one of the other type.
MODEL_BODIES = [
    ("RecommendRequest", '{"user_id": ID, "k": 5, "exclude_rated": false, "genres": ["x"]}', True),
    ("RecommendRequest", '{"user_id": ID}', True),
    ("PredictRequest", '{"pairs": [{"user_id": ID, "item_id": ID}]}', True),
    ("SimilarRequest", '{"item_id": ID, "k": 3}', True),
    ("RecommendRequest", '{"user_id": OTHER}', False),
    ("RecommendRequest", '{"user_id": ID, "k": "5"}', False),
    ("RecommendRequest", '{"user_id": ID, "exclude_rated": "yes"}', False),
    ("RecommendRequest", '{"user_id": ID, "genres": [3]}', False),
    ("PredictRequest", '{"pairs": [{"user_id": OTHER, "item_id": ID}]}', False),
    ("SimilarRequest", '{"item_id": ID, "k": true}', False),
]

#: Imports ``serving/service.py`` as ``bentoml serve`` would (the id type from the environment)
#: and prints which of argv[2]'s bodies validate.
VALIDATE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("svc", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["svc"] = module
spec.loader.exec_module(module)
results = []
for name, body in json.loads(sys.argv[2]):
    try:
        getattr(module, name).model_validate_json(body)
        results.append(True)
    except Exception:
        results.append(False)
print(json.dumps(results))
"""


def _bodies(good: str, other: str) -> list[tuple[str, str]]:
    return [(m, b.replace("OTHER", other).replace("ID", good)) for m, b, _ in MODEL_BODIES]


def test_request_models_are_strict_with_integer_ids(service_module: Any) -> None:
    got = []
    for name, body in _bodies("7", '"7"'):
        try:
            getattr(service_module, name).model_validate_json(body)
            got.append(True)
        except ValueError:  # pydantic's ValidationError
            got.append(False)
    assert got == [valid for _, _, valid in MODEL_BODIES]


def test_request_models_are_strict_with_text_ids(packaged: Packaged) -> None:
    # Another import of the module (its id type is read at import): in a process of its own.
    env = {
        **env_for_children(packaged),
        "RECOMMENDER_BENTO_MODEL": packaged.record["bento_model"],
        "RECOMMENDER_ID_TYPE": "str",
    }
    bodies = json.dumps(_bodies('"u7"', "7"))
    proc = subprocess.run(
        [sys.executable, "-c", VALIDATE, str(SERVING / "service.py"), bodies],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == [valid for _, _, valid in MODEL_BODIES]
