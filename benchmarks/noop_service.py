"""A BentoML service that does nothing: the floor ``bench_serve.py`` compares the real one with.

Same framework, same worker count, same typed request shapes as ``serving/service.py``; the
answers are constants. What the real service costs beyond this is the model's work (id lookup,
scoring, top-K, building the response).

    bentoml serve noop_service:Noop --working-dir benchmarks --host 127.0.0.1 --port 3001
"""

from __future__ import annotations

import bentoml
from pydantic import BaseModel

from recommender.serving.api import IntId, Pair, StrId

RawId = IntId | StrId


class _Request(BaseModel):
    pass


class PredictRequest(_Request):
    pairs: list[Pair[RawId]]


class RecommendRequest(_Request):
    user_id: RawId
    k: int = 10
    exclude_rated: bool = True
    genres: list[str] | None = None


@bentoml.service(name="noop", workers=1, traffic={"timeout": 10})
class Noop:
    """Answers ``predict`` and ``recommend`` without a model."""

    @bentoml.api(input_spec=PredictRequest)
    def predict(self, pairs: list[Pair[RawId]]) -> dict:
        return {"predictions": []}

    @bentoml.api(input_spec=RecommendRequest)
    def recommend(
        self, user_id: RawId, k: int = 10, exclude_rated: bool = True, genres: list | None = None
    ) -> dict:
        return {"items": []}
