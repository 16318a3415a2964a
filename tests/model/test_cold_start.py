"""Offline and online rank an unknown user one way: evaluation measures the list the endpoint
serves to a new user (the most-rated items), not the "average known user" it once scored."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support import tiny_params

pytestmark = pytest.mark.slow


# two_tower's unknown-user row scores items by its learnt item prior, close to popularity;
# biased_mf's by item bias, which is not: the test tells the two answers apart there.
@pytest.mark.parametrize("family", ["two_tower", "biased_mf"])
def test_evaluation_measures_what_the_service_answers_an_unknown_user(family: str) -> None:
    from recommender.data import load_dataset
    from recommender.evaluation.evaluate import evaluate
    from recommender.preprocess.split import preprocess
    from recommender.scoring import metrics
    from recommender.scoring.bundle import ModelBundle
    from recommender.serving.api import ServingModel
    from recommender.training.fit import fit

    params = tiny_params(train={"epochs": 2, "model": family})
    processed = preprocess(load_dataset(params), params.preprocess, params.seed)
    bundle = ModelBundle.from_training(
        fit(processed, params.train, params.seed).model, processed, {}
    )
    k = params.evaluate.k

    # One test user's rows, as if they came from a person the model has never seen (a user
    # with several relevant items, so that two different lists score differently).
    threshold = params.evaluate.relevance_threshold
    liked = processed.test[processed.test["rating"] >= threshold]
    who = liked["user_idx"].value_counts().index[0]
    new_user = max(processed.user_vocab.ids) + 1
    test = processed.test[processed.test["user_idx"] == who].assign(user_idx=0, user_id=new_user)
    cold = dataclasses.replace(processed, test=test)
    result = evaluate(bundle, cold, params.evaluate).metrics

    served = ServingModel(bundle).recommend(new_user, k=k)
    assert served.cold_start is True
    top = bundle.item_index([item.item_id for item in served.items]).reshape(1, -1)
    relevant = metrics.relevant_sets(test, np.array([0]), threshold)
    assert relevant[0], "the tiny test split has no relevant item: nothing is compared"
    assert result["ranking"][f"ndcg@{k}"] == pytest.approx(
        metrics.ndcg_at_k(top, relevant, k), abs=1e-6
    )
    # ... and that list is the popularity baseline's, which the known users are judged against.
    assert result["ranking"][f"ndcg@{k}"] == result["baselines"]["popularity"][f"ndcg@{k}"]
    assert [item.item_id for item in served.items] == bundle.item_vocab.decode(
        bundle.popular(np.zeros(1, dtype=np.int64), k).items[0]
    ).tolist()
