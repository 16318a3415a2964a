"""The global-mean and bias baselines: a hand-computed ALS sweep, unknown indices, errors."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.core.config import RatingScale
from recommender.evaluation.baselines import EASE, BiasBaseline, GlobalMean
from recommender.scoring import metrics

# (user, item, rating): (1, 1, 5), (1, 2, 4), (2, 1, 3); mean 4
USERS, ITEMS, RATINGS = np.array([1, 1, 2]), np.array([1, 2, 1]), np.array([5.0, 4.0, 3.0])


def test_global_mean():
    model = GlobalMean().fit(USERS, ITEMS, RATINGS)
    assert model.predict([1, 0, 9], [2, 0, 9]).tolist() == [4.0, 4.0, 4.0]


def test_one_als_sweep_by_hand():
    model = BiasBaseline(reg_u=1.0, reg_i=1.0, n_epochs=1).fit(USERS, ITEMS, RATINGS)
    # users first, item biases still 0:
    #   b_u1 = ((5 - 4) + (4 - 4)) / (1 + 2) = 1/3;   b_u2 = (3 - 4) / (1 + 1) = -1/2
    # then items, with those user biases:
    #   b_i1 = ((5 - 4 - 1/3) + (3 - 4 + 1/2)) / (1 + 2) = (2/3 - 1/2) / 3 = 1/18
    #   b_i2 = (4 - 4 - 1/3) / (1 + 1) = -1/6
    assert model.user_bias == pytest.approx([0.0, 1 / 3, -1 / 2])
    assert model.item_bias == pytest.approx([0.0, 1 / 18, -1 / 6])
    # r(1, 1) = 4 + 1/3 + 1/18 = 4.38889
    assert model.predict([1], [1]) == pytest.approx([4 + 1 / 3 + 1 / 18])


def test_unknown_and_unseen_indices_get_zero_bias():
    model = BiasBaseline(reg_u=1.0, reg_i=1.0, n_epochs=1).fit(USERS, ITEMS, RATINGS)
    # row 0 (unknown user) with item 2: 4 + 0 - 1/6; user 7 / item 9 were never seen: 4
    assert model.predict([0, 7], [2, 9]) == pytest.approx([4 - 1 / 6, 4.0])


def test_damping_shrinks_sparse_biases_more():
    # item 1: one rating of 5; item 2: twenty ratings of 5; item 3: twenty-one ratings of 3
    users = np.arange(1, 43)
    items = np.array([1] + [2] * 20 + [3] * 21)
    ratings = np.array([5.0] * 21 + [3.0] * 21)  # mean 4
    # user biases pinned at ~0 by a huge reg_u, so b_i = sum(r - 4) / (reg_i + n_i):
    # item 1: 1 / (10 + 1) = 1/11; item 2: 20 / (10 + 20) = 2/3; item 3: -21 / (10 + 21)
    model = BiasBaseline(reg_u=1e12, reg_i=10.0, n_epochs=1).fit(users, items, ratings)
    assert model.item_bias == pytest.approx([0.0, 1 / 11, 2 / 3, -21 / 31])


def test_bias_baseline_beats_global_mean_on_held_out_data(synthetic):
    tr, te = synthetic.train, synthetic.test
    scale = RatingScale()
    bias = BiasBaseline(scale=scale).fit(tr.user, tr.item, tr.rating)
    mean = GlobalMean().fit(tr.user, tr.item, tr.rating)
    pred = bias.predict(te.user, te.item)
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    assert metrics.rmse(te.rating, pred) < 0.9 * metrics.rmse(
        te.rating, mean.predict(te.user, te.item)
    )


def test_misuse_is_reported():
    with pytest.raises(RuntimeError, match="before fit"):
        BiasBaseline().predict([1], [1])
    with pytest.raises(ValueError, match="3 pairs but 2 ratings"):
        BiasBaseline().fit(USERS, ITEMS, RATINGS[:2])
    with pytest.raises(ValueError, match="non-negative"):
        GlobalMean().fit([-1], [1], [3.0])


def test_ease_matches_the_closed_form_on_a_tiny_case():
    # 3 users x 3 items; liked (rating >= 4): u1 {1, 2}, u2 {2, 3}, u3 {1}; u3's 2 is not liked.
    users = np.array([1, 1, 2, 2, 3, 3])
    items = np.array([1, 2, 2, 3, 1, 2])
    ratings = np.array([5.0, 4.0, 4.0, 5.0, 4.0, 2.0])
    lam = 1.0
    model = EASE(lam=lam, threshold=4.0).fit(users, items, ratings, n_users=3, n_items=3)
    x = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=float)
    p = np.linalg.inv(x.T @ x + lam * np.eye(3))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights, b)
    scores = model.score(np.array([1, 2, 3, 0]))
    np.testing.assert_allclose(scores[:3, 1:], x @ b)
    assert np.isneginf(scores[:, 0]).all()  # the unknown item is never recommended
    np.testing.assert_array_equal(scores[3, 1:], 0.0)  # an unknown user has liked nothing
    # Hand check of one entry: B[0, 1] = -P[0, 1] / P[1, 1].
    assert model.weights[0, 1] == pytest.approx(-p[0, 1] / p[1, 1])
    with pytest.raises(ValueError, match="positive"):
        EASE(lam=0.0, threshold=4.0)


def test_ease_with_another_lambda_equals_a_fresh_fit_and_counts_a_repeat_once():
    rng = np.random.default_rng(2)
    users, items = rng.integers(1, 41, 600), rng.integers(1, 31, 600)
    ratings = rng.integers(1, 6, 600).astype(float)
    users[:5], items[:5], ratings[:5] = 7, 3, 5.0  # one liked pair rated five times
    first = EASE(lam=10.0, threshold=4.0).fit(users, items, ratings, n_users=40, n_items=30)
    for lam in (1.0, 50.0):
        fresh = EASE(lam=lam, threshold=4.0).fit(users, items, ratings, n_users=40, n_items=30)
        again = first.with_lambda(lam)
        np.testing.assert_allclose(again.weights, fresh.weights, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(again.score(np.arange(41)), fresh.score(np.arange(41)))
    liked = ratings >= 4.0
    x = np.zeros((41, 31))
    x[users[liked], items[liked]] = 1.0  # binary: the repeated pair counts once
    np.testing.assert_array_equal(first._gram, (x.T @ x)[1:, 1:])
    with pytest.raises(RuntimeError, match="before fit"):
        EASE(lam=1.0, threshold=4.0).with_lambda(2.0)
