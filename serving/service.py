"""The BentoML service: the registry's champion answering predict / recommend / similar_items.

It only wires :mod:`recommender.serving.api` (typed requests and responses, and the logic) to HTTP.
The model is the MLflow model the package stage imported into the BentoML store; it is loaded once,
in ``__init__``, and every request is scored by the bundle's NumPy factors (or its compiled
``tf.function``), never by a per-request ``model.predict``.

    make bento && make serve          # the built Bento, on 127.0.0.1:<serve.port>
    curl -s -XPOST 127.0.0.1:3000/recommend -H 'content-type: application/json' \\
         -d '{"user_id": 1, "k": 5}'

Arguments (``bentoml build/serve --arg key=value``; the package stage sets them from params.yaml
and the model): ``model_tag``, ``id_type``, ``max_k``, ``max_pairs``, ``port``. For serving this
folder directly during development, ``RECOMMENDER_BENTO_MODEL`` and ``RECOMMENDER_ID_TYPE`` in
the environment override the first two.

Besides the four APIs, BentoML serves ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus, with
``recommender_unknown_ids_total`` counting ids the model has never seen).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

from recommender.core.telemetry import disable_telemetry

disable_telemetry()  # before BentoML and MLflow load: both read their opt-outs from the environment

import bentoml  # noqa: E402
from bentoml.exceptions import InvalidArgument  # noqa: E402
from bentoml.exceptions import NotFound as HTTPNotFound  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

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


class _Request(BaseModel):
    # A misspelled field ("topk") is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid")


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


@contextlib.contextmanager
def _client_errors() -> Iterator[None]:
    """The library's request errors as HTTP 4xx with their message (never a 500)."""
    try:
        yield
    except BadRequest as exc:
        raise InvalidArgument(str(exc)) from None
    except NotFound as exc:
        raise HTTPNotFound(str(exc)) from None


class JsonBodies:
    """ASGI middleware: API calls must send JSON (else 415) of at most ``max_bytes`` (else 413).

    BentoML also accepts form and multipart bodies and answers some malformed ones with a 500;
    this service's contract is JSON only, so everything else is refused up front, with a message.
    It also gives every 4xx one shape, ``{"error": ...}``: BentoML 1.4 wraps the errors our code
    raises in a one-element list.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media not in (b"", b"application/json"):
            return await _reply(send, 415, "send the request as Content-Type: application/json")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(
                    send, 413, f"request body over {self.max_bytes} bytes (the service's limit)"
                )
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, _unwrap_errors(send))


def _unwrap_errors(send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
    """Wrap ``send`` so a 4xx body ``[{"error": ...}]`` goes out as ``{"error": ...}``."""
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
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
            body = json.dumps(data[0]).encode()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", b"%d" % len(body)))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


async def _reply(send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@bentoml.service(name="recommender", workers=1, traffic={"timeout": 10})
class Recommender:
    """Ratings, top-K recommendations and similar items from the packaged champion."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from recommender import tracking
        from recommender.scoring.bundle import ModelBundle

        # The bundle inside the imported MLflow model, loaded by this Bento's own library (Keras
        # with safe_mode): the model's logged code is not run, so a champion logged by an older
        # version of the project serves with the code this Bento was built with.
        bundle = ModelBundle.load(tracking.bundle_dir(self.bento_model.path_of("mlflow_model")))
        info = {**self.bento_model.info.metadata, "bento_model": str(self.bento_model.tag)}
        limits = {"max_k": ARGS.max_k, "max_pairs": ARGS.max_pairs}
        self.model = ServingModel(bundle, info, limits)
        if self.model.id_kind != ID_KIND:
            raise RuntimeError(
                f"the model {self.bento_model.tag} takes {self.model.id_kind} ids but the service "
                f"was built for {ID_KIND} ids (rebuild the Bento with `make bento`)"
            )
        # TensorFlow, Keras and MLflow leave millions of long-lived objects behind; freezing them
        # keeps the garbage collector from walking them again during requests (a tail-latency
        # pause, and a per-request cost the no-op service does not pay).
        gc.collect()
        gc.freeze()

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


Recommender.add_asgi_middleware(JsonBodies, max_bytes=MAX_BODY)
