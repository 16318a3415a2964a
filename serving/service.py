"""The BentoML service: the registry's champion answering predict / recommend / similar_items,
and taking feedback.

A thin class over the library: :mod:`recommender.serving.api` holds the typed requests and
responses and the logic, :mod:`recommender.serving.http` the HTTP contract (JSON 4xx, body and
header timeouts, the connection limit, the log filters, the Swagger UI page at ``/``), and
:mod:`recommender.serving.runtime` the model's loading (once, in ``__init__``; every request is
scored by the bundle's NumPy factors or its compiled ``tf.function``, never a per-request
``model.predict``). A champion that cannot load ends ``bentoml serve`` with a non-zero status.

    make bento && make serve          # the built Bento, on 127.0.0.1:<serve.port>; / is Swagger UI
    curl -s -XPOST 127.0.0.1:<port>/recommend -H 'content-type: application/json' \\
         -d '{"user_id": 1, "k": 5}'

Arguments (``bentoml build/serve --arg key=value``; the package stage sets them from params.yaml
and the model): ``model_tag``, ``id_type``, ``max_k``, ``max_pairs``, ``port``, ``workers``
(worker processes), ``max_connections`` (open connections per worker), ``exact_max_items`` and
``ann_min_recall`` (the package stage builds the model's ANN index of a large catalog by them; the
service uses the index it finds), ``inference_log`` and ``log_dir`` (the inference log: one JSON
line per predict / recommend / similar_items / feedback call under ``log_dir/<endpoint>/data/``,
see :mod:`recommender.serving.inference_log`), ``inference_log_exporter`` and ``otlp_endpoint``
(``otlp``: the same records to an OpenTelemetry collector instead). Every response carries an
``X-Request-ID`` (the client's own if valid), which the log records and ``/feedback`` answers.
For serving this folder directly during development, ``RECOMMENDER_BENTO_MODEL`` and
``RECOMMENDER_ID_TYPE`` in the environment override the first two.

Besides the five APIs, BentoML serves ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus, with
``recommender_unknown_ids_total`` counting ids the model has never seen,
``recommender_http_connections_closed_total`` the connections closed before any request and
``recommender_inference_log_errors_total`` the log records that could not be written), and
``/docs.json`` (the OpenAPI schema that the Swagger UI at ``/`` reads).
"""

from __future__ import annotations

import os
from typing import Annotated

from recommender.core.telemetry import disable_telemetry

disable_telemetry()  # before BentoML loads: it reads its opt-out from the environment
# A worker that exits (its model cannot load, or it crashed) is not started again; once none is
# left, ``bentoml serve`` stops with a non-zero status ("No active process found for watcher")
# instead of restarting the worker every 10 s forever with its port open and requests hanging.
# This is BentoML's own setting in the containers it builds; ``bentoml serve`` imports this module
# before it creates its worker watcher, which reads the variable.
os.environ.setdefault("BENTOML_CONTAINERIZED", "true")

import bentoml  # noqa: E402
from bentoml.exceptions import NotFound as HTTPNotFound  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator  # noqa: E402

from recommender.serving import http, inference_log  # noqa: E402
from recommender.serving.api import (  # noqa: E402
    MAX_GENRES,
    Event,
    FeedbackResponse,
    Genre,
    ModelInfo,
    Pair,
    PredictResponse,
    RecommendResponse,
    ServiceArgs,
    ServingModel,
    SimilarResponse,
    raw_id_type,
)
from recommender.serving.inference_log import Clock, InferenceLog  # noqa: E402
from recommender.serving.runtime import load_serving_model  # noqa: E402

ARGS = bentoml.use_arguments(ServiceArgs)
MODEL_TAG = os.environ.get("RECOMMENDER_BENTO_MODEL") or ARGS.model_tag
#: The model's raw id type: JSON integers, or strings for a model trained on text ids.
ID_TYPE = os.environ.get("RECOMMENDER_ID_TYPE") or ARGS.id_type
RawId = raw_id_type(ID_TYPE)

K = Annotated[int, Field(ge=1, le=ARGS.max_k, description=f"1..{ARGS.max_k}")]
Pairs = Annotated[list[Pair[RawId]], Field(min_length=1, max_length=ARGS.max_pairs)]
Genres = Annotated[list[Genre], Field(max_length=MAX_GENRES)]
#: On the model's rating scale (checked against the loaded model's, not knowable here).
Rating = Annotated[float, Field(allow_inf_nan=False, description="on the model's rating scale")]
Timestamp = Annotated[float, Field(ge=0, allow_inf_nan=False, description="unix seconds")]
ServedRequestId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


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


class FeedbackRequest(_Request):
    user_id: RawId
    item_id: RawId
    rating: Rating | None = None
    event: Event | None = None
    #: When it happened (default: when the request arrived).
    timestamp: Timestamp | None = None
    #: The ``X-Request-ID`` of the ``recommend`` answer this feedback follows, if any.
    request_id: ServedRequestId | None = None

    @model_validator(mode="after")
    def _rating_or_event(self) -> FeedbackRequest:
        if self.rating is None and self.event is None:
            raise ValueError("rating or event: send at least one of them")
        return self


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
# reason: header_timeout, no_request, over_limit, invalid_request (see recommender.serving.http).
CLOSED_CONNECTIONS = bentoml.metrics.Counter(
    name="recommender_http_connections_closed",
    documentation="HTTP connections the server closed before any request reached the service",
    labelnames=["reason"],
)
# Inference log records dropped because they could not be written (a full disk, an unwritable
# folder): the requests were answered all the same.
LOG_ERRORS = bentoml.metrics.Counter(
    name="recommender_inference_log_errors",
    documentation="Inference log records that could not be written (dropped; requests answered)",
)
inference_log.install(LOG_ERRORS)


@bentoml.service(
    name="recommender",
    workers=ARGS.workers,
    traffic={"timeout": http.BODY_TIMEOUT + http.HANDLER_TIMEOUT},
    monitoring=inference_log.monitoring_config(
        ARGS.inference_log, ARGS.log_dir, ARGS.inference_log_exporter, ARGS.otlp_endpoint
    ),
)
class Recommender:
    """Ratings, top-K recommendations and similar items from the packaged champion; feedback."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        limits = {"max_k": ARGS.max_k, "max_pairs": ARGS.max_pairs}
        self.model: ServingModel = load_serving_model(self.bento_model, limits, ID_TYPE)
        name = str(self.model.info.get("registered_model", ""))
        self.log = InferenceLog(ARGS.inference_log, name, self.model.version)
        if http.GuardedH11Protocol.max_connections < ARGS.max_connections:
            http.logger.warning(
                "at most %d open connections per worker, not serve.max_connections %d: the "
                "file-descriptor limit (ulimit -n) allows no more",
                http.GuardedH11Protocol.max_connections,
                ARGS.max_connections,
            )

    @bentoml.api(input_spec=PredictRequest)
    def predict(self, pairs: Pairs) -> PredictResponse[RawId]:
        """Predicted ratings of raw (user_id, item_id) pairs, each flagged if an id is unknown."""
        clock = Clock()
        with http.client_errors():
            response = self.model.predict(pairs)
        users = sum(p.unknown_user for p in response.predictions)
        items = sum(p.unknown_item for p in response.predictions)
        if users:
            UNKNOWN_IDS.labels(endpoint="predict", kind="user").inc(users)
        if items:
            UNKNOWN_IDS.labels(endpoint="predict", kind="item").inc(items)
        self.log.predict(clock, http.request_id(), response)
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
        clock = Clock()
        with http.client_errors():
            response = self.model.recommend(user_id, k, exclude_rated, genres)
        if response.cold_start:
            UNKNOWN_IDS.labels(endpoint="recommend", kind="user").inc()
        request = {"user_id": user_id, "k": k, "exclude_rated": exclude_rated, "genres": genres}
        self.log.recommend(clock, http.request_id(), request, response)
        return response

    @bentoml.api(input_spec=SimilarRequest)
    def similar_items(self, item_id: RawId, k: K = 10) -> SimilarResponse[RawId]:
        """The k items nearest to a known item by cosine similarity of item embeddings."""
        clock = Clock()
        try:
            with http.client_errors():
                response = self.model.similar_items(item_id, k)
        except HTTPNotFound:
            UNKNOWN_IDS.labels(endpoint="similar_items", kind="item").inc()
            self.log.similar_items(clock, http.request_id(), item_id, k, None)
            raise
        self.log.similar_items(clock, http.request_id(), item_id, k, response)
        return response

    @bentoml.api(input_spec=FeedbackRequest)
    def feedback(
        self,
        user_id: RawId,
        item_id: RawId,
        rating: Rating | None = None,
        event: Event | None = None,
        timestamp: Timestamp | None = None,
        request_id: ServedRequestId | None = None,
    ) -> FeedbackResponse:
        """Record a user's rating or event on an item, for retraining (new ids are welcome)."""
        clock = Clock()
        with http.client_errors():
            if rating is not None:
                self.model.check_rating(rating)
            self.model.check_timestamp(timestamp, clock.time)
        rid = http.request_id()
        fields = {"user_id": user_id, "item_id": item_id, "rating": rating, "event": event}
        self.log.feedback(clock, rid, {**fields, "timestamp": timestamp, "request_id": request_id})
        return FeedbackResponse(request_id=rid, accepted=True)

    @bentoml.api(input_spec=ModelInfoRequest)
    def model_info(self) -> ModelInfo:
        """The served registered model: name, version, alias, test metrics and lineage tags."""
        return self.model.model_info()


#: What ``/`` lists above Swagger UI: each API's route and the first line of its docstring.
ROUTES = tuple(
    (api.route, (api.doc or "").strip().splitlines()[0] if api.doc else "")
    for api in Recommender.apis.values()
)
Recommender.add_asgi_middleware(
    http.HttpGuard,
    max_bytes=http.max_body(ARGS.max_pairs),
    body_timeout=http.BODY_TIMEOUT,
    routes=ROUTES,
)
http.install(ARGS.max_connections, CLOSED_CONNECTIONS)
