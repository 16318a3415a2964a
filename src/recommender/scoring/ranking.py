"""Scoring and top-K ranking: the one place both happen.

Offline evaluation and the BentoML service both call these functions, so an item the service
recommends is the item evaluation measured. Everything here is NumPy (no TensorFlow), so the
service can rank from exported factors without loading Keras.

Conventions shared with the rest of the library:

- Item index 0 is the out-of-vocabulary row: never recommended.
- Items a user rated in train are never recommended to that user again (:class:`SeenItems`).
- Ties are broken by the lower item index, so the same scores always give the same list.
- When fewer than ``k`` items are left to recommend, the list is padded with item ``-1`` and
  score ``-inf`` (the arrays stay rectangular; metrics never count ``-1`` as a hit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from recommender.scoring.factors import OOV

#: Item index that pads a top-K list shorter than ``k``.
PAD = -1


class TopK(NamedTuple):
    """Top-K items per user (best first) and their scores, both ``(n_users, k)``."""

    items: np.ndarray
    scores: np.ndarray


class SeenItems:
    """Items each user rated in train, stored compactly (CSR) to mask them out of rankings.

    A dense ``users x items`` mask would be 1.7 MB for MovieLens-100K but 9.6 GB for 25M; the CSR
    form grows with the number of ratings instead.

    Args:
        user_idx: User index of each train rating.
        item_idx: Item index of each train rating.
        n_users: Number of known users (indices ``1..n_users``; the table has ``n_users + 1`` rows).
    """

    def __init__(self, user_idx: np.ndarray, item_idx: np.ndarray, n_users: int) -> None:
        user_idx = np.asarray(user_idx, dtype=np.int64)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        if user_idx.shape != item_idx.shape:
            raise ValueError(f"user_idx {user_idx.shape} and item_idx {item_idx.shape} differ")
        if user_idx.size and (user_idx.min() < 0 or user_idx.max() > n_users):
            raise ValueError(f"user indices must lie in 0..{n_users}")
        order = np.argsort(user_idx, kind="stable")
        self.indices = item_idx[order]
        self.indptr = np.zeros(n_users + 2, dtype=np.int64)
        np.cumsum(np.bincount(user_idx, minlength=n_users + 1), out=self.indptr[1:])
        self.n_users = n_users

    def items_of(self, user: int) -> np.ndarray:
        """The items ``user`` rated in train (empty for unknown users)."""
        if not 0 <= user <= self.n_users:
            return np.empty(0, dtype=np.int64)
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each ``(users[j], items[j])`` pair was rated in train (False for users
        outside the table)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        width = max(int(self.indices.max(initial=0)), int(items.max(initial=0))) + 1
        per_user = np.diff(self.indptr)
        seen = np.repeat(np.arange(per_user.size, dtype=np.int64), per_user) * width
        seen += self.indices
        return np.isin(users * width + items, seen)

    def mask_scores(self, scores: np.ndarray, users: np.ndarray) -> None:
        """Set ``scores[r, i] = -inf`` in place for each item ``i`` that user ``users[r]`` rated."""
        users = np.asarray(users, dtype=np.int64)
        # Users outside the table (new users) have rated nothing we know of.
        known = (users >= 0) & (users <= self.n_users)
        safe = np.where(known, users, 0)
        starts = np.where(known, self.indptr[safe], 0)
        counts = np.where(known, self.indptr[safe + 1] - self.indptr[safe], 0)
        rows = np.repeat(np.arange(users.size), counts)
        # Position of each entry within its user's run, added to that run's start.
        offsets = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self.indices[np.repeat(starts, counts) + offsets]
        inside = cols < scores.shape[1]
        scores[rows[inside], cols[inside]] = -np.inf


def top_k(
    scores: np.ndarray,
    k: int,
    *,
    users: np.ndarray | None = None,
    seen: SeenItems | None = None,
    exclude_oov: bool = True,
    allowed: np.ndarray | None = None,
) -> TopK:
    """The ``k`` best items of each row of a score matrix.

    Args:
        scores: ``(n_rows, n_items + 1)`` scores, column = item index. Not modified.
        k: How many items per row.
        users: The user index of each row; needed with ``seen``.
        seen: Items to exclude per user (their train ratings).
        exclude_oov: Never return item 0 (the out-of-vocabulary row).
        allowed: Boolean mask over the columns; items outside it are never returned.

    Returns:
        Items and scores, best first; ties go to the lower item index; rows with fewer than ``k``
        eligible items are padded with item ``-1`` / score ``-inf``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = np.array(scores, dtype=np.float64, ndmin=2)  # a copy: masking writes into it
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if exclude_oov:
        scores[:, OOV] = -np.inf
    if allowed is not None:
        scores[:, ~np.asarray(allowed, dtype=bool)] = -np.inf
    if seen is not None:
        if users is None:
            raise ValueError("top_k needs `users` to exclude seen items")
        seen.mask_scores(scores, users)
    n_rows, n_cols = scores.shape
    kk = min(k, n_cols)
    # argpartition finds each row's k best in O(n); only those k are then sorted.
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # by score desc, then index asc
    items = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    # argpartition picks arbitrarily among items tied with the k-th score; where such a tie
    # straddles the cut, redo that row with a stable full sort so the lower indices win.
    kth = best[:, -1:]
    above = (scores > kth).sum(axis=1)
    tied = (scores == kth).sum(axis=1)
    redo = np.flatnonzero(above + tied > kk)
    if redo.size:
        full = np.argsort(-scores[redo], axis=1, kind="stable")[:, :kk]
        items[redo] = full
        best[redo] = np.take_along_axis(scores[redo], full, axis=1)
    items = items.astype(np.int64)
    items[np.isneginf(best)] = PAD
    if kk < k:
        items = np.pad(items, ((0, 0), (0, k - kk)), constant_values=PAD)
        best = np.pad(best, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return TopK(items, best)


#: Most score cells (users x items) ranked in one block: bounds memory whatever the number of
#: users (32 MB of float64 scores, plus the scorer's own block).
MAX_BLOCK_CELLS = 4_000_000


def rank(
    score_rows: Callable[[np.ndarray], np.ndarray],
    users: Sequence[int] | np.ndarray,
    k: int,
    n_cols: int,
    *,
    seen: SeenItems | None = None,
    allowed: np.ndarray | None = None,
    max_cells: int = MAX_BLOCK_CELLS,
) -> TopK:
    """Top-``k`` items for each user, scoring a block of users at a time: the one ranking path.

    Offline evaluation, the popularity baseline and the service all rank through here, so what
    the endpoint serves is what evaluation measured, and memory stays at about ``max_cells``
    scores whatever the number of users.

    Args:
        score_rows: Scores a block of user indices: ``(len(block), n_cols)``, column = item index.
        users: User indices to rank for.
        k: How many items per user.
        n_cols: Columns ``score_rows`` returns (``n_items + 1``).
        seen: Leave out each user's train items.
        allowed: Boolean mask over item indices; the others are left out (e.g. a genre filter).
        max_cells: Block size in score cells (users per block = ``max_cells // n_cols``).
    """
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    per_block = max(1, max_cells // max(n_cols, 1))
    items = np.full((users.size, k), PAD, dtype=np.int64)
    scores = np.full((users.size, k), -np.inf)
    for s in range(0, users.size, per_block):
        block = users[s : s + per_block]
        part = top_k(score_rows(block), k, users=block, seen=seen, allowed=allowed)
        items[s : s + block.size] = part.items
        scores[s : s + block.size] = part.scores
    return TopK(items, scores)


def similar_items(item_vectors: np.ndarray, item_idx: int, k: int) -> TopK:
    """The ``k`` items most similar to ``item_idx`` by cosine similarity of their vectors.

    The item itself and the OOV row are excluded; an all-zero vector is similar to nothing
    (similarity 0). Returns 1-D ``items`` and ``scores`` (cosine similarities), best first.
    """
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if not 0 < item_idx < vectors.shape[0]:
        raise ValueError(
            f"item_idx must be a known item, 1..{vectors.shape[0] - 1}; got {item_idx}"
        )
    norms = np.linalg.norm(vectors, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    sims = (vectors @ vectors[item_idx]) / (safe * safe[item_idx])
    sims[item_idx] = -np.inf
    result = top_k(sims[None, :], k)
    return TopK(result.items[0], result.scores[0])
