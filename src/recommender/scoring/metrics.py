"""Rating and ranking metrics (NumPy only).

Rating metrics compare predicted with observed ratings. Ranking metrics take, per user, the top-K
item indices a model recommended (a ``(n_users, >= K)`` array, best first, as returned by
:func:`recommender.scoring.ranking.top_k`) and the set of that user's relevant test items: those
rated at least ``threshold`` (default 4 on a 1-5 scale). Relevance is binary.

Users with no relevant test item cannot be ranked well or badly, so every ranking average skips
them; :func:`ranking_report` says how many were skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recommender.scoring.bundle import ModelBundle

#: Default relevance threshold: a test rating of 4 or 5 (out of 5) counts as relevant.
RELEVANCE_THRESHOLD = 4.0


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true ratings but {y_pred.size} predictions")
    if y_true.size == 0:
        raise ValueError("no ratings to score")
    return y_true, y_pred


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(y_true, y_pred)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def relevant_items(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    rating: np.ndarray,
    users: Sequence[int] | np.ndarray,
    threshold: float = RELEVANCE_THRESHOLD,
) -> list[set[int]]:
    """For each user in ``users``, the set of their items rated at least ``threshold``."""
    user_idx = np.asarray(user_idx)
    keep = np.asarray(rating) >= threshold
    by_user: dict[int, set[int]] = {}
    for u, i in zip(user_idx[keep].tolist(), np.asarray(item_idx)[keep].tolist(), strict=True):
        by_user.setdefault(u, set()).add(i)
    return [by_user.get(int(u), set()) for u in users]


def _hits(
    top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix ``(n_ranked_users, k)`` and relevant counts, for users with any relevant item."""
    top_items = np.asarray(top_items)
    if top_items.ndim != 2 or top_items.shape[1] < k:
        raise ValueError(f"top_items must be (n_users, >= {k}), got shape {top_items.shape}")
    if len(relevant) != top_items.shape[0]:
        raise ValueError(f"{top_items.shape[0]} top-K rows but {len(relevant)} relevant sets")
    rows = [r for r in range(len(relevant)) if len(relevant[r]) > 0]
    hits = np.zeros((len(rows), k), dtype=bool)
    for out, r in enumerate(rows):
        rel = relevant[r]
        hits[out] = [i >= 0 and int(i) in rel for i in top_items[r, :k]]  # -1 pads, never hits
    n_rel = np.array([len(relevant[r]) for r in rows], dtype=np.float64)
    return hits, n_rel


def _mean(values: np.ndarray) -> float:
    # No rankable user: the metric is undefined, reported as NaN rather than a flattering 0.
    return float(values.mean()) if values.size else float("nan")


def precision_at_k(top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> float:
    """Mean over users of (relevant items in the top K) / K."""
    hits, _ = _hits(top_items, relevant, k)
    return _mean(hits.sum(axis=1) / k)


def recall_at_k(top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> float:
    """Mean over users of (relevant items in the top K) / (number of relevant items)."""
    hits, n_rel = _hits(top_items, relevant, k)
    return _mean(hits.sum(axis=1) / n_rel)


def discounts(k: int) -> np.ndarray:
    """NDCG's discount of ranks 1..k: ``1 / log2(rank + 1)``."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_per_user(top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> np.ndarray:
    """NDCG@K of each user with a relevant item, in row order (the register gate's bootstrap
    resamples these): DCG = sum of 1/log2(rank + 1) over hits, over the ideal DCG.

    The ideal list puts min(K, n_relevant) hits first, so a user with 2 relevant items who gets
    both at ranks 1 and 2 scores 1.0.
    """
    hits, n_rel = _hits(top_items, relevant, k)
    disc = discounts(k)
    dcg = hits @ disc
    ideal = np.cumsum(disc)[np.minimum(n_rel, k).astype(int) - 1]
    return np.asarray(dcg / ideal, dtype=np.float64)


def ndcg_at_k(top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> float:
    """Mean NDCG@K over users with a relevant item (:func:`ndcg_per_user`)."""
    return _mean(ndcg_per_user(top_items, relevant, k))


def map_at_k(top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> float:
    """Mean average precision at K.

    AP@K = sum over hit ranks r <= K of precision@r, divided by min(K, n_relevant).
    """
    hits, n_rel = _hits(top_items, relevant, k)
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision_at_rank * hits).sum(axis=1) / np.minimum(n_rel, k)
    return _mean(ap)


def hit_rate_at_k(top_items: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> float:
    """Share of users with at least one relevant item in their top K."""
    hits, _ = _hits(top_items, relevant, k)
    return _mean(np.asarray(hits.any(axis=1), dtype=np.float64))


def catalog_coverage(top_items: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Share of the catalog (known items ``1..n_items``) that appears in any top-K list."""
    top = np.asarray(top_items)
    if k is not None:
        top = top[:, :k]
    shown = np.unique(top)
    shown = shown[(shown >= 1) & (shown <= n_items)]  # neither padding (-1) nor OOV (0)
    return shown.size / n_items


def novelty(
    top_items: np.ndarray, popularity: np.ndarray, n_users: int, k: int | None = None
) -> float:
    """Mean self-information of the recommended items, in bits.

    An item rated in train by a share ``p`` of the users carries ``-log2(p)`` bits: recommending
    what everyone has seen is not news. Items with no train rating count as rated once, so their
    novelty is the finite ``log2(n_users)``. Padding (-1) is ignored.

    Args:
        top_items: ``(n_users, >= K)`` recommended items.
        popularity: Train ratings per item index (``n_items + 1`` entries); each user rates an
            item at most once, so it counts users.
        n_users: Users in train (the denominator of the share).
        k: Use only the first ``k`` columns (all when None).
    """
    top = np.asarray(top_items)
    if k is not None:
        top = top[:, :k]
    shown = top[top >= 0]
    if shown.size == 0:
        return float("nan")
    share = np.maximum(np.asarray(popularity, dtype=np.float64)[shown], 1.0) / n_users
    return float(np.mean(-np.log2(share)))


def ranking_report(
    top_items: np.ndarray,
    relevant: Sequence[Collection[int]],
    k: int,
    *,
    n_items: int,
    popularity: np.ndarray | None = None,
    n_train_users: int | None = None,
) -> dict[str, float | int]:
    """Every ranking metric at ``k`` in one dict (keys like ``ndcg_at_10``).

    Coverage and novelty use all users' lists (they describe what is shown, relevant or not);
    the accuracy metrics average over users with at least one relevant item. ``n_users_ranked``
    and ``n_users_skipped`` count the two groups.
    """
    n_ranked = sum(1 for r in relevant if len(r) > 0)
    report: dict[str, float | int] = {
        f"precision_at_{k}": precision_at_k(top_items, relevant, k),
        f"recall_at_{k}": recall_at_k(top_items, relevant, k),
        f"ndcg_at_{k}": ndcg_at_k(top_items, relevant, k),
        f"map_at_{k}": map_at_k(top_items, relevant, k),
        f"hit_rate_at_{k}": hit_rate_at_k(top_items, relevant, k),
        f"coverage_at_{k}": catalog_coverage(top_items, n_items, k),
        "n_users_ranked": n_ranked,
        "n_users_skipped": len(relevant) - n_ranked,
    }
    if popularity is not None:
        if n_train_users is None:
            raise ValueError("novelty needs n_train_users along with popularity")
        report[f"novelty_at_{k}"] = novelty(top_items, popularity, n_train_users, k)
    return report


def relevant_sets(part: Any, users: np.ndarray, threshold: float) -> list[set[int]]:
    """Each user's items in ``part`` rated at least ``threshold``; cold items (0) left out:
    they cannot be recommended."""
    relevant = relevant_items(
        part["user_idx"].to_numpy(), part["item_idx"].to_numpy(), part["rating"].to_numpy(),
        users, threshold,
    )  # fmt: skip
    return [{item for item in r if item != 0} for r in relevant]


def ndcg_by_user(
    bundle: ModelBundle,
    reference: ModelBundle,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    ratings: np.ndarray,
    k: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@k of each test user, for comparing two models on the same users and relevant sets.

    The register gate ranks the candidate and the champion each with its own vocabulary and its
    own top-K path (its own train items masked). Relevance is judged in the ``reference`` model's
    item indices (the candidate's: both models face the same relevant sets): the test items rated
    at least ``threshold`` that it knows. Users (raw ids) with no such item are left out.

    Returns:
        The users (raw ids, sorted) and their NDCG@k (:func:`ndcg_per_user`), aligned.
    """
    items = reference.item_index(item_ids)
    keep = (np.asarray(ratings) >= threshold) & (items > 0)
    relevant_by_user: dict[Any, set[int]] = {}
    for user, item in zip(np.asarray(user_ids)[keep].tolist(), items[keep].tolist(), strict=True):
        relevant_by_user.setdefault(user, set()).add(item)
    users = sorted(relevant_by_user)
    if not users:
        return np.array([], dtype=object), np.empty(0)
    top = bundle.recommend(bundle.user_index(users), k).items
    raw = bundle.item_vocab.decode(np.where(top < 0, 0, top))  # padding -> None -> index 0
    top_in_reference = reference.item_index(raw.reshape(-1)).reshape(top.shape)
    relevant = [relevant_by_user[u] for u in users]
    return np.array(users, dtype=object), ndcg_per_user(top_in_reference, relevant, k)
