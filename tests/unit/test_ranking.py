"""Scoring and top-K: exclusions, deterministic ties, batching, factors and similar items."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.scoring import ranking
from recommender.scoring.factors import Factors
from recommender.scoring.ranking import PAD, SeenItems, top_k


def _reference_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Slow, obviously correct: a stable sort of every row (lower index first among ties)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_oov_is_excluded_and_ties_go_to_the_lower_index():
    scores = np.array([[0.9, 0.1, 0.5, 0.3, 0.5]])  # item 0 (OOV) has the best score
    result = top_k(scores, 3)
    assert result.items.tolist() == [[2, 4, 3]]  # 2 and 4 tie at 0.5: 2 first
    assert result.scores.tolist() == [[0.5, 0.5, 0.3]]


def test_tie_straddling_the_cut_keeps_the_lowest_indices():
    scores = np.array([[0.0, 1.0, 2.0, 1.0, 1.0, 1.0]])
    # 2 is best; then four items tie at 1.0 for one remaining place -> the lowest, item 1
    assert top_k(scores, 2).items.tolist() == [[2, 1]]


def test_matches_a_stable_full_sort_on_heavily_tied_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(60, 40)).astype(float)  # 4 distinct values: many ties
    for k in (1, 5, 13, 39):
        expected = _reference_top_k(np.where(np.arange(40) == 0, -np.inf, scores), k)
        assert np.array_equal(top_k(scores, k).items, expected), k


def test_input_scores_are_not_modified():
    scores = np.array([[0.9, 0.1, 0.5]])
    top_k(scores, 1, users=np.array([1]), seen=SeenItems(np.array([1]), np.array([2]), 1))
    assert scores.tolist() == [[0.9, 0.1, 0.5]]


def test_seen_items_are_excluded_per_user():
    # user 1 rated items 2 and 3; user 2 rated item 1; user 3 rated nothing
    seen = SeenItems(np.array([1, 2, 1]), np.array([3, 1, 2]), n_users=3)
    assert sorted(seen.items_of(1).tolist()) == [2, 3]
    scores = np.tile(np.array([0.0, 4.0, 3.0, 2.0, 1.0]), (3, 1))
    result = top_k(scores, 2, users=np.array([1, 2, 3]), seen=seen)
    assert result.items.tolist() == [[1, 4], [2, 3], [1, 2]]


def test_unknown_users_have_nothing_excluded():
    seen = SeenItems(np.array([1]), np.array([1]), n_users=1)
    scores = np.array([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    result = top_k(scores, 1, users=np.array([0, 99]), seen=seen)
    assert result.items.tolist() == [[1], [1]]


def test_too_few_candidates_are_padded():
    seen = SeenItems(np.array([1, 1]), np.array([1, 2]), n_users=1)
    scores = np.array([[0.0, 5.0, 4.0, 3.0]])  # items 1, 2 seen, 0 is OOV: only item 3 is left
    result = top_k(scores, 3, users=np.array([1]), seen=seen)
    assert result.items.tolist() == [[3, PAD, PAD]]
    assert result.scores[0, 0] == 3.0 and np.isneginf(result.scores[0, 1:]).all()
    # k beyond the catalog: padded too
    assert top_k(np.array([[0.0, 1.0]]), 3).items.tolist() == [[1, PAD, PAD]]


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k(np.zeros((1, 3)), 0)
    with pytest.raises(ValueError, match="needs `users`"):
        top_k(np.zeros((1, 3)), 1, seen=SeenItems(np.array([1]), np.array([1]), 1))
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.0, np.nan]]), 1)


def _factors() -> Factors:
    return Factors(
        user_vectors=np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]),
        item_vectors=np.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0], [0.0, 3.0]]),
        user_bias=np.array([0.0, 0.5, -0.5]),
        item_bias=np.array([0.0, 0.1, 0.2, 0.3]),
        global_mean=3.0,
    )


def test_factor_scores_by_hand():
    f = _factors()
    # user 1 = [1, 0]: item 1: 3 + 0.5 + 0.1 + 1 = 4.6; item 2: 3 + 0.5 + 0.2 + 2 = 5.7;
    # item 3: 3 + 0.5 + 0.3 + 0 = 3.8
    assert f.score(np.array([1]))[0, 1:] == pytest.approx([4.6, 5.7, 3.8])
    # user 2 = [0, 2], item 3 = [0, 3]: 3 - 0.5 + 0.3 + 6 = 8.8 (unclipped: ranking needs order)
    assert f.predict(np.array([2]), np.array([3])) == pytest.approx([8.8])
    # an index outside the table is scored as row 0: 3 + 0 + 0.1 + 0 = 3.1
    assert f.predict(np.array([7]), np.array([1])) == pytest.approx([3.1])


def test_recommend_batches_equal_one_big_batch():
    rng = np.random.default_rng(1)
    f = Factors(
        rng.normal(size=(11, 4)),
        rng.normal(size=(30, 4)),
        rng.normal(size=11),
        rng.normal(size=30),
        3.5,
    )
    seen = SeenItems(rng.integers(1, 11, 50), rng.integers(1, 30, 50), n_users=10)
    users = np.arange(1, 11)
    whole = ranking.rank(f.score, users, 5, 30, seen=seen, max_cells=10_000)
    batched = ranking.rank(f.score, users, 5, 30, seen=seen, max_cells=3 * 30)  # 3 users a block
    np.testing.assert_array_equal(whole.items, batched.items)
    np.testing.assert_array_equal(whole.scores, batched.scores)
    expected = top_k(f.score(users), 5, users=users, seen=seen)
    np.testing.assert_array_equal(whole.items, expected.items)
    # A genre-like filter leaves out the items outside the mask, in every block.
    allowed = np.arange(30) % 2 == 0
    filtered = ranking.rank(f.score, users, 5, 30, seen=seen, allowed=allowed, max_cells=90)
    kept = filtered.items[filtered.items != PAD]
    assert kept.size and (kept % 2 == 0).all()


def test_factors_save_and_load(tmp_path):
    f = _factors()
    f.save(tmp_path / "factors.npz")
    g = Factors.load(tmp_path / "factors.npz")
    assert np.array_equal(f.item_vectors, g.item_vectors) and g.global_mean == 3.0
    assert np.array_equal(f.score(np.array([1, 2])), g.score(np.array([1, 2])))


def test_similar_items_by_cosine():
    vectors = np.array(
        [
            [1.0, 0.0],  # 0: OOV, identical direction to item 1 but never returned
            [1.0, 0.0],  # 1: the query
            [2.0, 0.0],  # 2: same direction -> 1
            [0.0, 1.0],  # 3: orthogonal -> 0
            [-1.0, 0.0],  # 4: opposite -> -1
            [0.0, 0.0],  # 5: zero vector -> 0, after 3 (lower index wins the tie)
        ]
    )
    result = ranking.similar_items(vectors, 1, 4)
    assert result.items.tolist() == [2, 3, 5, 4]
    assert result.scores.tolist() == pytest.approx([1.0, 0.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="known item"):
        ranking.similar_items(vectors, 0, 3)


def test_movielens_sized_ranking_is_correct():
    rng = np.random.default_rng(2)
    n_users, n_items = 1000, 1700
    f = Factors(
        rng.normal(size=(n_users + 1, 32)),
        rng.normal(size=(n_items + 1, 32)),
        np.zeros(n_users + 1),
        np.zeros(n_items + 1),
    )
    seen = SeenItems(
        rng.integers(1, n_users + 1, 100_000), rng.integers(1, n_items + 1, 100_000), n_users
    )
    users = np.arange(1, n_users + 1)
    result = ranking.rank(f.score, users, 10, n_items + 1, seen=seen)  # several blocks
    for row, u in enumerate(users[:50]):
        assert not set(result.items[row].tolist()) & set(seen.items_of(u).tolist())
    masked = f.score(users)
    seen.mask_scores(masked, users)
    masked[:, 0] = -np.inf
    assert np.array_equal(result.items, _reference_top_k(masked, 10))


def test_seen_items_knows_which_pairs_were_rated_in_train() -> None:
    seen = SeenItems(np.array([1, 1, 2]), np.array([3, 5, 3]), n_users=3)
    got = seen.contains(np.array([1, 1, 2, 2, 3, 9]), np.array([3, 4, 3, 5, 3, 3]))
    # user 3 rated nothing; user 9 is outside the table; item 4 is no one's
    assert got.tolist() == [True, False, True, False, False, False]
