"""Approximate top-K for large catalogs: FAISS inverted-file indexes over the ranking factors.

Exact ranking scores every item (one matrix-vector product and an ``argpartition``): ~64 ms a
query at 1M items x 64 dims on 2 cores. Above ``serve.exact_max_items`` the package stage builds
an :class:`AnnIndex` instead, and the service asks it for a shortlist:

- ``recommend``: an ``IndexIVFFlat`` with inner product over ``[q_i, b_i]``, queried with
  ``[p_u, 1]``, so it searches ``p_u . q_i + b_i``: the score up to the user's constant terms
  (``mu + b_u``), biases included. The shortlist is over-fetched (``k`` + the user's rated items,
  more under a genre filter, doubling until ``k`` survive, then exact), re-scored exactly with
  :class:`~recommender.scoring.factors.Factors` and ranked by
  :func:`~recommender.scoring.ranking.top_k`: the same scores, ties and padding as exact ranking.
- ``similar_items``: a second index over the unit-normalised item vectors (cosine), the
  shortlist re-scored as :func:`~recommender.scoring.ranking.similar_items` scores.

``nlist`` is ~4 sqrt(n_items); ``nprobe`` is chosen at build time, per index, as the fewest lists
whose top-10 matches the exact one on a sample of users (items) at least ``min_recall``
(:func:`build_index`);
when none within a quarter of the lists does, :func:`plan_index` says so and the service ranks
exactly. Indexes are written with ``faiss.write_index`` and read with ``faiss.read_index`` (FAISS'
own format: no pickle).

Example:
    >>> index, record = plan_index(ranking_factors(bundle), exact_max_items=50_000)
    >>> index.recommend(np.array([7]), k=10, seen=bundle.seen)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.errors import DataError
from recommender.core.io import staged_dir
from recommender.scoring.factors import Factors
from recommender.scoring.ranking import PAD, SeenItems, TopK, rank, similar_items, top_k

SCORE_INDEX_FILE = "items_ip.faiss"
COSINE_INDEX_FILE = "items_cosine.faiss"
META_FILE = "ann.json"
#: Users whose exact top-10 the build compares with the index's (seeded sample).
RECALL_SAMPLE_USERS = 300
RECALL_K = 10
#: Items whose exact 10 nearest the build compares with the cosine index's.
RECALL_SAMPLE_ITEMS = 100
RECALL_SEED = 0
#: k-means trains on at most this many items per list (FAISS warns under 39): a 1M-item build
#: takes seconds instead of a minute, for centroids as good for search.
TRAIN_POINTS_PER_LIST = 39
#: k-means iterations (FAISS' default 25 costs 2.5x the time for no recall measured here).
KMEANS_ITERATIONS = 10
#: Largest shortlist one query fetches before falling back to exact ranking for it.
MAX_FETCH = 16_384
#: A filter allowing at most this many items ranks them all exactly (~1-3 ms at 64 dims).
EXACT_SUBSET_MAX = 65_536
#: Score cells (queries x shortlist) re-scored at once: bounds memory to ~64 MB at 64 dims.
MAX_RESCORE_CELLS = 262_144


def ranking_factors(bundle: Any) -> Factors | None:
    """What a bundle ranks with: its retrieval factors (a family trained to rank), else its rating
    factors; None for a family without factors (scored by its Keras graph: exact only)."""
    return bundle.retrieval if bundle.retrieval is not None else bundle.factors


def n_lists(n_items: int) -> int:
    """Inverted lists for ``n_items``: ~4 sqrt(n), at least 1, at most n / 39 (k-means needs
    ~39 points a centroid)."""
    return max(1, min(int(round(4 * math.sqrt(n_items))), n_items // 39))


@dataclass
class AnnIndex:
    """Shortlists from FAISS, ranked exactly: approximate only in which items are looked at.

    Attributes:
        factors: The ranking factors the index was built from (re-scoring uses them).
        scores: IVF inner-product index over ``[q_i, b_i]`` of items ``1..n`` (FAISS id = item - 1).
        cosine: Inner-product index over the unit-normalised ``q_i`` (cosine similarity).
        meta: How it was built (``nlist``, ``nprobe``, measured recall, timings).
    """

    factors: Factors
    scores: Any
    cosine: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        q = self.factors.item_vectors
        norms = np.linalg.norm(q.astype(np.float64), axis=1)
        self._norms = norms
        self._safe_norms = np.where(norms > 0, norms, 1.0)
        self.set_nprobe()

    @property
    def n_items(self) -> int:
        return self.factors.n_items

    def set_nprobe(self, nprobe: int | None = None, cosine_nprobe: int | None = None) -> None:
        """Lists each search of the score (and cosine) index visits: more, slower and closer
        to exact. None keeps the current (the recorded) value."""
        import faiss

        self.meta["nprobe"] = nprobe or int(self.meta.get("nprobe", 1))
        self.meta["cosine_nprobe"] = cosine_nprobe or int(self.meta.get("cosine_nprobe", 1))
        for index, n in ((self.scores, "nprobe"), (self.cosine, "cosine_nprobe")):
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.nprobe = min(int(self.meta[n]), ivf.nlist)

    # --- recommend ------------------------------------------------------------------------------

    def recommend(
        self,
        users: np.ndarray,
        k: int,
        *,
        seen: SeenItems | None = None,
        allowed: np.ndarray | None = None,
    ) -> TopK:
        """Top-``k`` items per user index, as exact ranking would give them when the shortlist
        holds them (same scores, ties to the lower index, ``PAD`` when fewer are eligible).

        Args:
            users: User indices (unknown ones score as the OOV row, as in exact ranking).
            k: Items per user.
            seen: Leave out each user's train items (over-fetched for).
            allowed: Boolean mask over item indices (a genre filter). Up to
                :data:`EXACT_SUBSET_MAX` allowed items are all scored (exact); more are searched
                with a FAISS selector, probing proportionally more lists.

        A shortlist holds ``k`` + the user's rated items, doubled while fewer than ``k`` survive;
        a user whose probed lists run out, or whose shortlist reaches :data:`MAX_FETCH`, is
        ranked exactly.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        items = np.full((users.size, k), PAD, dtype=np.int64)
        scores = np.full((users.size, k), -np.inf)
        if users.size == 0:
            return TopK(items, scores)
        table = np.where((users >= 0) & (users <= self.factors.n_users), users, 0)
        n_seen = np.zeros(users.size, dtype=np.int64)
        if seen is not None:
            known = (users >= 0) & (users <= seen.n_users)
            safe = np.where(known, users, 0)
            n_seen = np.where(known, seen.indptr[safe + 1] - seen.indptr[safe], 0)
        params, keep_alive = None, None
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            n_allowed = int(allowed[1:].sum())
            if n_allowed <= EXACT_SUBSET_MAX:  # scoring just those is cheap, and exact
                return self._rank_subset(users, k, seen, allowed)
            params, keep_alive = self._filtered_search(allowed, n_allowed)
        # Enough that k survive when the user's rated items are in the shortlist.
        fetch = k + n_seen
        pending = np.arange(users.size)
        short: list[np.ndarray] = []  # users the index cannot give k items: ranked exactly
        limit = min(MAX_FETCH, self.n_items)
        while pending.size:
            size = int(min(fetch[pending].max(), limit))
            cand = self._shortlist(table[pending], size, params)
            part = self._rank_shortlist(table[pending], users[pending], cand, k, seen, allowed)
            full = (part.items != PAD).all(axis=1)
            items[pending[full]] = part.items[full]
            scores[pending[full]] = part.scores[full]
            # 0 = FAISS found no more in the probed lists: a longer shortlist would not help.
            ran_out = ~full & ((cand == 0).any(axis=1) | (size >= limit))
            short.append(pending[ran_out])
            pending = pending[~full & ~ran_out]
            fetch[pending] = np.maximum(fetch[pending] * 2, size * 2)
        del keep_alive
        exact_rows = np.concatenate(short)
        if exact_rows.size:
            exact = rank(
                lambda b: self.factors.score(b).astype(np.float32),
                users[exact_rows],
                k,
                self.n_items + 1,
                seen=seen,
                allowed=allowed,
            )
            items[exact_rows], scores[exact_rows] = exact.items, exact.scores
        return TopK(items, scores)

    def _rank_subset(
        self, users: np.ndarray, k: int, seen: SeenItems | None, allowed: np.ndarray
    ) -> TopK:
        """Exact ranking over the allowed items only (few enough to score them all)."""
        cols = np.flatnonzero(allowed[1:]) + 1
        if cols.size == 0:
            cols = np.zeros(1, dtype=np.int64)  # nothing allowed: every row is padding
        table = np.where((users >= 0) & (users <= self.factors.n_users), users, 0)
        items = np.empty((users.size, k), dtype=np.int64)
        scores = np.empty((users.size, k))
        step = max(1, MAX_RESCORE_CELLS // cols.size)  # the candidate matrix, a block at a time
        for s in range(0, users.size, step):
            cand = np.broadcast_to(cols, (min(step, users.size - s), cols.size))
            part = self._rank_shortlist(
                table[s : s + step],
                users[s : s + step],
                cand,
                k,
                seen,
                allowed,
                same_row=True,
            )
            items[s : s + step], scores[s : s + step] = part.items, part.scores
        return TopK(items, scores)

    def _filtered_search(self, allowed: np.ndarray, n_allowed: int) -> tuple[Any, Any]:
        """Search parameters that keep only allowed items, probing proportionally more lists
        (the allowed share of each list is what the unfiltered nprobe was chosen for)."""
        import faiss

        nprobe = int(self.meta.get("nprobe", 1))
        ivf = faiss.try_extract_index_ivf(self.scores)
        nlist = ivf.nlist if ivf is not None else 1
        scaled = min(nlist, int(math.ceil(nprobe * self.n_items / max(n_allowed, 1))))
        bits = np.packbits(allowed[1:].astype(np.uint8), bitorder="little")
        selector = faiss.IDSelectorBitmap(self.n_items, faiss.swig_ptr(bits))
        params = faiss.SearchParametersIVF()
        params.sel, params.nprobe = selector, scaled
        # The selector reads ``bits`` by pointer: the caller keeps both alive while searching.
        return params, (bits, selector)

    def _shortlist(self, users: np.ndarray, size: int, params: Any = None) -> np.ndarray:
        """``(len(users), size)`` candidate item indices, ascending per row; 0 where FAISS found
        fewer (the probed lists held fewer items)."""
        queries = np.hstack(
            [
                self.factors.user_vectors[users].astype(np.float32),
                np.ones((users.size, 1), dtype=np.float32),
            ]
        )
        out = np.empty((users.size, size), dtype=np.int64)
        step = max(1, MAX_RESCORE_CELLS // size)
        for s in range(0, users.size, step):
            batch = np.ascontiguousarray(queries[s : s + step])
            _, labels = self.scores.search(batch, size, params=params)
            out[s : s + step] = labels + 1  # FAISS id i is item i + 1; -1 (none) becomes OOV 0
        out.sort(axis=1)  # so that top_k's tie-break by column is by item index
        return out

    def _rank_shortlist(
        self,
        table_users: np.ndarray,
        users: np.ndarray,
        cand: np.ndarray,
        k: int,
        seen: SeenItems | None,
        allowed: np.ndarray | None,
        same_row: bool = False,
    ) -> TopK:
        """Rank each row's candidates (ascending item indices) exactly; ``same_row``: every
        row holds the same candidates (one matrix product instead of a gather per row)."""
        f = self.factors
        items = np.full((users.size, k), PAD, dtype=np.int64)
        best = np.full((users.size, k), -np.inf)
        step = max(1, MAX_RESCORE_CELLS // cand.shape[1])
        for s in range(0, users.size, step):
            u, c = table_users[s : s + step], cand[s : s + step]
            # Factors.score's arithmetic, in its order, on the shortlist only.
            if same_row:
                dots = f.user_vectors[u] @ f.item_vectors[c[0]].T
            else:
                dots = np.einsum("rd,rcd->rc", f.user_vectors[u], f.item_vectors[c])
            sc = (f.global_mean + f.user_bias[u][:, None] + f.item_bias[c] + dots).astype(
                np.float32
            )
            sc = sc.astype(np.float64)
            sc[c == 0] = -np.inf  # OOV row, or no candidate
            if allowed is not None:
                sc[~allowed[c]] = -np.inf
            if seen is not None:
                for r, user in enumerate(users[s : s + step]):
                    rated = seen.items_of(int(user))
                    if rated.size:
                        sc[r, np.isin(c[r], rated)] = -np.inf
            part = top_k(sc, k, exclude_oov=False)
            got = np.take_along_axis(c, np.maximum(part.items, 0), axis=1)
            items[s : s + step] = np.where(part.items == PAD, PAD, got)
            best[s : s + step] = part.scores
        return TopK(items, best)

    # --- similar items --------------------------------------------------------------------------

    def similar(self, item_idx: int, k: int) -> TopK:
        """The ``k`` items nearest to ``item_idx`` by cosine similarity, as
        :func:`~recommender.scoring.ranking.similar_items` scores them (exact fallback for an
        all-zero vector, or when the shortlist is short)."""
        vectors = self.factors.item_vectors
        if not 0 < item_idx < vectors.shape[0]:
            raise ValueError(
                f"item_idx must be a known item, 1..{vectors.shape[0] - 1}; got {item_idx}"
            )
        if self._norms[item_idx] == 0 or k + 1 > min(MAX_FETCH, self.n_items):
            return similar_items(vectors, item_idx, k)
        query = (vectors[item_idx] / self._norms[item_idx]).astype(np.float32)[None, :]
        _, labels = self.cosine.search(np.ascontiguousarray(query), k + 1)
        cand = np.sort(labels[0] + 1)
        cand = cand[(cand > 0) & (cand != item_idx)]
        if cand.size < k:
            return similar_items(vectors, item_idx, k)
        v = vectors[cand].astype(np.float64)
        sims = (v @ vectors[item_idx].astype(np.float64)) / (
            self._safe_norms[cand] * self._safe_norms[item_idx]
        )
        part = top_k(sims[None, :], k, exclude_oov=False)
        return TopK(cand[part.items[0]], part.scores[0])

    # --- files ----------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write both indexes and ``ann.json`` into ``folder`` (replaced as a whole)."""
        import faiss

        with staged_dir(folder) as tmp:
            faiss.write_index(self.scores, str(Path(tmp) / SCORE_INDEX_FILE))
            faiss.write_index(self.cosine, str(Path(tmp) / COSINE_INDEX_FILE))
            (Path(tmp) / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: str | Path, factors: Factors) -> AnnIndex:
        """Read what :meth:`save` wrote, for ``factors`` (checked against the index's shape)."""
        import faiss

        folder = Path(folder)
        for name in (SCORE_INDEX_FILE, COSINE_INDEX_FILE, META_FILE):
            if not (folder / name).is_file():
                raise DataError(folder / name, "missing", expected="an ANN index folder")
        meta = json.loads((folder / META_FILE).read_text())
        try:
            scores = faiss.read_index(str(folder / SCORE_INDEX_FILE))
            cosine = faiss.read_index(str(folder / COSINE_INDEX_FILE))
        except RuntimeError as exc:  # FAISS reports a damaged file as a RuntimeError
            raise DataError(folder, f"an index cannot be read: {exc}") from None
        d = factors.item_vectors.shape[1]
        want = (factors.n_items, d + 1, d)
        got = (int(scores.ntotal), int(scores.d), int(cosine.d))
        if got != want or int(cosine.ntotal) != factors.n_items:
            raise DataError(
                folder,
                f"the index holds (items, dims, cosine dims) {got}, the model {want}",
                expected="an index built from this model's factors",
            )
        return cls(factors, scores, cosine, meta)


def build_index(
    factors: Factors,
    *,
    min_recall: float,
    seen: SeenItems | None = None,
    nlist: int | None = None,
) -> tuple[AnnIndex, dict[str, Any]]:
    """Build both indexes and choose ``nprobe``: the fewest lists (1, 2, 4, ... up to a quarter
    of them) whose mean recall@10 against exact ranking, on a seeded sample of users (their
    rated items excluded, as the service does), reaches ``min_recall``.

    Returns:
        The index (its ``nprobe`` set to the choice, or to the largest tried) and the record:
        ``recall_at_10`` at each ``nprobe`` tried, ``nprobe``, ``met`` (whether one reached it).
    """
    import faiss

    start = time.perf_counter()
    n, d = factors.n_items, factors.item_vectors.shape[1]
    nlist = nlist or n_lists(n)
    rng = np.random.default_rng(RECALL_SEED)
    scores, cosine = _train_indexes(factors, nlist, rng)
    build_seconds = time.perf_counter() - start
    ann = AnnIndex(factors, scores, cosine, {"nlist": nlist, "nprobe": 1})
    users, (chosen, tried, met) = _choose_recommend_nprobe(ann, seen, rng, nlist, min_recall)
    sample, (cosine_chosen, cosine_tried, cosine_met) = _choose_similar_nprobe(
        ann, rng, nlist, min_recall
    )
    ann.meta.update(
        {
            "kind": "IndexIVFFlat, inner product",
            "n_items": n,
            "dim": d,
            "nlist": nlist,
            "nprobe": chosen,
            "recall_at_10": tried[str(chosen)],
            "recall_by_nprobe": tried,
            "recall_users": int(users.size),
            "min_recall": min_recall,
            "met": met and cosine_met,
            "cosine_nprobe": cosine_chosen,
            "similar_recall_at_10": cosine_tried[str(cosine_chosen)],
            "similar_recall_by_nprobe": cosine_tried,
            "recall_items": int(sample.size),
            "build_seconds": round(build_seconds, 2),
            "faiss": faiss.__version__,
        }
    )
    return ann, dict(ann.meta)


def _train_indexes(factors: Factors, nlist: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """The two IVF indexes, trained on one seeded sample of items: inner product over the item
    vectors with their bias appended (for ``recommend``), and over the unit vectors (cosine,
    for ``similar``)."""
    import faiss

    n, d = factors.n_items, factors.item_vectors.shape[1]
    q = factors.item_vectors[1:].astype(np.float32)
    augmented = np.ascontiguousarray(np.hstack([q, factors.item_bias[1:, None].astype(np.float32)]))
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    unit = np.ascontiguousarray(q / np.where(norms > 0, norms, 1.0))
    train_rows = rng.choice(n, size=min(n, nlist * TRAIN_POINTS_PER_LIST), replace=False)
    indexes = []
    for data, dim in ((augmented, d + 1), (unit, d)):
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = RECALL_SEED
        index.cp.niter = KMEANS_ITERATIONS
        index.train(np.ascontiguousarray(data[np.sort(train_rows)]))
        index.add(data)
        indexes.append(index)
    return indexes[0], indexes[1]


def _choose_recommend_nprobe(
    ann: AnnIndex,
    seen: SeenItems | None,
    rng: np.random.Generator,
    nlist: int,
    min_recall: float,
) -> tuple[np.ndarray, tuple[int, dict[str, float], bool]]:
    """Set ``ann``'s ``nprobe`` from recall against exact ranking on a sample of users; return
    the sample and :func:`_choose_nprobe`'s answer."""
    factors = ann.factors
    users = np.sort(
        rng.choice(
            np.arange(1, factors.n_users + 1),
            size=min(factors.n_users, RECALL_SAMPLE_USERS),
            replace=False,
        )
    )
    exact = rank(
        lambda b: factors.score(b).astype(np.float32),
        users,
        RECALL_K,
        factors.n_items + 1,
        seen=seen,
    ).items
    choice = _choose_nprobe(
        lambda p: ann.set_nprobe(nprobe=p),
        lambda: ann.recommend(users, RECALL_K, seen=seen).items,
        exact,
        nlist,
        min_recall,
    )
    ann.set_nprobe(nprobe=choice[0])
    return users, choice


def _choose_similar_nprobe(
    ann: AnnIndex, rng: np.random.Generator, nlist: int, min_recall: float
) -> tuple[np.ndarray, tuple[int, dict[str, float], bool]]:
    """similar_items: the same choice for the cosine index, on a sample of items."""
    n = ann.factors.n_items
    sample = np.sort(
        rng.choice(np.arange(1, n + 1), size=min(n, RECALL_SAMPLE_ITEMS), replace=False)
    )
    exact_similar = exact_similar_items(ann.factors.item_vectors, sample, RECALL_K)
    choice = _choose_nprobe(
        lambda p: ann.set_nprobe(cosine_nprobe=p),
        lambda: np.stack([ann.similar(int(i), RECALL_K).items for i in sample]),
        exact_similar,
        nlist,
        min_recall,
    )
    ann.set_nprobe(cosine_nprobe=choice[0])
    return sample, choice


def exact_similar_items(vectors: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """:func:`~recommender.scoring.ranking.similar_items`' top-``k`` item indices for many items
    at once (a block of items a pass over the table, not one pass each), for recall checks.

    The products are float32 (``similar_items`` casts the table to float64 first: 0.5 GB at 1M
    items x 64), so near-ties may order differently; the sets are what recall compares.
    """
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    items = np.asarray(items, dtype=np.int64)
    out = np.full((items.size, k), PAD, dtype=np.int64)
    step = max(1, MAX_RESCORE_CELLS * 16 // vectors.shape[0])
    for s in range(0, items.size, step):
        block = items[s : s + step]
        sims = (vectors @ vectors[block].T).T.astype(np.float64)
        sims /= safe[None, :] * safe[block][:, None]
        sims[np.arange(block.size), block] = -np.inf
        out[s : s + step] = top_k(sims, k).items
    return out


def _choose_nprobe(
    set_nprobe: Any, search: Any, exact: np.ndarray, nlist: int, min_recall: float
) -> tuple[int, dict[str, float], bool]:
    """The fewest lists (1, 2, 4, ... up to a quarter of ``nlist``, beyond which an IVF scan
    saves little over exact scoring) whose ``search()`` reaches ``min_recall`` against ``exact``.

    Returns:
        The choice (the largest tried when none reaches it), recall by nprobe, and whether met.
    """
    tried: dict[str, float] = {}
    top = max(1, nlist // 4)
    nprobe = 1
    while True:
        set_nprobe(nprobe)
        tried[str(nprobe)] = round(recall_at_k(search(), exact), 4)
        if tried[str(nprobe)] >= min_recall:
            return nprobe, tried, True
        if nprobe >= top:
            return nprobe, tried, False
        nprobe = min(nprobe * 2, top)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of ``|found ∩ exact| / |exact|`` (padding not counted; rows with nothing
    to find count as 1)."""
    recalls = []
    for got, want in zip(found, exact, strict=True):
        want = want[want != PAD]
        if want.size == 0:
            recalls.append(1.0)
            continue
        recalls.append(np.isin(want, got[got != PAD]).sum() / want.size)
    return float(np.mean(recalls)) if recalls else 1.0


def plan_index(
    factors: Factors | None,
    *,
    exact_max_items: int,
    min_recall: float = 0.99,
    seen: SeenItems | None = None,
) -> tuple[AnnIndex | None, dict[str, Any]]:
    """The ranking the service should use: an :class:`AnnIndex`, or None (exact) with the reason.

    Exact for a family without factors, for a catalog of at most ``exact_max_items`` items, and
    when no ``nprobe`` reaches ``min_recall`` on the build's sample (a fallback it says so).
    """
    if factors is None:
        return None, {"used": False, "reason": "the model family has no factors: exact ranking"}
    n = factors.n_items
    if n <= exact_max_items:
        return None, {
            "used": False,
            "reason": f"{n} items <= serve.exact_max_items ({exact_max_items}): exact ranking",
        }
    ann, record = build_index(factors, min_recall=min_recall, seen=seen)
    if not record["met"]:
        return None, {
            **record,
            "used": False,
            "reason": (
                f"no nprobe up to {record['nlist'] // 4} of {record['nlist']} lists reached "
                f"recall@10 {min_recall} (recommend {record['recall_by_nprobe']}, similar_items "
                f"{record['similar_recall_by_nprobe']}): falling back to exact ranking"
            ),
        }
    return ann, {**record, "used": True, "reason": f"{n} items > serve.exact_max_items"}
