"""What the BentoML service answers, as typed requests and responses and the logic behind them.

``serving/service.py`` only wires this module to HTTP: it loads the packaged MLflow model,
builds a :class:`ServingModel` around its :class:`~recommender.scoring.bundle.ModelBundle` and
maps the errors below to 4xx responses. Scoring and top-K ranking are the bundle's (the code offline
evaluation runs), so a served prediction equals the offline one.

Raw ids are typed by the model: one trained on integer ids takes JSON integers (a string is a
400), one trained on text ids takes strings. Every request field is strict the same way (``"5"`` is
not a ``k``, ``"yes"`` not a boolean). Unknown ids are not errors for ``predict`` (they get
the out-of-vocabulary row and a flag) nor for ``recommend`` (a cold-start answer, flagged);
``similar_items`` needs a known item (else 404). The request and response models are generic in
the id type (``Pair[IntId]``), so the service's OpenAPI schema says which one it takes.

Example:
    >>> model = ServingModel(ModelBundle.load("models/bundle"), info={"version": "3"})
    >>> model.recommend(196, k=10).items[0].item_id
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from recommender.core.config import ServeConfig
from recommender.core.errors import RecommenderError
from recommender.core.schema import MAX_ID_LENGTH
from recommender.dataset.features import split_genres
from recommender.scoring.ranking import PAD

#: An integer raw id (64-bit; ``le`` rather than ``lt`` keeps the schema valid OpenAPI 3.0).
IntId = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
#: A text raw id.
StrId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Id = TypeVar("Id")
#: What a client did with an item, as ``feedback`` reports it.
Event = Literal["click", "view", "add_to_cart", "purchase", "skip", "rate"]
#: A genre name in a ``recommend`` filter.
Genre = Annotated[str, StringConstraints(min_length=1, max_length=64)]
#: Largest number of genres one filter may list.
MAX_GENRES = 64
#: Run metrics copied into the model's info: test-split figures, ranking quality, baselines.
INFO_METRIC_PREFIXES = ("test_", "ranking_", "baselines_", "val_rmse")


def raw_id_type(id_type: str) -> Any:
    """The request/response id type of a model trained on ``id_type`` ids (``"int"``, ``"str"``)."""
    if id_type not in ("int", "str"):
        raise ValueError(f"id type must be 'int' or 'str', got {id_type!r}")
    return IntId if id_type == "int" else StrId


#: How far ahead of the server's clock a ``feedback`` timestamp may be (as ``validate`` allows).
CLOCK_SKEW_S = 86_400


class BadRequest(RecommenderError):
    """A request the model cannot answer as asked (wrong id type, unknown genre): HTTP 400."""


class NotFound(RecommenderError):
    """A request about something the model does not know (an unknown item): HTTP 404."""


class _Strict(BaseModel):
    # No unknown fields, and no coercion: a JSON string is not read as a number or a boolean.
    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        # "Pair", not "Pair[Annotated[int, Strict(strict=True), ...]]", in the OpenAPI schema.
        return cls.__name__


class Pair(_Strict, Generic[Id]):
    """One (user, item) pair to rate, in raw ids."""

    user_id: Id
    item_id: Id


class PairPrediction(_Strict, Generic[Id]):
    """The predicted rating of one pair, and which of its ids the model has never seen."""

    user_id: Id
    item_id: Id
    #: On the dataset's rating scale (clipped to it).
    rating: float
    #: The user is not in the training data: the rating uses the out-of-vocabulary user row.
    unknown_user: bool
    #: The item is not in the training data: the rating uses the out-of-vocabulary item row.
    unknown_item: bool


class PredictResponse(_Strict, Generic[Id]):
    """``predict``'s answer: one prediction per pair, in request order."""

    predictions: list[PairPrediction[Id]]
    model_version: str


class RecommendedItem(_Strict, Generic[Id]):
    """An item in a ranked list."""

    item_id: Id
    title: str
    genres: list[str]
    #: The model's unclipped score (``recommend``), the number of training ratings (cold start),
    #: or the cosine similarity (``similar_items``). Higher is better.
    score: float


class RecommendResponse(_Strict, Generic[Id]):
    """``recommend``'s answer, best first (fewer than ``k`` items when a filter leaves fewer)."""

    user_id: Id
    #: True when the user is unknown: ``items`` are the most-rated items in training instead.
    cold_start: bool
    items: list[RecommendedItem[Id]]
    model_version: str


class SimilarResponse(_Strict, Generic[Id]):
    """``similar_items``' answer: nearest items by cosine similarity of item embeddings."""

    item_id: Id
    items: list[RecommendedItem[Id]]
    model_version: str


class FeedbackResponse(_Strict):
    """``feedback``'s answer: logged, under this request's id (its ``X-Request-ID``)."""

    request_id: str
    accepted: bool


class ModelInfo(_Strict):
    """Which registered model version is served, how it scored, and where it came from."""

    registered_model: str
    version: str
    alias: str
    run_id: str
    model_uri: str
    bento_model: str
    #: The run's test, ranking and baseline metrics (``test_rmse``, ``ranking_ndcg_at_10``, ...).
    metrics: dict[str, float]
    #: Lineage: the model version's tags and the run's own tags (data hash, git commit, family).
    tags: dict[str, str]
    limits: dict[str, int]


class ServiceArgs(ServeConfig):
    """The service's build/serve arguments (``bentoml build --arg key=value``): ``params.yaml``'s
    ``serve`` section (its bounds included) plus the imported model's tag and id type.

    Lax about types on purpose: BentoML passes every argument as a string. The package stage
    fills them in, so a Bento carries its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    model_tag: str = "recommender:latest"
    #: The model's raw id type (its dataset's ``id_type``), which the request types follow.
    id_type: Literal["int", "str"] = "int"


def select_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The run metrics worth showing in ``model_info`` (not per-epoch training curves)."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(INFO_METRIC_PREFIXES)}


class ServingModel:
    """A :class:`ModelBundle` answering the service's requests on raw ids.

    Args:
        bundle: The loaded bundle (scoring and ranking happen there).
        info: What ``model_info`` reports (see :class:`ModelInfo`); ``version`` is echoed in
            every response.
        limits: The request limits in force (for ``model_info``).
        ann: An approximate index over the bundle's ranking factors (a catalog over
            ``serve.exact_max_items``), attached to this model's copy of the bundle:
            ``recommend`` and ``similar_items`` rank its shortlists
            (:class:`~recommender.scoring.ann.AnnIndex`); None ranks every item (exact).

    Ranking, the cold-start answer included, is the bundle's (:meth:`ModelBundle.recommend`),
    the same path evaluation measures.
    """

    def __init__(
        self,
        bundle: Any,
        info: dict[str, Any] | None = None,
        limits: dict[str, int] | None = None,
        ann: Any = None,
    ) -> None:
        self.bundle = bundle if ann is None else dataclasses.replace(bundle, ann=ann)
        self.info = dict(info or {})
        self.limits = dict(limits or {})
        self.version = str(self.info.get("version", ""))
        self._user_str = _is_str_vocab(bundle.user_vocab)
        self._item_str = _is_str_vocab(bundle.item_vocab)
        #: ``"int"`` or ``"str"``: the raw id type of this model's requests and responses.
        self.id_type = "str" if self._user_str or self._item_str else "int"
        raw_id: Any = raw_id_type(self.id_type)  # a type chosen at run time: Any to the checker
        self._pair_prediction = PairPrediction[raw_id]
        self._predict_response = PredictResponse[raw_id]
        self._item = RecommendedItem[raw_id]
        self._recommend_response = RecommendResponse[raw_id]
        self._similar_response = SimilarResponse[raw_id]
        # Responses are built with ``model_construct``: their fields come from the model's own
        # arrays and the already-validated request, and validating them again would cost about a
        # third of a recommend request.

        # Per item index (row 0 = OOV): raw id, title and genres, so a ranked list is a lookup.
        n = bundle.n_items + 1
        self._item_ids = bundle.item_vocab.decode(np.arange(n))
        self._titles = np.array([str(i) for i in self._item_ids], dtype=object)
        self._genres: list[list[str]] = [[] for _ in range(n)]
        catalog = bundle.catalog
        known = catalog[catalog["item_idx"] > 0]
        for idx, title, genres in zip(
            known["item_idx"].to_numpy(), known["title"], split_genres(known["genres"]), strict=True
        ):
            self._titles[idx] = str(title)
            self._genres[idx] = genres
        # Genre name (case-folded) -> boolean mask over item indices, for recommend's filter.
        self._genre_masks: dict[str, np.ndarray] = {}
        self._genre_names: dict[str, str] = {}
        for idx, names in enumerate(self._genres):
            for name in names:
                key = name.casefold()
                if key not in self._genre_masks:
                    self._genre_masks[key] = np.zeros(n, dtype=bool)
                    self._genre_names[key] = name
                self._genre_masks[key][idx] = True

    # --- requests --------------------------------------------------------------------------------

    def predict(self, pairs: Sequence[Pair]) -> PredictResponse:
        """Predicted ratings of raw (user, item) pairs; unknown ids are flagged, not refused."""
        users = self._ids([p.user_id for p in pairs], self._user_str, "user_id")
        items = self._ids([p.item_id for p in pairs], self._item_str, "item_id")
        u_idx = np.array([self.bundle.user_vocab.index_of(u) for u in users], dtype=np.int32)
        i_idx = np.array([self.bundle.item_vocab.index_of(i) for i in items], dtype=np.int32)
        ratings = self.bundle.predict(u_idx, i_idx)
        return self._predict_response.model_construct(
            predictions=[
                self._pair_prediction.model_construct(
                    user_id=u, item_id=i, rating=float(r), unknown_user=not ui, unknown_item=not ii
                )
                for u, i, r, ui, ii in zip(users, items, ratings, u_idx, i_idx, strict=True)
            ],
            model_version=self.version,
        )

    def recommend(
        self,
        user_id: Any,
        k: int = 10,
        exclude_rated: bool = True,
        genres: Sequence[str] | None = None,
    ) -> RecommendResponse:
        """Top-``k`` items for a user (rated items left out by default), optionally of some genres.

        An unknown user gets the most-rated items (``cold_start: true``), filtered the same way.
        """
        (user,) = self._ids([user_id], self._user_str, "user_id")
        allowed = self._genre_mask(genres)
        u_idx = self.bundle.user_vocab.index_of(user)
        top = self.bundle.recommend(
            np.array([u_idx]), k, exclude_rated=exclude_rated, allowed_items=allowed
        )
        return self._recommend_response.model_construct(
            user_id=user,
            cold_start=u_idx == 0,
            items=self._items(top.items[0], top.scores[0]),
            model_version=self.version,
        )

    def similar_items(self, item_id: Any, k: int = 10) -> SimilarResponse:
        """The ``k`` items nearest to a known item by cosine similarity of their embeddings."""
        (item,) = self._ids([item_id], self._item_str, "item_id")
        i_idx = self.bundle.item_vocab.index_of(item)
        if i_idx == 0:
            raise NotFound(
                f"item_id {item!r} is unknown to the model (it was not rated in training), "
                f"so it has no embedding to compare; the model knows {self.bundle.n_items} items"
            )
        top = self.bundle.similar(i_idx, k)
        return self._similar_response.model_construct(
            item_id=item, items=self._items(top.items, top.scores), model_version=self.version
        )

    def check_rating(self, rating: float) -> None:
        """Refuse a ``feedback`` rating the model's dataset could not hold: off its scale, or
        between two of its steps (it would be retrained on, and fail the data's validation)."""
        scale = self.bundle.scale
        # The validate stage's own rule (its in-set expectation over RatingScale.values()).
        if rating not in scale.values():
            raise BadRequest(
                f"rating: {rating!r} is not on the model's rating scale ({scale.min:g} to "
                f"{scale.max:g} in steps of {scale.step:g})"
            )

    @staticmethod
    def check_timestamp(timestamp: float | None, now: float) -> None:
        """Refuse a ``feedback`` time later than the server's clock plus a day: retraining would
        take it as the newest rating there is, and the data's validation refuses it (its default
        ``validate.timestamp_max`` is now plus the same day of clock skew)."""
        if timestamp is not None and timestamp > now + CLOCK_SKEW_S:
            raise BadRequest(
                f"timestamp: {timestamp:g} is later than the server's clock plus a day "
                f"({now + CLOCK_SKEW_S:.0f}); send unix seconds of when the user acted"
            )

    def model_info(self) -> ModelInfo:
        """The served model's registry identity, metrics and lineage."""
        info = self.info
        return ModelInfo(
            registered_model=str(info.get("registered_model", "")),
            version=self.version,
            alias=str(info.get("alias", "")),
            run_id=str(info.get("run_id", "")),
            model_uri=str(info.get("model_uri", "")),
            bento_model=str(info.get("bento_model", "")),
            metrics={k: float(v) for k, v in (info.get("metrics") or {}).items()},
            tags={k: str(v) for k, v in (info.get("tags") or {}).items()},
            limits=self.limits,
        )

    # --- helpers ---------------------------------------------------------------------------------

    def _ids(self, values: list[Any], vocab_is_str: bool, field: str) -> list[Any]:
        """Raw ids in the vocabulary's type: text for a text vocabulary; ints must stay ints."""
        if vocab_is_str:
            return [str(v) for v in values]
        for v in values:
            if isinstance(v, str):
                raise BadRequest(
                    f"{field} must be an integer for this model (it was trained on integer ids); "
                    f"got the string {v[:40]!r}"
                )
        return values

    def _genre_mask(self, genres: Sequence[str] | None) -> np.ndarray | None:
        if not genres:
            return None
        unknown = [g for g in genres if g.casefold() not in self._genre_masks]
        if unknown:
            known = sorted(self._genre_names.values())
            raise BadRequest(f"unknown genre(s) {unknown[:5]}; the catalog's genres are {known}")
        mask = np.zeros(self.bundle.n_items + 1, dtype=bool)
        for g in genres:
            mask |= self._genre_masks[g.casefold()]
        return mask

    def _items(self, items: np.ndarray, scores: np.ndarray) -> list[RecommendedItem]:
        return [
            self._item.model_construct(
                item_id=_plain(self._item_ids[i]),
                title=self._titles[i],
                genres=self._genres[i],
                score=float(s),
            )
            for i, s in zip(items.tolist(), scores.tolist(), strict=True)
            if i != PAD
        ]


def _is_str_vocab(vocab: Any) -> bool:
    ids = vocab.ids
    return bool(ids) and isinstance(ids[0], str)


def _plain(value: Any) -> Any:
    """NumPy scalars -> Python ones (pydantic's strict int refuses ``np.int64``)."""
    return value.item() if isinstance(value, np.generic) else value
