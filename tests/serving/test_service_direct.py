"""The service class called directly (no HTTP): loading, answers, and errors as 4xx exceptions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from bentoml.exceptions import InvalidArgument, NotFound
from serving_helpers import Packaged

from recommender.serving.api import Pair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(service_module: Any) -> Any:
    return service_module.Recommender()


def _known(packaged: Packaged) -> tuple[int, int]:
    train = packaged.processed.train
    return int(train["user_id"].iloc[0]), int(train["item_id"].iloc[0])


def test_predict_matches_the_bundle_and_flags_unknown_ids(service: Any, packaged: Packaged) -> None:
    user, item = _known(packaged)
    pairs = [Pair(user_id=user, item_id=item), Pair(user_id=10**9, item_id=item)]
    pairs.append(Pair(user_id=user, item_id=-5))
    got = service.predict(pairs)
    want = packaged.bundle.predict_raw([user, 10**9, user], [item, item, -5])
    assert [p.rating for p in got.predictions] == pytest.approx(want.tolist(), abs=1e-6)
    assert [(p.unknown_user, p.unknown_item) for p in got.predictions] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert got.model_version == packaged.version


def test_recommend_is_the_bundles_top_k(service: Any, packaged: Packaged) -> None:
    bundle = packaged.bundle
    user, _ = _known(packaged)
    got = service.recommend(user, k=7)
    top = bundle.recommend(bundle.user_index([user]), 7)
    assert got.cold_start is False
    assert [i.item_id for i in got.items] == bundle.item_vocab.decode(top.items[0]).tolist()
    assert [i.score for i in got.items] == pytest.approx(top.scores[0].tolist())
    rated = set(packaged.processed.train.query("user_id == @user")["item_id"])
    assert not rated & {i.item_id for i in got.items}
    with_rated = service.recommend(user, k=7, exclude_rated=False)
    top_all = bundle.recommend(bundle.user_index([user]), 7, exclude_rated=False)
    assert [i.item_id for i in with_rated.items] == bundle.item_vocab.decode(
        top_all.items[0]
    ).tolist()


def test_recommend_genre_filter_and_cold_start(service: Any, packaged: Packaged) -> None:
    user, _ = _known(packaged)
    catalog = packaged.bundle.catalog.set_index("item_id")
    genre = catalog["genres"].str.split("|").explode().value_counts().index[0]
    got = service.recommend(user, k=5, genres=[genre.upper()])
    assert len(got.items) == 5
    assert all(genre in catalog.loc[i.item_id, "genres"].split("|") for i in got.items)
    assert all(genre in i.genres for i in got.items)

    cold = service.recommend(10**9, k=5)
    assert cold.cold_start is True
    counts = packaged.bundle.popularity
    assert [i.score for i in cold.items] == sorted(counts[1:], reverse=True)[:5]


def test_similar_items_and_unknown_item(service: Any, packaged: Packaged) -> None:
    _, item = _known(packaged)
    got = service.similar_items(item, k=4)
    assert len(got.items) == 4 and item not in {i.item_id for i in got.items}
    scores = [i.score for i in got.items]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    with pytest.raises(NotFound, match="unknown to the model"):
        service.similar_items(10**9, k=4)


def test_bad_requests_raise_4xx_exceptions(service: Any) -> None:
    with pytest.raises(InvalidArgument, match="user_id must be an integer"):
        service.recommend("abc", k=3)
    with pytest.raises(InvalidArgument, match="item_id must be an integer"):
        service.predict([Pair(user_id=1, item_id="x")])
    with pytest.raises(InvalidArgument, match="unknown genre"):
        service.recommend(1, k=3, genres=["no-such-genre"])
    assert InvalidArgument("x").error_code.value == 400
    assert NotFound("x").error_code.value == 404


def test_model_info_comes_from_the_bento_model(service: Any, packaged: Packaged) -> None:
    info = service.model_info()
    assert (info.registered_model, info.version, info.alias) == (
        packaged.record["registered_model"],
        packaged.version,
        "champion",
    )
    assert info.run_id == packaged.record["run_id"]
    assert info.bento_model == packaged.record["bento_model"]
    assert info.metrics["test_rmse"] == pytest.approx(packaged.record["metrics"]["test_rmse"])
    assert info.tags["version.gate.decision"] == "promoted"
    assert info.limits == {"max_k": 100, "max_pairs": 1000}
    assert np.isfinite(list(info.metrics.values())).all()
