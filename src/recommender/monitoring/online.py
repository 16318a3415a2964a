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


def followed_ranges(
    lists: ServedLists, positives: Positives, horizon_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per list, the range ``[lo, hi)`` of its positives in the returned (user, time) order.

    Returns:
        ``(lo, hi, order)``: ``order`` sorts the positives by user then time.
    """
    t0 = float(min(lists.time.min(), positives.event_time.min()))
    span_s = float(max(lists.time.max() + horizon_s, positives.event_time.max())) - t0 + 1.0
    users = int(max(lists.user.max(), positives.user.max())) + 1
    # Milliseconds where the key fits in int64 with room to spare, else seconds.
    scale = 1000.0 if span_s * 1000.0 * users < 2.0**62 else 1.0
    span = int(np.ceil(span_s * scale)) + 1

    def key(user: np.ndarray, t: np.ndarray) -> np.ndarray:
        ticks = np.floor((t - t0) * scale).astype(np.int64)
        return user.astype(np.int64) * span + ticks

    pos_key = key(positives.user, positives.event_time)
    order = np.argsort(pos_key, kind="stable")
    pos_key = pos_key[order]
    lo = np.searchsorted(pos_key, key(lists.user, lists.time), side="left")
    hi = np.searchsorted(pos_key, key(lists.user, lists.time + horizon_s), side="left")
    return lo, hi, order


def online_quality(
    lists: ServedLists, positives: Positives, k: int, horizon_hours: float
) -> OnlineQuality:
    """Hit rate@K and NDCG@K over the followed lists (``None`` when no list was followed)."""
    n = len(lists.time)
    if n == 0 or len(positives.user) == 0:
        return OnlineQuality(n, 0, None, None)
    lo, hi, order = followed_ranges(lists, positives, horizon_hours * 3600.0)
    counts = hi - lo
    followed = np.flatnonzero(counts > 0)
    if followed.size == 0:
        return OnlineQuality(n, 0, None, None)
    # Every (followed list, positive) pair, then each list's distinct relevant items.
    pair_list = np.repeat(followed, counts[followed])
    starts = np.repeat(lo[followed] - np.cumsum(counts[followed]) + counts[followed],
                       counts[followed])  # fmt: skip
    pos_index = order[starts + np.arange(pair_list.size)]
    n_codes = int(max(lists.items.max(initial=0), positives.item.max())) + 1
    relevant = np.unique(pair_list * n_codes + positives.item[pos_index].astype(np.int64))
    rel_list = relevant // n_codes
    n_relevant = np.bincount(rel_list, minlength=n)

    # Where each relevant item sits in its list's first K (only the followed lists' slots).
    starts = lists.offsets[followed]
    lengths = np.minimum(lists.offsets[followed + 1] - starts, k)
    served_rank = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    served_list = np.repeat(followed, lengths)
    served_item = lists.items[np.repeat(starts, lengths) + served_rank].astype(np.int64)
    served_key = served_list * n_codes + served_item
    by_key = np.argsort(served_key, kind="stable")
    served_key, served_rank = served_key[by_key], served_rank[by_key]
    if served_key.size == 0:  # every followed list was empty: nothing could hit
        return OnlineQuality(n, int(followed.size), 0.0, 0.0)
    at = np.minimum(np.searchsorted(served_key, relevant), served_key.size - 1)
    hit = served_key[at] == relevant

    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = np.bincount(rel_list[hit], weights=discounts[served_rank[at[hit]]], minlength=n)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant[followed], k) - 1]
    ndcg = dcg[followed] / ideal
    hits = np.bincount(rel_list[hit], minlength=n)[followed] > 0
    return OnlineQuality(n, int(followed.size), float(hits.mean()), float(ndcg.mean()))


def popularity_percentiles(catalog_counts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Percentile (0-100) of each of ``counts`` among the catalog's training popularities
    (mid-rank for ties: an item as popular as every other is at 50)."""
    ranked = np.sort(np.asarray(catalog_counts))
    below = np.searchsorted(ranked, counts, side="left")
    upto = np.searchsorted(ranked, counts, side="right")
    return 100.0 * (below + 0.5 * (upto - below)) / max(len(ranked), 1)
