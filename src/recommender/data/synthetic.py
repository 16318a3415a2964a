"""A seeded generator of MovieLens-like ratings: the default source, needing no download.

The data has the structure a recommender is meant to find, so that models can be tested on it:

- **Who rates what** is long-tailed: user activity is lognormal, item popularity Zipf-like. Every
  item has at least one rating and every user about 20 or more (as in MovieLens), and each
  (user, item) pair occurs once.
- **Ratings** come from a low-rank model, ``mu + b_user + b_item + <p_user, q_item> + noise``,
  rounded and clipped to the rating scale (mean about 3.5). Popular items are liked a little more.
  A factor model therefore beats a bias-only one, by a margin set by ``noise_std``.
- **Side information** carries signal: an item's genres are thresholded projections of its
  factors, and a user's age, gender and occupation lean on theirs, so a content-aware model has
  something to learn.

Same config and seed, same tables (and the same Parquet bytes once written).

Example:
    >>> from recommender.core.config import SyntheticConfig
    >>> ds = generate(SyntheticConfig(n_users=50, n_items=80, n_ratings=2000), seed=0)
    >>> len(ds.ratings)
    2000
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from recommender.core.config import RatingScale, SyntheticConfig
from recommender.core.errors import ConfigError
from recommender.core.schema import (
    ITEM,
    ITEM_COLUMNS,
    RATING,
    RATING_COLUMNS,
    SOURCE_SCALES,
    TIMESTAMP,
    USER,
    USER_COLUMNS,
    Dataset,
    DatasetInfo,
)

#: MovieLens' genres with roughly their share of ML-100K's items (extra genres get 3%).
GENRES: dict[str, float] = {
    "Drama": 0.43, "Comedy": 0.30, "Thriller": 0.15, "Action": 0.15, "Romance": 0.15,
    "Adventure": 0.08, "Children's": 0.07, "Crime": 0.06, "Sci-Fi": 0.06, "Horror": 0.05,
    "War": 0.04, "Mystery": 0.035, "Musical": 0.035, "Documentary": 0.03, "Animation": 0.025,
    "Western": 0.016, "Film-Noir": 0.014, "Fantasy": 0.013,
}  # fmt: skip

#: ML-100K's occupations with their counts among its 943 users.
OCCUPATIONS: dict[str, int] = {
    "student": 196, "other": 105, "educator": 95, "administrator": 79, "engineer": 67,
    "programmer": 66, "librarian": 51, "writer": 45, "executive": 32, "scientist": 31,
    "artist": 28, "technician": 27, "marketing": 26, "entertainment": 18, "healthcare": 16,
    "retired": 14, "lawyer": 12, "salesman": 12, "none": 9, "homemaker": 7, "doctor": 7,
}  # fmt: skip

#: How many ratings a user gets at least, when the total allows it (MovieLens' own rule).
MIN_PER_USER = 20
#: Std of the user x item interaction <p, q>. With noise_std 0.6, a rank-8 ALS beats the bias-only
#: model by ~0.15 RMSE (0.78 vs 0.93); on ML-100K the gap is smaller (~0.03).
INTERACTION_STD = 0.8
GLOBAL_MEAN = 2.9  # observed mean ends near 3.5: selection lifts it
USER_BIAS_STD, ITEM_BIAS_STD = 0.4, 0.45
#: Item popularity is Zipf-Mandelbrot, 1 / (rank + offset) ** exponent: a long tail without
#: every user rating the same few hits.
POPULARITY_EXPONENT, POPULARITY_OFFSET = 1.3, 10
#: How strongly taste (<p, q> in units of its std) tilts which items a user rates.
SELECTION_BIAS = 0.5
#: Cap on the cells of one user-chunk x items block (bounds memory for large configs). The chunk
#: boundaries are part of the output's definition (the taste product is computed per chunk), so
#: this value must not change.
_BLOCK = 4_000_000
#: Ratings per chunk when turning pairs into ratings and times (bounds the temporaries).
_ROWS = 1_000_000
#: Above this many user x item cells, items are drawn by rejection (sampling work ~ ratings)
#: rather than by a key on every cell: the same law, another random stream. At or under it (the
#: default set, ML-1M's shape) the tables are what they always were.
_DENSE_CELLS = 100_000_000
#: Users with ``counts * _ROW_FACTOR >= n_items`` keep the per-cell draw even above it: their row
#: costs at most this many cells per rating, and rejection would mostly redraw taken items.
_ROW_FACTOR = 8
#: Ratings per group of users drawn together by rejection (bounds the draws' temporaries).
_REJECTION_GROUP = 100_000
#: Above ``_DENSE_CELLS`` the ratings are made in blocks of consecutive users holding about this
#: many ratings, each block from a random stream of its own (:func:`block_ratings`): a block is a
#: pure function of (config, seed, block), so the blocks can be made anywhere, in any order and
#: in parallel (Spark's executors do) and concatenated. Part of the output's definition.
BLOCK_RATINGS = 1_000_000


def _per_user_counts(
    rng: np.random.Generator, activity: np.ndarray, first: np.ndarray, n_items: int, total: int
) -> np.ndarray:
    """How many ratings each user gets: at least ``first`` (their share of the one-rating-per-item
    pass) and ~MIN_PER_USER, the rest in proportion to activity, never more than ``n_items``."""
    n_users = len(activity)
    floor = min(MIN_PER_USER, n_items, total // n_users)
    while np.maximum(first, floor).sum() > total:
        floor -= 1
    counts = np.maximum(first, floor)
    weights = activity / activity.sum()
    counts = counts + rng.multinomial(total - counts.sum(), weights)
    while (over := np.maximum(counts - n_items, 0).sum()) > 0:
        counts = np.minimum(counts, n_items)
        room = np.where(counts < n_items, weights, 0.0)
        counts = counts + rng.multinomial(over, room / room.sum())
    return counts


class _Draw(NamedTuple):
    """What both item draws read, and ``out``, the items they write: user ``u``'s
    ``counts[u]`` items go to ``out[starts[u]:starts[u + 1]]``."""

    counts: np.ndarray
    popularity: np.ndarray
    first_user: np.ndarray
    p: np.ndarray
    q: np.ndarray
    starts: np.ndarray
    out: np.ndarray


def _sample_pairs(
    rng: np.random.Generator,
    counts: np.ndarray,
    popularity: np.ndarray,
    first_user: np.ndarray,
    affinity: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``counts[u]`` distinct items per user, including the pairs (first_user[i], i) that give
    every item a rating; the others by successive sampling without replacement, item ``i`` drawn
    for user ``u`` with weight ``popularity[i] * exp(beta * <p_u, q_i>)``, ``beta`` being
    ``SELECTION_BIAS / INTERACTION_STD`` (taste tilts the choice).

    Up to ``_DENSE_CELLS`` user x item cells, by a Gumbel key on every cell (:func:`_draw_rows`);
    above, every user but the heaviest by rejection from the popularity law
    (:func:`_draw_by_rejection`): its sampling grows with the ratings, and what it does per cell
    (one k-flop product, for the envelope) costs a fraction of a Gumbel key and a partition.
    """
    n_users, n_items = len(counts), len(popularity)
    starts = np.concatenate([[0], np.cumsum(counts)])
    job = _Draw(counts, popularity, first_user, *affinity, starts, np.empty(starts[-1], np.int64))
    if n_users * n_items <= _DENSE_CELLS:
        _draw_rows(rng, np.arange(n_users), job)
    else:
        heavy = counts * _ROW_FACTOR >= n_items
        _draw_rows(rng, np.flatnonzero(heavy), job)
        _draw_by_rejection(rng, np.flatnonzero(~heavy), job)
    return np.repeat(np.arange(n_users, dtype=np.int64), counts), job.out


def _draw_rows(rng: np.random.Generator, who: np.ndarray, job: _Draw) -> None:
    """The items of users ``who`` (increasing) into ``out[starts[u]:starts[u + 1]]``, by the
    Gumbel top-k trick: each user takes the items with the largest ``log(popularity) + taste +
    Gumbel noise``; forced pairs get +inf so they always win. A user's items come in order of
    falling key (ties: lower item first). Work: ``len(who) x n_items`` cells, in blocks.
    """
    counts, popularity, first_user, p, q, starts, out = job
    n_items = len(popularity)
    log_pop = np.log(popularity)
    chunk = max(1, _BLOCK // n_items)
    for lo in range(0, len(who), chunk):
        block = who[lo : lo + chunk]
        first, last = int(block[0]), int(block[-1]) + 1
        contiguous = last - first == len(block)
        # People mostly rate what they chose to watch: taste tilts the choice (and so the
        # observed ratings lean positive, as in MovieLens).
        keys = (p[first:last] if contiguous else p[block]) @ q.T
        keys *= SELECTION_BIAS / INTERACTION_STD
        keys += log_pop[None, :]
        keys += rng.gumbel(size=(len(block), n_items))
        row = np.searchsorted(block, first_user)
        forced = np.flatnonzero(block[np.minimum(row, len(block) - 1)] == first_user)
        keys[row[forced], forced] = np.inf
        np.negative(keys, out=keys)  # the smallest first, as the sorts below want
        picked = _smallest(keys, counts[block])
        if contiguous:
            out[starts[first] : starts[last]] = picked
        else:
            out[_slots(starts[block], counts[block])] = picked


def _slots(begin: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``begin[0], ..., begin[0] + size[0] - 1, begin[1], ...``: the slots of several runs."""
    offsets = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    return np.repeat(begin, size) + offsets


def _draw_by_rejection(rng: np.random.Generator, who: np.ndarray, job: _Draw) -> None:
    """The same law as :func:`_draw_rows` for users ``who`` (increasing), in work ~ their ratings.

    A user's forced items come first. The rest: draws from ``popularity``, each kept with
    probability ``exp(taste - bound_u)`` (``bound_u``: the largest taste of ``u``),
    are independent draws from the tilted law; keeping each item's first draw, in draw order,
    until the user has enough is successive sampling without replacement, which the Gumbel
    top-k also is. Users with fewer than ``n_items / _ROW_FACTOR`` ratings leave most of the
    popularity mass untaken, so few draws repeat.
    """
    counts, popularity, first_user, p, q, starts, out = job
    n_items = len(popularity)
    beta = SELECTION_BIAS / INTERACTION_STD
    draw_popular = _inverse_cdf(popularity)
    # Each user's largest taste over the catalog: the envelope of the acceptance test. A matrix
    # product over users x items, but k flops a cell in BLAS (the keyed draw pays a Gumbel
    # sample and a partition a cell).
    bound = np.zeros(len(counts))
    chunk = max(1, _BLOCK // n_items)
    for lo in range(0, len(who), chunk):
        block = who[lo : lo + chunk]
        bound[block] = beta * (p[block] @ q.T).max(axis=1)
    # Expected share of draws kept: taste ~ N(0, |p_u|^2 E[q^2]), so E[exp(beta taste)] is
    # exp(beta^2 |p_u|^2 E[q^2] / 2), over the envelope.
    spread = beta**2 * np.einsum("uk,uk->u", p, p) * np.mean(q * q)
    kept = np.minimum(np.exp(0.5 * spread - bound), 1.0)

    # The forced pairs, first in each user's run (ascending item).
    mine = np.zeros(len(counts), dtype=bool)
    mine[who] = True
    forced = np.flatnonzero(mine[first_user])
    forced = forced[np.argsort(first_user[forced], kind="stable")]
    owner = first_user[forced]
    n_forced = np.bincount(owner, minlength=len(counts))
    out[_slots(starts[who], n_forced[who])] = forced
    filled = n_forced.copy()
    for lo, hi in _runs(counts[who], _REJECTION_GROUP):
        users = who[lo:hi]
        here = (owner >= users[0]) & (owner <= users[-1])
        taken = np.sort(owner[here] * n_items + forced[here])  # the pairs this group has
        need = counts[users] - filled[users]
        while (active := np.flatnonzero(need > 0)).size:
            draws = np.ceil(need[active] * 1.3 / kept[users[active]]).astype(np.int64) + 4
            u = np.repeat(users[active], draws)
            i = draw_popular(rng.random(len(u)))
            taste = np.einsum("nk,nk->n", p[u], q[i])
            accepted = rng.random(len(u)) < np.exp(beta * taste - bound[u])
            key = u[accepted] * n_items + i[accepted]
            if len(taken):
                at = np.minimum(np.searchsorted(taken, key), len(taken) - 1)
                key = key[taken[at] != key]
            _, first = np.unique(key, return_index=True)
            key = key[np.sort(first)]  # each new pair once, in draw order (so grouped by user)
            u, i = np.divmod(key, n_items)
            rank = np.arange(len(key)) - np.searchsorted(u, u)  # its place among u's new pairs
            fits = rank < counts[u] - filled[u]
            u, i, rank = u[fits], i[fits], rank[fits]
            out[starts[u] + filled[u] + rank] = i
            got = np.bincount(np.searchsorted(users, u), minlength=len(users))
            filled[users] += got
            need -= got
            taken = np.sort(np.concatenate([taken, key[fits]]))


def _inverse_cdf(weights: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``u -> np.searchsorted(cdf, u, side="right")`` for uniforms ``u`` in [0, 1), by a guide
    table (Chen and Asau): a bucket per item points at the first candidate, a step or two on
    from there. A binary search of unsorted queries spent most of the draw's time missing cache.
    """
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    m = len(cdf)
    guide = np.searchsorted(cdf, np.arange(m) / m, side="right")

    def draw(u: np.ndarray) -> np.ndarray:
        at = guide[(u * m).astype(np.int64)]
        behind = np.flatnonzero(cdf[at] <= u)
        while behind.size:
            at[behind] += 1
            behind = behind[cdf[at[behind]] <= u[behind]]
        return np.minimum(at, m - 1)

    return draw


def _runs(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` ranges cutting ``sizes`` into consecutive runs of about ``limit`` in total."""
    ends = np.searchsorted(np.cumsum(sizes), np.arange(limit, int(sizes.sum()), limit), "right")
    cuts = np.unique(np.concatenate([[0], ends, [len(sizes)]])).tolist()
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _smallest(values: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Row by row, the columns of the ``take[r]`` smallest values of row ``r`` in increasing order
    (ties: lower column first), concatenated: exactly the first ``take[r]`` entries of each row
    of ``np.argsort(values, axis=1, kind="stable")``, without sorting whole rows.

    Rows are grouped by ``take`` rounded up to a power of two, ``K``; each group partitions its
    rows around their K-th smallest value and sorts only those K. A row where that value ties
    with one outside the K (possible only for exactly equal floats) is sorted whole instead.
    """
    n_cols = values.shape[1]
    starts = np.concatenate([[0], np.cumsum(take)])
    out = np.empty(int(starts[-1]), dtype=np.int64)
    bucket = np.minimum(1 << np.ceil(np.log2(np.maximum(take, 1))).astype(np.int64), n_cols)
    for k in np.unique(bucket[take > 0]):
        rows = np.flatnonzero((bucket == k) & (take > 0))
        block = values[rows]
        if 4 * k >= n_cols:  # most of the row: a whole sort costs no more
            order = np.argsort(block, axis=1, kind="stable")[:, :k]
        else:
            top = np.argpartition(block, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(block, top, axis=1).max(axis=1)
            tied = (block <= kth[:, None]).sum(axis=1) > k  # the cut falls inside a tie
            top.sort(axis=1)  # columns in order, so the stable sort breaks ties by column
            order = np.take_along_axis(
                top,
                np.argsort(np.take_along_axis(block, top, axis=1), axis=1, kind="stable"),
                axis=1,
            )
            for r in np.flatnonzero(tied):
                order[r] = np.argsort(block[r], kind="stable")[:k]
        keep = np.arange(k)[None, :] < take[rows, None]
        at = starts[rows, None] + np.arange(k)[None, :]
        out[at[keep]] = order[keep]
    return out


def _user_time_item_order(
    u: np.ndarray, when: np.ndarray, i: np.ndarray, n_users: int, n_items: int
) -> np.ndarray:
    """The permutation that sorts ratings by user, then time, then item (each pair is unique, so
    it is the only one): one sort of a combined int64 key when the key fits, else a lexsort."""
    t0 = int(when.min())
    width = int(when.max()) - t0 + 1
    if n_users * width * n_items >= 2**63:
        return np.lexsort((i, when, u))
    key = u.astype("int64")
    key *= width
    key += when
    key -= t0
    key *= n_items
    key += i
    return np.argsort(key, kind="stable")


def _ratings(
    rng: np.random.Generator,
    pairs: tuple[np.ndarray, np.ndarray],
    factors: tuple[np.ndarray, np.ndarray],
    biases: tuple[np.ndarray, np.ndarray],
    noise_std: float,
    scale: RatingScale,
) -> np.ndarray:
    """``mu + b_u + b_i + <p_u, q_i> + noise`` on the rating scale, for each (u, i) pair.

    In chunks of pairs, so that no (ratings x factors) temporary exists: each rating gets the
    same arithmetic and the same draws, in the same order, as all at once.
    """
    (u, i), (p, q), (user_bias, item_bias) = pairs, factors, biases
    rating = np.empty(len(u))
    for lo in range(0, len(u), _ROWS):
        uu, ii = u[lo : lo + _ROWS], i[lo : lo + _ROWS]
        latent = (
            GLOBAL_MEAN
            + user_bias[uu]
            + item_bias[ii]
            + np.einsum("nk,nk->n", p[uu], q[ii])
            + rng.normal(0.0, noise_std, size=len(uu))
        )
        rating[lo : lo + _ROWS] = _to_scale(latent, scale)
    return rating


def _times(
    rng: np.random.Generator, u: np.ndarray, first_seen: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """A time in each user's active window per rating (in chunks, as :func:`_ratings`)."""
    when = np.empty(len(u), dtype="int64")
    for lo in range(0, len(u), _ROWS):
        uu = u[lo : lo + _ROWS]
        when[lo : lo + _ROWS] = (first_seen[uu] + rng.random(len(uu)) * active[uu]).astype("int64")
    return when


def _to_scale(x: np.ndarray, scale: RatingScale) -> np.ndarray:
    """Map latent ratings made on 1-5 onto ``scale``: stretch, round to its step, clip."""
    y = scale.min + (x - 1.0) / 4.0 * (scale.max - scale.min)
    y = scale.min + np.round((y - scale.min) / scale.step) * scale.step
    return np.clip(np.round(y, 6), scale.min, scale.max)


def _genres(rng: np.random.Generator, q: np.ndarray, n_genres: int) -> list[str]:
    """Genre sets from the item factors: genre g holds the items whose factors point its way."""
    names = list(GENRES)[:n_genres] + [f"Genre {g + 1}" for g in range(len(GENRES), n_genres)]
    share = np.array([GENRES.get(n, 0.03) for n in names])
    directions = rng.normal(size=(q.shape[1], n_genres))
    directions /= np.linalg.norm(directions, axis=0)
    score = (q / q.std()) @ directions + rng.normal(0.0, 0.5, size=(q.shape[0], n_genres))
    cut = np.array([np.quantile(score[:, g], 1.0 - share[g]) for g in range(n_genres)])
    margin = score - cut[None, :]
    member = margin > 0
    # Every MovieLens film has a genre: give the genre-less their closest one.
    lonely = ~member.any(axis=1)
    member[lonely, np.argmax(margin[lonely], axis=1)] = True
    return ["|".join(n for n, m in zip(names, row, strict=True) if m) for row in member]


def _users(rng: np.random.Generator, p: np.ndarray) -> pd.DataFrame:
    """Age, gender and occupation, each leaning on a user's factors (so they carry signal)."""
    n_users, k = p.shape
    z = p / p.std()
    age = np.clip(np.round(32 + 5.0 * z[:, 0] + rng.normal(0, 9, n_users)), 7, 73).astype(int)
    lean = z[:, 1 % k]
    male = rng.random(n_users) < 1.0 / (1.0 + np.exp(-(1.0 + 0.8 * lean)))
    names = list(OCCUPATIONS)
    logits = np.log(np.array(list(OCCUPATIONS.values()), dtype=float))[None, :]
    logits = logits + z @ rng.normal(0.0, 0.4, size=(k, len(names)))
    # Students are young and the retired old, as in ML-100K.
    logits[:, names.index("student")] += (25 - age) / 6.0
    logits[:, names.index("retired")] += (age - 58) / 5.0
    job = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return pd.DataFrame(
        {
            USER: np.arange(1, n_users + 1, dtype="int64"),
            "age": pd.array(age, dtype="Int64"),
            "gender": pd.Series(np.where(male, "M", "F"), dtype="str"),
            "occupation": pd.Series(np.asarray(names)[job], dtype="str"),
        }
    )[USER_COLUMNS]


def _seconds(date: str, field: str) -> int:
    try:
        return int(np.datetime64(date, "s").astype("int64"))
    except ValueError:
        raise ConfigError(f"synthetic.{field}: {date!r} is not a date (YYYY-MM-DD)") from None


def _checked_period(cfg: SyntheticConfig) -> tuple[int, int]:
    """The period's ``(start, end)`` in Unix seconds, once the sizes are known to be possible."""
    n_users, n_items, n_ratings = cfg.n_users, cfg.n_items, cfg.n_ratings
    if n_ratings > n_users * n_items:
        raise ConfigError(
            f"synthetic.n_ratings: {n_ratings} is more than the {n_users * n_items} possible "
            "(user, item) pairs"
        )
    if n_ratings < n_users + n_items:
        raise ConfigError(
            f"synthetic.n_ratings: {n_ratings} is too few to give each of {n_users} users and "
            f"{n_items} items a rating (need at least {n_users + n_items})"
        )
    start, end = _seconds(cfg.start, "start"), _seconds(cfg.end, "end")
    if end <= start:
        raise ConfigError(f"synthetic.end ({cfg.end}) must be after synthetic.start ({cfg.start})")
    return start, end


def _ratings_table(columns: dict[str, np.ndarray], n_users: int, n_items: int) -> pd.DataFrame:
    """The ratings sorted by user, time and item, with ids from 1.

    ``columns`` (0-based ids) is emptied of its unordered arrays as their ordered copies replace
    them, so that at most one extra column is alive at a time.
    """
    order = _user_time_item_order(
        columns[USER], columns[TIMESTAMP], columns[ITEM], n_users, n_items
    )
    for name in RATING_COLUMNS:  # each unordered column is freed as its ordered copy replaces it
        columns[name] = columns[name][order]
    del order
    columns[USER] += 1
    columns[ITEM] += 1
    return pd.DataFrame(columns, columns=RATING_COLUMNS, copy=False)


def _items(rng: np.random.Generator, cfg: SyntheticConfig, q: np.ndarray) -> pd.DataFrame:
    """The items table: a release year before ``cfg.start``, a title, genres from the factors."""
    n_items = cfg.n_items
    start_year = int(np.datetime64(cfg.start, "Y").astype(int)) + 1970
    year = np.clip(start_year - np.floor(rng.exponential(12.0, size=n_items)), 1920, start_year)
    item_ids = np.arange(1, n_items + 1, dtype="int64")
    return pd.DataFrame(
        {
            ITEM: item_ids,
            "title": pd.Series(
                [f"Synthetic Movie {j} ({int(y)})" for j, y in zip(item_ids, year, strict=True)],
                dtype="str",
            ),
            "genres": pd.Series(_genres(rng, q, cfg.n_genres), dtype="str"),
            "year": pd.array(year.astype("int64"), dtype="Int64"),
        }
    )[ITEM_COLUMNS]


def _traits(
    rng: np.random.Generator, cfg: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The users' and items' factors, the items' popularity, who gives each item its first
    rating and how many ratings each user gets (the draws both generators start with)."""
    n_users, n_items, k = cfg.n_users, cfg.n_items, cfg.n_factors
    sigma = np.sqrt(INTERACTION_STD / np.sqrt(k))  # so that <p, q> has std INTERACTION_STD
    p = rng.normal(0.0, sigma, size=(n_users, k))
    q = rng.normal(0.0, sigma, size=(n_items, k))
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    rank = np.arange(1, n_items + 1) + POPULARITY_OFFSET
    popularity = (1.0 / rank**POPULARITY_EXPONENT)[rng.permutation(n_items)]
    first_user = rng.choice(n_users, size=n_items, p=activity / activity.sum())
    first = np.bincount(first_user, minlength=n_users)
    counts = _per_user_counts(rng, activity, first, n_items, cfg.n_ratings)
    return p, q, popularity, first_user, counts


def _biases(
    rng: np.random.Generator, n_users: int, popularity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """User and item biases; popular items are liked a little more."""
    log_pop = np.log(popularity)
    user_bias = rng.normal(0.0, USER_BIAS_STD, size=n_users)
    item_bias = rng.normal(0.0, ITEM_BIAS_STD, size=len(popularity))
    item_bias += 0.25 * (log_pop - log_pop.mean()) / log_pop.std()
    return user_bias, item_bias


def _info(scale: RatingScale) -> DatasetInfo:
    return DatasetInfo(
        source="synthetic", rating_scale=scale, id_type="int", has_users=True,
        has_given_split=False,
    )  # fmt: skip


def generate(cfg: SyntheticConfig, seed: int, scale: RatingScale | None = None) -> Dataset:
    """Generate a MovieLens-like dataset.

    Args:
        cfg: Sizes, latent rank, number of genres, noise and the time span.
        seed: Seeds ``np.random.default_rng``; the output is a pure function of (cfg, seed, scale).
        scale: Rating scale to produce (default 1-5 in whole stars).

    Returns:
        Ratings (ids from 1, sorted by user then time), items, users and the dataset's info.

    Raises:
        ConfigError: The sizes cannot be met (more ratings than pairs, or too few ratings to give
            every user and item one), or a date is malformed.

    Above ``_DENSE_CELLS`` user x item cells, the ratings are made block by block
    (:func:`block_ratings`), in this process one after the other.
    """
    scale = scale or SOURCE_SCALES["synthetic"]
    if blocked(cfg):
        return _generate_blocked(cfg, seed, scale)
    n_users, n_items = cfg.n_users, cfg.n_items
    start, end = _checked_period(cfg)

    rng = np.random.default_rng(seed)
    p, q, popularity, first_user, counts = _traits(rng, cfg)
    u, i = _sample_pairs(rng, counts, popularity, first_user, (p, q))
    user_bias, item_bias = _biases(rng, n_users, popularity)
    rating = _ratings(rng, (u, i), (p, q), (user_bias, item_bias), cfg.noise_std, scale)

    # Each user is active in one window of the period (many rate in a burst, some for years).
    span = end - start
    first_seen = start + rng.random(n_users) * span
    active = np.minimum(rng.exponential(span / 8.0, size=n_users), end - first_seen)
    when = _times(rng, u, first_seen, active)

    columns = {USER: u, ITEM: i, RATING: rating, TIMESTAMP: when}
    del u, i, rating, when  # the dict holds the only references: sorting frees them one by one
    ratings = _ratings_table(columns, n_users, n_items)
    items = _items(rng, cfg, q)

    info = _info(scale)
    return Dataset(ratings=ratings, items=items, users=_users(rng, p), info=info)


# --- the blocked generator (above _DENSE_CELLS cells) -----------------------------------------


class Plan(NamedTuple):
    """What every block of ratings reads: the users' and items' traits, each user's number of
    ratings and where they start (``starts[u]``: ratings of users before ``u``)."""

    seed: int
    scale: RatingScale
    noise_std: float
    p: np.ndarray
    q: np.ndarray
    popularity: np.ndarray
    first_user: np.ndarray
    counts: np.ndarray
    starts: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    first_seen: np.ndarray
    active: np.ndarray


def blocked(cfg: SyntheticConfig) -> bool:
    """Whether ``cfg``'s ratings are made in blocks (more than ``_DENSE_CELLS`` user x item
    cells)."""
    return cfg.n_users * cfg.n_items > _DENSE_CELLS


def plan(cfg: SyntheticConfig, seed: int, scale: RatingScale) -> tuple[Plan, np.random.Generator]:
    """The blocked generator's global draws, O(users + items), from the seed's stream; that
    stream is returned too (the items' and users' tables come from it next)."""
    n_users = cfg.n_users
    start, end = _checked_period(cfg)
    rng = np.random.default_rng(seed)
    p, q, popularity, first_user, counts = _traits(rng, cfg)
    user_bias, item_bias = _biases(rng, n_users, popularity)
    span = end - start
    first_seen = start + rng.random(n_users) * span
    active = np.minimum(rng.exponential(span / 8.0, size=n_users), end - first_seen)
    starts = np.concatenate([[0], np.cumsum(counts)])
    traits = (p, q, popularity, first_user, counts, starts, user_bias, item_bias)
    return Plan(seed, scale, cfg.noise_std, *traits, first_seen, active), rng


def blocks(plan: Plan) -> list[tuple[int, int]]:
    """The blocks' users, ``[lo, hi)`` ranges of about :data:`BLOCK_RATINGS` ratings each."""
    return _runs(plan.counts, BLOCK_RATINGS)


def block_ratings(plan: Plan, index: int, users: tuple[int, int]) -> dict[str, np.ndarray]:
    """Block ``index``'s ratings (users ``users[0]`` to ``users[1] - 1``), from the block's own
    random stream: the canonical columns (ids from 1), sorted by user, time and item, which are
    rows ``plan.starts[lo]`` to ``plan.starts[hi] - 1`` of the whole table."""
    lo, hi = users
    rng = np.random.default_rng([plan.seed, index])
    who = np.arange(lo, hi)
    n_users, n_items = len(plan.counts), len(plan.popularity)
    base = int(plan.starts[lo])
    out = np.empty(int(plan.starts[hi]) - base, np.int64)
    job = _Draw(plan.counts, plan.popularity, plan.first_user, plan.p, plan.q,
                plan.starts - base, out)  # fmt: skip
    heavy = plan.counts[who] * _ROW_FACTOR >= n_items
    _draw_rows(rng, who[heavy], job)
    _draw_by_rejection(rng, who[~heavy], job)
    u, i = np.repeat(who, plan.counts[who]), out
    factors, biases = (plan.p, plan.q), (plan.user_bias, plan.item_bias)
    rating = _ratings(rng, (u, i), factors, biases, plan.noise_std, plan.scale)
    when = _times(rng, u, plan.first_seen, plan.active)
    order = _user_time_item_order(u, when, i, n_users, n_items)
    return {USER: u[order] + 1, ITEM: i[order] + 1, RATING: rating[order], TIMESTAMP: when[order]}


def catalog(cfg: SyntheticConfig, seed: int, scale: RatingScale) -> tuple[Dataset, Plan]:
    """The blocked generator's dataset without its ratings (an empty table of their columns):
    items, users and info, and the plan the blocks are made from."""
    the_plan, rng = plan(cfg, seed, scale)
    items = _items(rng, cfg, the_plan.q)
    users = _users(rng, the_plan.p)
    empty = {USER: np.empty(0, np.int64), ITEM: np.empty(0, np.int64),
             RATING: np.empty(0), TIMESTAMP: np.empty(0, np.int64)}  # fmt: skip
    info = _info(scale)
    ratings = pd.DataFrame(empty, columns=RATING_COLUMNS)
    return Dataset(ratings=ratings, items=items, users=users, info=info), the_plan


def _generate_blocked(cfg: SyntheticConfig, seed: int, scale: RatingScale) -> Dataset:
    """:func:`generate` above ``_DENSE_CELLS``: every block in turn, into the whole table."""
    dataset, the_plan = catalog(cfg, seed, scale)
    columns = {c: np.empty(cfg.n_ratings, dataset.ratings[c].dtype) for c in RATING_COLUMNS}
    for index, users in enumerate(blocks(the_plan)):
        block = block_ratings(the_plan, index, users)
        lo, hi = the_plan.starts[users[0]], the_plan.starts[users[1]]
        for name in RATING_COLUMNS:
            columns[name][lo:hi] = block[name]
    ratings = pd.DataFrame(columns, columns=RATING_COLUMNS, copy=False)
    return dataclasses.replace(dataset, ratings=ratings)
