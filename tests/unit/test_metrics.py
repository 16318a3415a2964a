"""Every metric against a hand-computed example (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from library_helpers import item_popularity

from recommender.scoring import metrics

# Four users' top-4 lists and relevant sets; metrics are taken at K = 3.
TOP = np.array(
    [
        [3, 1, 7, 2],  # A: relevant {1, 2, 9}: top-3 hits at rank 2 only (2 is at rank 4)
        [5, 6, 8, 9],  # B: relevant {6}: hit at rank 2
        [1, 2, 3, 4],  # C: nothing relevant -> skipped by every ranking average
        [10, 11, 12, 13],  # D: relevant {2}: no hit
    ]
)
RELEVANT = [{1, 2, 9}, {6}, set(), {2}]
K = 3
LOG2_3 = math.log2(3)  # discount of rank 2 is 1/log2(3) = 0.63093


def test_rating_errors():
    y, p = [1, 2, 3, 4], [1.5, 2, 2, 5]
    # errors 0.5, 0, -1, 1 -> squares 0.25, 0, 1, 1 -> mean 2.25 / 4 = 0.5625
    assert metrics.mse(y, p) == pytest.approx(0.5625)
    assert metrics.rmse(y, p) == pytest.approx(0.75)
    # |errors| 0.5 + 0 + 1 + 1 = 2.5 -> 2.5 / 4
    assert metrics.mae(y, p) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="4 true ratings but 3"):
        metrics.rmse(y, p[:3])


def test_precision_at_k():
    # A: 1/3, B: 1/3, D: 0 -> (1/3 + 1/3 + 0) / 3 = 2/9 (C skipped)
    assert metrics.precision_at_k(TOP, RELEVANT, K) == pytest.approx(2 / 9)


def test_recall_at_k():
    # A: 1 of 3 relevant, B: 1 of 1, D: 0 of 1 -> (1/3 + 1 + 0) / 3 = 4/9
    assert metrics.recall_at_k(TOP, RELEVANT, K) == pytest.approx(4 / 9)


def test_ndcg_at_k():
    # A: DCG = 1/log2(3); ideal over min(3, 3) = 3 hits: 1 + 1/log2(3) + 1/log2(4)
    ndcg_a = (1 / LOG2_3) / (1 + 1 / LOG2_3 + 0.5)  # 0.63093 / 2.13093 = 0.29608
    # B: DCG = 1/log2(3); ideal over min(3, 1) = 1 hit: 1
    ndcg_b = 1 / LOG2_3  # 0.63093
    # D: 0 -> mean (0.29608 + 0.63093 + 0) / 3 = 0.30900
    assert metrics.ndcg_at_k(TOP, RELEVANT, K) == pytest.approx((ndcg_a + ndcg_b) / 3)
    assert metrics.ndcg_at_k(TOP, RELEVANT, K) == pytest.approx(0.30900, abs=1e-5)


def test_ndcg_ideal_list_and_partial_order():
    # 2 relevant, both at ranks 1 and 2: the ideal list -> 1.0
    assert metrics.ndcg_at_k(np.array([[4, 5, 6]]), [{4, 5}], 3) == pytest.approx(1.0)
    # hits at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.63093 -> 0.91972
    assert metrics.ndcg_at_k(np.array([[4, 9, 5]]), [{4, 5}], 3) == pytest.approx(
        1.5 / (1 + 1 / LOG2_3)
    )


def test_map_at_k():
    # A: hit at rank 2, precision@2 = 1/2; normalised by min(3, 3) = 3 -> 1/6
    # B: hit at rank 2, precision@2 = 1/2; normalised by min(3, 1) = 1 -> 1/2
    # D: 0 -> (1/6 + 1/2 + 0) / 3 = 2/9
    assert metrics.map_at_k(TOP, RELEVANT, K) == pytest.approx(2 / 9)
    # hits at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / min(3, 2) = 0.83333
    assert metrics.map_at_k(np.array([[4, 9, 5]]), [{4, 5}], 3) == pytest.approx(5 / 6)


def test_hit_rate_at_k():
    # A and B have a hit, D has none -> 2/3
    assert metrics.hit_rate_at_k(TOP, RELEVANT, K) == pytest.approx(2 / 3)


def test_padding_never_counts_as_a_hit():
    # a list padded with -1 (fewer than K candidates); -1 must not match anything
    assert metrics.precision_at_k(np.array([[7, -1, -1]]), [{7, -1}], 3) == pytest.approx(1 / 3)


def test_no_rankable_user_gives_nan_not_zero():
    assert math.isnan(metrics.ndcg_at_k(np.array([[1, 2]]), [set()], 2))


def test_shape_mismatches_are_errors():
    with pytest.raises(ValueError, match=">= 5"):
        metrics.precision_at_k(TOP, RELEVANT, 5)
    with pytest.raises(ValueError, match="4 top-K rows but 3"):
        metrics.precision_at_k(TOP, RELEVANT[:3], K)


def test_catalog_coverage():
    top = np.array([[1, 2, 3], [2, 3, 4], [0, -1, 2]])
    # distinct known items shown: {1, 2, 3, 4} (0 = OOV and -1 = padding ignored) -> 4 / 10
    assert metrics.catalog_coverage(top, n_items=10) == pytest.approx(0.4)
    # top-1 only: {1, 2, 0} -> {1, 2} -> 2 / 10
    assert metrics.catalog_coverage(top, n_items=10, k=1) == pytest.approx(0.2)


def test_novelty():
    popularity = np.array([0, 50, 10, 0])  # train ratings of items 0..3; 100 train users
    top = np.array([[1, 2], [1, 3]])
    # item 1: -log2(50/100) = 1; item 2: -log2(10/100) = 3.32193;
    # item 3 (never rated, counted as once): -log2(1/100) = 6.64386
    # mean over the 4 recommendations: (1 + 3.32193 + 1 + 6.64386) / 4 = 2.99145
    expected = (1 + math.log2(10) + 1 + math.log2(100)) / 4
    assert metrics.novelty(top, popularity, n_users=100) == pytest.approx(expected)
    assert metrics.novelty(top, popularity, n_users=100) == pytest.approx(2.99145, abs=1e-5)


def test_item_popularity_counts_per_index():
    assert item_popularity([1, 1, 3], n_items=4).tolist() == [0, 2, 0, 1, 0]


def test_relevant_items_uses_the_threshold():
    users = [1, 1, 1, 2, 3]
    items = [10, 11, 12, 10, 13]
    ratings = [5.0, 3.5, 4.0, 2.0, 4.5]
    # user 1: 10 (5.0) and 12 (4.0) pass >= 4; 11 (3.5) does not; user 2: none; user 9: unknown
    assert metrics.relevant_items(users, items, ratings, [1, 2, 9]) == [{10, 12}, set(), set()]
    assert metrics.relevant_items(users, items, ratings, [1], threshold=3.5) == [{10, 11, 12}]


def test_ranking_report_counts_skipped_users():
    popularity = np.zeros(14, dtype=int)
    report = metrics.ranking_report(
        TOP, RELEVANT, K, n_items=13, popularity=popularity, n_train_users=4
    )
    assert report["n_users_ranked"] == 3 and report["n_users_skipped"] == 1
    assert report["precision_at_3"] == pytest.approx(2 / 9)
    assert report["hit_rate_at_3"] == pytest.approx(2 / 3)
    # top-3 lists show {1, 3, 5, 6, 7, 8, 2, 10, 11, 12} = 10 distinct of 13
    assert report["coverage_at_3"] == pytest.approx(10 / 13)
    # every item unrated: log2(4 / 1) = 2 bits each
    assert report["novelty_at_3"] == pytest.approx(2.0)
