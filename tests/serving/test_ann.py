"""The ANN path of a large catalog, end to end: real stages, a real index, a real server.

A biased MF (its item biases matter to the ranking) trained on synthetic data with a 20,000-item
catalog, registered and packaged with ``serve.exact_max_items`` forced low so the package stage
builds the FAISS index into the BentoML model. Then: recall@10 against exact ranking over every
user; the served ``recommend`` and ``similar_items`` equal the library's ANN answer; a catalog
under the threshold, or a family without factors, keeps the exact path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from serving_helpers import Packaged, build_packaged, serve, serving_env
from support import Server, stop, tiny_params

pytestmark = pytest.mark.slow

#: Over the threshold below, so the package stage builds the index.
SYNTHETIC = {"n_users": 600, "n_items": 20_000, "n_ratings": 30_000}
EXACT_MAX_ITEMS = 1_000


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    root = tmp_path_factory.mktemp("ann")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = tiny_params(
        synthetic=SYNTHETIC,
        # Keras' dense Adam: two epochs of lazy Adam leave the rarely rated items' rows near
        # their random start, and IVF lists cannot hold noise together (similar_items' recall
        # stayed under serve.ann_min_recall); the index is the point here, not the optimizer.
        train={
            "model": "biased_mf",
            "epochs": 2,
            "refit": False,
            "batch_size": 1024,
            "optimizer": "adam",
            # The knobs the index was sized for (l2 0.1): with the 0.05 that train.search
            # picks here after two epochs, similar_items' recall stopped at 0.989.
            "search": {"budget_seconds": 0.0},
        },
        evaluate={"ease_max_items": 100},  # EASE's item x item matrix: not the point here
        tracking={"experiment": "ann-test", "registered_model": "recommender-ann-test"},
        serve={"exact_max_items": EXACT_MAX_ITEMS},
    )
    with serving_env(root, uri) as store:
        # Two epochs on 1.5 ratings an item need not beat the bias baseline's RMSE, and the
        # gate is not what this module tests: the registered version becomes the champion.
        yield build_packaged(root, uri, store, params, must_promote=False)


@pytest.fixture(scope="module")
def index(large: Packaged) -> Any:
    """The index the package stage wrote into the BentoML model, loaded as the service does."""
    import bentoml

    from recommender.scoring.ann import AnnIndex, ranking_factors

    folder = bentoml.models.get(large.record["bento_model"]).path_of("ann")
    return AnnIndex.load(folder, ranking_factors(large.bundle))


@pytest.fixture(scope="module")
def large_server(large: Packaged) -> Iterator[Server]:
    srv = serve(large, large.root / "serve.log")
    try:
        yield srv
    finally:
        stop(srv.proc)


def test_package_builds_an_index_and_records_its_recall(large: Packaged) -> None:
    ann = large.record["ann"]
    assert large.bundle.n_items > EXACT_MAX_ITEMS * 10
    assert ann["used"] is True, ann
    assert ann["n_items"] == large.bundle.n_items
    assert ann["recall_at_10"] >= large.params.serve.ann_min_recall
    assert ann["similar_recall_at_10"] >= large.params.serve.ann_min_recall
    assert 1 <= ann["nprobe"] <= ann["nlist"] // 4


def test_recall_at_10_against_exact_ranking_for_every_user(large: Packaged, index: Any) -> None:
    from recommender.scoring.ann import recall_at_k

    bundle = large.bundle
    users = np.arange(1, bundle.n_users + 1)
    exact = bundle.recommend(users, 10)
    approx = index.recommend(users, 10, seen=bundle.seen)
    assert recall_at_k(approx.items, exact.items) >= 0.95
    # Whatever is returned is scored exactly, as exact ranking scores it.
    same = approx.items == exact.items
    np.testing.assert_allclose(approx.scores[same], exact.scores[same], rtol=1e-6)
    rated = [set(bundle.seen.items_of(int(u))) for u in users]
    assert not any(set(row) & r for row, r in zip(approx.items.tolist(), rated, strict=True))

    # A genre filter: only allowed items, and the same list as exact ranking under it.
    genre = bundle.catalog["genres"].dropna().iloc[0].split("|")[0]
    model_genres = bundle.catalog.set_index("item_idx")["genres"].fillna("")
    allowed = np.zeros(bundle.n_items + 1, dtype=bool)
    allowed[model_genres.index[model_genres.str.split("|").map(lambda g: genre in g)]] = True
    filtered = index.recommend(users[:50], 10, seen=bundle.seen, allowed=allowed)
    want = bundle.recommend(users[:50], 10, allowed_items=allowed)
    assert recall_at_k(filtered.items, want.items) >= 0.95
    assert allowed[filtered.items[filtered.items > 0]].all()


def test_served_recommend_and_similar_items_equal_the_offline_ann(
    large: Packaged, index: Any, large_server: Server
) -> None:
    bundle = large.bundle
    users = large.processed.test["user_id"].drop_duplicates().head(25).tolist()
    known = [u for u in users if bundle.user_index([u])[0] > 0]
    offline = index.recommend(bundle.user_index(known), 10, seen=bundle.seen)
    for user, items, scores in zip(known, offline.items, offline.scores, strict=True):
        resp = requests.post(
            f"{large_server.url}/recommend", json={"user_id": user, "k": 10}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        got = resp.json()["items"]
        assert [i["item_id"] for i in got] == bundle.item_vocab.decode(items).tolist()
        np.testing.assert_allclose([i["score"] for i in got], scores, rtol=1e-6)
    assert len(known) >= 15

    # A genre filter and rated items kept: the served answer is the library's, through the index.
    from recommender.serving.api import ServingModel

    genre = bundle.catalog["genres"].dropna().iloc[0].split("|")[0]
    offline_model = ServingModel(bundle, ann=index)
    for user in known[:5]:
        body = {"user_id": user, "k": 10, "exclude_rated": False, "genres": [genre]}
        resp = requests.post(f"{large_server.url}/recommend", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        want = offline_model.recommend(user, 10, exclude_rated=False, genres=[genre])
        assert [i["item_id"] for i in resp.json()["items"]] == [i.item_id for i in want.items]
        assert all(genre in i["genres"] for i in resp.json()["items"])

    for item in large.processed.train["item_id"].drop_duplicates().head(5).tolist():
        resp = requests.post(
            f"{large_server.url}/similar_items", json={"item_id": item, "k": 8}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        want = index.similar(int(bundle.item_index([item])[0]), 8)
        got = resp.json()["items"]
        assert [i["item_id"] for i in got] == bundle.item_vocab.decode(want.items).tolist()


def test_small_catalogs_and_factorless_families_stay_exact(large: Packaged) -> None:
    from recommender.scoring.ann import plan_index, ranking_factors

    factors = ranking_factors(large.bundle)
    index, record = plan_index(factors, exact_max_items=large.bundle.n_items)
    assert index is None and record["used"] is False
    assert "serve.exact_max_items" in record["reason"]
    index, record = plan_index(None, exact_max_items=0)
    assert index is None and "no factors" in record["reason"]
