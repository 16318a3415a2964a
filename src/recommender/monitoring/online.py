"""Online quality: what the ``recommend`` endpoint served, judged by the feedback that followed.

A served list is *followed* when the same user sends positive feedback (a rating of at least
``evaluate.relevance_threshold``, or a ``click``, ``add_to_cart`` or ``purchase``) with an
``event_time`` in ``[time, time + horizon)`` after the list's ``time``. The items of that feedback
are the list's relevant set, and the list is scored as offline evaluation scores a user's top-K
(:mod:`recommender.scoring.metrics`): hit rate@K (any relevant item in the first K) and NDCG@K
(binary gains, the ideal list holding ``min(K, relevant)`` hits). Lists nobody followed are
skipped, as offline evaluation skips users with no relevant test item.

Everything is vectorised over the lists: the positives are sorted by (user, time) and each list
finds its own with two binary searches on an int64 key, so a million lists take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender.scoring.metrics import discounts

#: Feedback events that count as positive whatever the rating.
POSITIVE_EVENTS = ("click", "add_to_cart", "purchase")


@dataclass(frozen=True)
class ServedLists:
    """``recommend`` answers: ``time``, ``user`` codes and the items (codes, flat, best first)."""

    time: np.ndarray
    user: np.ndarray
    offsets: np.ndarray  # len(time) + 1; list i is items[offsets[i]:offsets[i + 1]]
    items: np.ndarray


@dataclass(frozen=True)
class Positives:
    """Positive feedback: ``user`` and ``item`` codes and ``event_time`` (unix seconds)."""

    user: np.ndarray
    item: np.ndarray
    event_time: np.ndarray


@dataclass(frozen=True)
class OnlineQuality:
    served: int
    followed: int
    hit_rate: float | None
    ndcg: float | None


#: Most (list, positive) pairs or served slots handled at once: bounds the memory of a window
#: whose users send much feedback (about 100 MB of temporary arrays a block).
BLOCK = 2_000_000


@dataclass(frozen=True)
class _Index:
    """The positives, indexed for the per-list questions, on one integer clock (``ticks``).

    ``by_user``: positions sorted by (user, tick), with ``user_key`` (user * span + tick) to find
    a list's range; ``prev``: each positive's previous positive on the same (user, item), in
    ticks (-1 for none), which tells a repeat from a new relevant item; ``pair_key`` (pair rank *
    span + tick, sorted) and ``pair_codes`` (the distinct user * n_items + item) find whether a
    served item was a positive of its list.
    """

    t0: float
    scale: float
    span: int
    horizon: int
    by_user: np.ndarray
    user_key: np.ndarray
    prev: np.ndarray
    pair_codes: np.ndarray
    pair_key: np.ndarray
    n_items: int

    def ticks(self, t: np.ndarray) -> np.ndarray:
        return _ticks(t, self.t0, self.scale)


def _ticks(t: np.ndarray, t0: float, scale: float) -> np.ndarray:
    return np.floor((np.asarray(t, np.float64) - t0) * scale).astype(np.int64)


def _index(lists: ServedLists, positives: Positives, horizon_s: float) -> _Index:
    t0 = float(min(lists.time.min(), positives.event_time.min()))
    span_s = float(max(lists.time.max() + horizon_s, positives.event_time.max())) - t0 + 1.0
    users = int(max(lists.user.max(), positives.user.max())) + 1
    n_items = int(max(lists.items.max(initial=0), positives.item.max())) + 1
    # Milliseconds where every key fits in int64 with room to spare, else seconds.
    scale = 1000.0 if span_s * 1000.0 * max(users, len(positives.user)) < 2.0**62 else 1.0
    span = int(np.ceil(span_s * scale)) + 1
    tick = _ticks(positives.event_time, t0, scale)
    user = positives.user.astype(np.int64)
    user_key = user * span + tick
    by_user = np.argsort(user_key, kind="stable")
    pair = user * n_items + positives.item.astype(np.int64)
    pair_codes, pair_rank = np.unique(pair, return_inverse=True)
    pair_key = pair_rank.astype(np.int64) * span + tick
    by_pair = np.argsort(pair_key, kind="stable")
    sorted_rank = pair_rank[by_pair]
    prev_sorted = np.full(by_pair.size, -1, dtype=np.int64)
    same = sorted_rank[1:] == sorted_rank[:-1]
    prev_sorted[1:][same] = tick[by_pair][:-1][same]
    prev = np.empty_like(prev_sorted)
    prev[by_pair] = prev_sorted
    horizon = int(round(horizon_s * scale))
    return _Index(t0, scale, span, horizon, by_user, user_key[by_user], prev, pair_codes,
                  pair_key[by_pair], n_items)  # fmt: skip


def _blocks(weights: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive ranges of items whose ``weights`` sum to about :data:`BLOCK` (one item
    heavier than that makes a block of its own)."""
    total = np.cumsum(weights)
    cuts = np.searchsorted(total, np.arange(BLOCK, int(total[-1]), BLOCK), side="left") + 1
    bounds = np.unique(np.concatenate([[0], cuts, [len(weights)]])).tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _relevant_counts(
    idx: _Index, lo: np.ndarray, counts: np.ndarray, list_tick: np.ndarray
) -> np.ndarray:
    """Distinct relevant items of each list: its positives whose previous positive on the same
    item came before the list (a repeat inside the horizon is the same relevant item)."""
    local = np.repeat(np.arange(len(lo)), counts)
    first = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    positive = idx.by_user[first + np.arange(local.size)]
    new = idx.prev[positive] < list_tick[local]
    return np.bincount(local, weights=new, minlength=len(lo))


def _dcg(
    idx: _Index, lists: ServedLists, ids: np.ndarray, list_tick: np.ndarray, k: int
) -> np.ndarray:
    """DCG@K of lists ``ids``: each of their first K items that the user's positives within the
    horizon hold adds the discount of its rank."""
    starts = lists.offsets[ids]
    lengths = np.minimum(lists.offsets[ids + 1] - starts, k)
    local = np.repeat(np.arange(len(ids)), lengths)
    rank = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    item = lists.items[np.repeat(starts, lengths) + rank].astype(np.int64)
    code = lists.user[ids][local].astype(np.int64) * idx.n_items + item
    at = np.minimum(np.searchsorted(idx.pair_codes, code), idx.pair_codes.size - 1)
    known = idx.pair_codes[at] == code
    t = list_tick[local]
    first = np.searchsorted(idx.pair_key, at * idx.span + t, side="left")
    found = np.minimum(first, idx.pair_key.size - 1)
    # The pair's first positive at or after the list: within the horizon, and still this pair.
    hit = known & (first < idx.pair_key.size) & (idx.pair_key[found] < at * idx.span + t
                                                 + idx.horizon)  # fmt: skip
    # An item served twice in one list counts once, at its first rank.
    hit_at = np.flatnonzero(hit)
    _, first_of = np.unique(local[hit_at] * idx.n_items + item[hit_at], return_index=True)
    hit_at = hit_at[first_of]
    return np.bincount(local[hit_at], weights=discounts(k)[rank[hit_at]], minlength=len(ids))


def online_quality(
    lists: ServedLists, positives: Positives, k: int, horizon_hours: float
) -> OnlineQuality:
    """Hit rate@K and NDCG@K over the followed lists (``None`` when no list was followed)."""
    n = len(lists.time)
    if n == 0 or len(positives.user) == 0:
        return OnlineQuality(n, 0, None, None)
    idx = _index(lists, positives, horizon_hours * 3600.0)
    list_tick = idx.ticks(lists.time)
    start = lists.user.astype(np.int64) * idx.span + list_tick
    lo = np.searchsorted(idx.user_key, start, side="left")
    counts = np.searchsorted(idx.user_key, start + idx.horizon, side="left") - lo
    followed = np.flatnonzero(counts > 0)
    if followed.size == 0:
        return OnlineQuality(n, 0, None, None)
    ideal_of = np.cumsum(discounts(k))
    weight = counts[followed] + k  # pairs and served slots a list costs
    ndcg_sum = hits = 0.0
    for a, b in _blocks(weight):
        ids = followed[a:b]
        n_rel = _relevant_counts(idx, lo[ids], counts[ids], list_tick[ids])
        dcg = _dcg(idx, lists, ids, list_tick[ids], k)
        ideal = ideal_of[np.clip(n_rel.astype(np.int64), 1, k) - 1]
        ndcg_sum += float((dcg / ideal).sum())
        hits += float(np.count_nonzero(dcg > 0))
    m = followed.size
    return OnlineQuality(n, int(m), hits / m, ndcg_sum / m)


def popularity_percentiles(catalog_counts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Percentile (0-100) of each of ``counts`` among the catalog's training popularities
    (mid-rank for ties: an item as popular as every other is at 50)."""
    ranked = np.sort(np.asarray(catalog_counts))
    below = np.searchsorted(ranked, counts, side="left")
    upto = np.searchsorted(ranked, counts, side="right")
    return 100.0 * (below + 0.5 * (upto - below)) / max(len(ranked), 1)
