"""``two_tower``: user and item towers trained to rank (a softmax over items), plus a rating head.

The default family, because what the endpoint serves is a top-K list: a model trained only to
predict ratings ranks the catalog worse than a most-popular list (see the README's ranking
table), while a dot product trained for the task beats it (Rendle et al. 2020).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from recommender.core.errors import ConfigError
from recommender.models.base import (
    RatingModel,
    as_index,
    lookup,
    member_knobs,
    register,
    table_with_mean_oov,
)
from recommender.models.biased_mf import BiasedMF
from recommender.models.keras_internals import scale_loss_for_distribution
from recommender.models.sizing import (
    TWO_TOWER_DENSE_MASK_MAX_CELLS as DENSE_MASK_MAX_CELLS,
)
from recommender.models.sizing import (
    TWO_TOWER_MASK_MAX_BITS as MASK_MAX_BITS,
)
from recommender.models.sizing import (
    TWO_TOWER_MAX_MASKED_POSITIVES as MAX_MASKED_POSITIVES,
)
from recommender.models.sizing import TWO_TOWER_NEGATIVES, two_tower_softmax
from recommender.scoring.factors import Factors

#: Least change of a head's validation metric that early stopping counts as better: about the
#: noise of NDCG@10 over a few thousand validation users, and a fiftieth of a percent of RMSE.
NDCG_MIN_DELTA = 0.002
RMSE_MIN_DELTA = 0.0002
#: A logit that no softmax will pick (the unknown item is never a candidate).
_NEVER = -1e9
SOFTMAXES = ("auto", "full", "in_batch", "sampled")


@register
class TwoTower(RatingModel):
    """Two towers scored by a dot product, trained with a full softmax; a biased-MF rating head.

    Retrieval: ``s(u, i) = v_u . w_i + c_i``, with a user tower ``v`` and an item tower ``w``
    (id embeddings) and a per-item bias ``c`` (a learnt popularity prior). For every training
    rating at or above ``relevance_threshold`` (a *positive*) the loss is the cross-entropy of
    that item against every item of the catalog, the full softmax: each step scores
    ``batch x n_items`` logits, cheap while the catalog is small (MovieLens 100K to 1M). Index 0,
    the unknown item, is never a candidate, and neither are the user's *other* training positives
    (:meth:`set_training_positives`): an item they also liked is not a wrong answer, and ranking
    never shows it to them again anyway (measured on ML-100K's validation split: NDCG@10 0.2220
    against 0.2193 without the mask). Larger catalogs train on a sample of candidates instead
    (``softmax``): the batch's positives (``in_batch``: a positive's cost grows with the batch),
    or ``negatives`` items drawn by popularity once per batch (``sampled``, with the batch's
    positives too while ``in_batch_negatives``), each logit corrected by its item's popularity
    (log-Q). L2 ``l2`` shrinks the positives' rows (per example, as in Funk-SVD). Ranking,
    ``recommend`` and ``similar_items`` use the towers; the exported :meth:`retrieval_factors`
    make them a NumPy matrix product at serving time.

    Rating: the rating head is a :class:`BiasedMF` with its own tables (``rating`` takes its
    knobs, ``train.biased_mf``'s by default): it answers ``predict`` and its MSE joins the loss
    with weight ``rating_loss_weight``, so one model answers all three endpoints. Sharing the
    towers with the rating head was measured worse on both tasks (see ``benchmarks/``).

    Early stopping watches the validation split (never the test split), each part on its own
    metric (:meth:`stopping_heads`): the towers keep their best epoch by NDCG@10 (the train stage
    computes it after each epoch, :mod:`recommender.training.fit`), the rating head its best by
    RMSE.

    Example:
        >>> model = build_model("two_tower", 943, 1682, RatingScale(), global_mean=3.53)
        >>> compile_model(model, 3e-3)
        >>> model.fit(make_dataset(u, i, r, batch_size=1024), epochs=20)
        >>> model.retrieval_factors().score(np.array([1]))  # scores of every item for user 1
    """

    family = "two_tower"
    ranking_trained = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        embedding_dim: int,
        l2: float,
        rating_loss_weight: float,
        relevance_threshold: float,
        global_mean: float,
        rating: dict[str, Any],
        softmax: str = "auto",
        negatives: int = TWO_TOWER_NEGATIVES,
        in_batch_negatives: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_items, l2=l2, **kwargs)
        if rating_loss_weight < 0:
            raise ConfigError(f"rating_loss_weight must be >= 0, got {rating_loss_weight}")
        if softmax not in SOFTMAXES:
            raise ConfigError(f"softmax must be one of {', '.join(SOFTMAXES)}, got {softmax!r}")
        if (
            isinstance(negatives, bool)
            or not isinstance(negatives, int | np.integer)
            or negatives < 1
        ):
            raise ConfigError(f"negatives must be a positive integer, got {negatives!r}")
        if not isinstance(in_batch_negatives, bool):
            raise ConfigError(
                f"in_batch_negatives must be true or false, got {in_batch_negatives!r}"
            )
        self.softmax = softmax
        self.softmax_kind = two_tower_softmax(softmax, self.n_items)
        self.in_batch = self.softmax_kind == "in_batch"
        self.negatives = int(negatives)
        self.in_batch_negatives = in_batch_negatives
        self.embedding_dim = int(embedding_dim)
        self.rating_loss_weight = float(rating_loss_weight)
        self.relevance_threshold = float(relevance_threshold)
        self.global_mean = float(global_mean)
        self.rating_hyper = member_knobs(BiasedMF, rating, "two_tower's rating head")
        d = self.embedding_dim
        self.user_tower = self._embedding(self.n_users + 1, d, "user_tower")
        self.item_tower = self._embedding(self.n_items + 1, d, "item_tower")
        self.item_prior = self._embedding(self.n_items + 1, 1, "item_prior", stddev=None, l2=0.0)
        # Each user's train positives, padded with 0 (masked anyway): set before training, used
        # only by the loss, and never saved (the model ranks without it).
        self._positives: Any = None
        self._dense_positives = False
        # How the sampled softmax's mask holds the positives: "bits" or "keys".
        self._mask_form = "bits"
        self._row_bytes = 0
        #: The byte indices of the positives' bits table that hold a bit (:meth:`_hold_bits`).
        self._bits_set = np.empty(0, np.int64)
        # In-batch and sampled softmax: log of each item's share of the train positives (log-Q
        # correction); sampled: their cumulative shares, what the negatives are drawn from
        # (uniform over the known items until set_training_positives).
        self._log_q: Any = None
        self._sampling_cdf: Any = None
        if self.softmax_kind == "sampled":
            cdf = np.arange(self.n_items + 1, dtype=np.float64) / self.n_items
            self._hold("_sampling_cdf", cdf)
            # A variable (its state advances each draw): every step, even inside one traced
            # loop, draws new negatives, and keras.utils.set_random_seed replays them.
            self.negative_sampler = keras.random.SeedGenerator(name="negative_sampler")
        self.rating_head = BiasedMF(
            n_users,
            n_items,
            global_mean=global_mean,
            min_rating=self.min_rating,
            max_rating=self.max_rating,
            name="rating_head",
            **self.rating_hyper,
        )

    def build(self, input_shape: Any = None) -> None:
        for layer in (self.user_tower, self.item_tower, self.item_prior):
            layer.build((None,))
        self.rating_head.build()

    # --- the rating head: what ``call`` (and so ``predict`` and the MSE) sees -------------------

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        return self.rating_head.score(inputs, training)

    def factors(self) -> Factors:
        """The rating head as :class:`Factors` (what ``predict`` serves)."""
        return self.rating_head.factors()

    # --- the towers: what ranking sees ------------------------------------------------------------

    def retrieval_factors(self) -> Factors:
        """The towers as :class:`Factors`: ``score(u, i) = v_u . w_i + c_i`` (row 0 = mean row)."""
        n_users = self.n_users + 1
        return Factors(
            user_vectors=table_with_mean_oov(self.user_tower),
            item_vectors=table_with_mean_oov(self.item_tower),
            user_bias=ops.convert_to_numpy(ops.zeros((n_users,), "float32")),
            item_bias=table_with_mean_oov(self.item_prior)[:, 0],
            global_mean=0.0,
        )

    def item_vectors(self) -> Any:
        """The item tower: ``similar_items`` compares items in the space ranking uses."""
        return table_with_mean_oov(self.item_tower)

    def set_training_positives(self, user_idx: Any, item_idx: Any, rating: Any) -> None:
        """Remember each user's train positives (rating >= ``relevance_threshold``) to mask them
        out of that user's other softmaxes.

        For the sampled softmax, one bit per ``user x (items + 1) + item`` cell, looked up per
        candidate (:meth:`_liked`), up to :data:`MASK_MAX_BITS` cells (ML-25M's shape: 1.2 GB);
        beyond, the sorted keys of the positives, searched per candidate. For the full softmax,
        a dense ``(users, items)`` boolean table, one gather per step, while it has at most
        :data:`DENSE_MASK_MAX_CELLS` cells (ML-1M: 22 M); beyond, each user's positives padded
        with 0, up to :data:`MAX_MASKED_POSITIVES` of them, scattered per step. The in-batch and
        sampled softmaxes also keep each item's share of the positives (log-Q), and the sampled
        one its cumulative shares, what its negatives are drawn from.
        """
        users, items = np.asarray(user_idx, np.int64), np.asarray(item_idx, np.int64)
        keep = np.asarray(rating) >= self.relevance_threshold
        users, items = users[keep], items[keep]
        if self.softmax_kind != "full":
            hits = np.bincount(items, minlength=self.n_items + 1).astype(np.float64)
            share = np.maximum(hits, 1.0) / max(hits.sum(), 1.0)
            self._hold("_log_q", np.log(share).astype(np.float32))
            hits[0] = 0.0  # the unknown item is never drawn
            if self.softmax_kind == "sampled" and hits.sum() > 0:
                cdf = np.cumsum(hits) / hits.sum()
                cdf[-1] = 1.0
                self._hold("_sampling_cdf", cdf)
            if self.softmax_kind == "in_batch":
                return
        cells = (self.n_users + 1) * (self.n_items + 1)
        if self.softmax_kind == "sampled" and cells <= MASK_MAX_BITS:
            # One bit per cell, cell k in bit k % 8 of byte k // 8: 8x smaller than booleans,
            # so the random lookups of a step mostly hit the cache (ML-1M: 2.8 MB).
            # Each user's row padded to whole bytes, so a lookup's byte index is int32 up to
            # ML-25M's shape and its bit is the item's low 3 bits.
            self._row_bytes = -(-(self.n_items + 1) // 8)
            cell = np.unique(users * self._row_bytes * 8 + items)
            byte = cell >> 3
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            values = np.bitwise_or.reduceat(np.left_shift(1, cell & 7).astype(np.uint8), starts)
            self._mask_form = "bits"
            self._hold_bits(byte[starts], values, (self.n_users + 1) * self._row_bytes)
            return
        keys = users * (self.n_items + 1) + items
        if self.softmax_kind == "sampled":
            self._mask_form = "keys"
            self._hold("_positives", np.unique(keys))
            return
        if cells <= DENSE_MASK_MAX_CELLS:
            dense = np.zeros((self.n_users + 1, self.n_items + 1), bool)
            dense[users, items] = True
            dense[:, 0] = True  # the unknown item is never a candidate
            self._dense_positives = True
            self._hold("_positives", dense)
            return
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        counts = np.bincount(users, minlength=self.n_users + 1)
        width = int(min(max(counts.max(initial=0), 1), MAX_MASKED_POSITIVES))
        table = np.zeros((self.n_users + 1, width), np.int32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        column = np.arange(users.size) - starts[users]
        inside = column < width
        table[users[inside], column[inside]] = items[inside]
        self._dense_positives = False
        self._hold("_positives", table)

    def _hold(self, name: str, values: np.ndarray) -> None:
        """Set the loss-only data ``name`` (never saved) to ``values``: written into the variable
        holding it when the shape and dtype agree, so a train step compiled earlier reads the
        new values (a refit continuing the fitted model keeps its trace); else a new variable,
        and :meth:`trace_key` changes (the step must be traced again)."""
        import tensorflow as tf

        held = getattr(self, name, None)
        if (
            isinstance(held, tf.Variable)
            and held.shape == values.shape
            and held.dtype.as_numpy_dtype == values.dtype
        ):
            held.assign(values)
            return
        setattr(self, name, tf.Variable(values, trainable=False, name=name.strip("_")))

    def _hold_bits(self, index: np.ndarray, values: np.ndarray, size: int) -> None:
        """Set the positives' bits: byte ``index[j]`` of the ``size``-byte table is ``values[j]``,
        every other byte 0. Built in place in the variable, never as a whole array: at ML-25M's
        shape the table is 1.2 GB, and a NumPy copy handed to the variable held three of it at
        once (measured: 5.0 GB peak for a 1.2 GB table). A table of the same size is updated in
        place, as :meth:`_hold` does: the bytes the last call set are cleared, then these set."""
        import tensorflow as tf

        held = self._positives
        if isinstance(held, tf.Variable) and held.shape == (size,) and held.dtype == tf.uint8:
            cleared = self._bits_set
            held.scatter_nd_update(cleared[:, None], tf.zeros(cleared.size, tf.uint8))
        else:
            held = tf.Variable(tf.zeros([size], tf.uint8), trainable=False, name="positives")
            self._positives = held
        held.scatter_nd_update(index[:, None], values)
        self._bits_set = index

    def trace_key(self) -> tuple[Any, ...]:
        """What a compiled train step has baked in beyond the weights: the mask's form and the
        variables holding the loss-only data (see :meth:`_hold`)."""
        held = (self._positives, self._log_q, self._sampling_cdf)
        return (self._mask_form, self._row_bytes, self._dense_positives, *map(id, held))

    def _other_positives(self, users: Any, items: Any) -> Any:
        """``(batch, n_items + 1)`` booleans: True where the item is another positive of the
        row's user (never the row's own item), from the padded table of positives (the dense
        mask is used whole, in :meth:`_full_loss`)."""
        own = ops.one_hot(items, self.n_items + 1) > 0
        history = ops.take(self._positives, users, axis=0)
        rows = ops.repeat(ops.arange(ops.shape(users)[0]), ops.shape(history)[1])
        index = ops.stack([rows, ops.reshape(history, (-1,))], axis=1)
        shape = (ops.shape(users)[0], self.n_items + 1)
        hits = ops.scatter(index, ops.ones((ops.shape(index)[0],)), shape) > 0
        return ops.logical_and(hits, ops.logical_not(own))

    def _liked(self, users: Any, candidates: Any) -> Any:
        """``(rows, candidates)`` booleans: True where the candidate is a train positive of the
        row's user (the sampled softmax's mask: a lookup per candidate, whatever the catalog)."""
        if self._mask_form == "bits":
            import tensorflow as tf

            candidates = ops.cast(candidates, "int32")
            row = ops.expand_dims(ops.cast(users, "int32") * self._row_bytes, 1)
            # Gathered from the variable itself (a ResourceGather), never read whole: the table
            # is built by scatters, after which TensorFlow copies it at every whole read (1.2 GB
            # at ML-25M's shape: 115 ms a step instead of 14, measured).
            byte = tf.gather(self._positives, row + ops.right_shift(candidates, 3))
            bit = ops.expand_dims(ops.bitwise_and(candidates, 7), 0)
            return ops.bitwise_and(ops.right_shift(ops.cast(byte, "int32"), bit), 1) > 0
        keys = ops.expand_dims(ops.cast(users, "int64"), 1) * (self.n_items + 1)
        keys = ops.reshape(keys + ops.expand_dims(ops.cast(candidates, "int64"), 0), (-1,))
        # Sorted keys: found where a binary search lands.
        at = ops.searchsorted(self._positives, keys, side="left")
        at = ops.minimum(at, ops.shape(self._positives)[0] - 1)
        hit = ops.take(self._positives, at) == keys
        return ops.reshape(hit, (ops.shape(users)[0], ops.shape(candidates)[0]))

    def sample_negatives(self) -> Any:
        """``negatives`` item indices (int32) drawn with replacement, each with probability its
        share of the train positives (never index 0, the unknown item): a new draw each call."""
        u = keras.random.uniform((self.negatives,), dtype="float64", seed=self.negative_sampler)
        # In ascending order, so are the items drawn: each user's mask lookups (:meth:`_liked`)
        # then walk their row of the bits table forwards (ML-10M's shape: 93 MB, mostly out of
        # cache). The loss does not depend on the candidates' order.
        u = ops.sort(u)
        # Item i is drawn when cdf[i - 1] <= u < cdf[i]: an item without a positive (cdf flat
        # there), item 0 (cdf[0] = 0) included, never is.
        drawn = ops.searchsorted(self._sampling_cdf, u, side="right")
        return ops.cast(ops.clip(drawn, 1, self.n_items), "int32")

    def retrieval_loss(self, inputs: dict[str, Any], rating: Any, negatives: Any = None) -> Any:
        """Cross-entropy of each positive against its candidates (``softmax``), plus its L2 term.

        Only the batch's positives are scored (the other rows would be weighted 0); a batch
        without a positive gives 0. ``negatives``: the sampled softmax's shared negatives
        (default: :meth:`sample_negatives`; tests pass their own).
        """
        positive = ops.reshape(rating, (-1,)) >= self.relevance_threshold
        rows = ops.nonzero(positive)[0]
        users = ops.take(as_index(inputs["user"]), rows)
        items = ops.take(as_index(inputs["item"]), rows)
        n_positive = ops.maximum(ops.cast(ops.shape(rows)[0], "float32"), 1.0)
        v = lookup(self.user_tower, users, training=True)
        # The positives' item rows, looked up once for the logits and the L2 term: each lookup
        # of a table is one more slice of its sparse gradient for the optimizer to merge.
        w = self.item_tower(items)
        if self.softmax_kind == "sampled":
            if negatives is None:
                negatives = self.sample_negatives()
            loss = self._sampled_loss(v, w, users, items, as_index(negatives)) / n_positive
        elif self.in_batch:
            loss = self._in_batch_loss(v, w, items) / n_positive
        else:
            loss = self._full_loss(v, w, users, items) / n_positive
        if self.l2:
            norms = ops.sum(ops.square(v), axis=-1) + ops.sum(ops.square(w), axis=-1)
            loss = loss + self.l2 * ops.sum(norms) / n_positive
        return loss

    def _full_loss(self, v: Any, w: Any, users: Any, items: Any) -> Any:
        """Summed cross-entropy of each positive against every item of the catalog."""
        catalog = ops.transpose(self.item_tower.embeddings)
        prior = ops.reshape(self.item_prior.embeddings, (1, -1))
        if self._dense_positives:
            import tensorflow as tf

            # The user's row of the dense mask holds all their positives, the row's own item
            # among them, and column 0: masked at once, the softmax's other candidates are
            # what is left, and the positive joins them as softplus(LSE(others) - positive),
            # the same cross-entropy without a pass to unmask the own item. What is left is the
            # same for every positive of a user, so it is scored once per user of the batch:
            # at ML-100K's shape a batch's 2,300 positives come from about 900 users, and the
            # catalog's logits are most of a step.
            distinct, of_row = tf.unique(users)
            first = tf.math.unsorted_segment_min(
                tf.range(tf.shape(users)[0]), of_row, tf.shape(distinct)[0]
            )
            logits = ops.matmul(ops.take(v, first, axis=0), catalog) + prior
            masked = ops.where(ops.take(self._positives, distinct, axis=0), _NEVER, logits)
            others = ops.take(ops.logsumexp(masked, axis=1), of_row)
            positive = ops.sum(v * w, axis=-1) + ops.reshape(self.item_prior(items), (-1,))
            return ops.sum(ops.softplus(others - positive))
        logits = ops.matmul(v, catalog) + prior
        # Column 0, the unknown item, is never a candidate; nor are the user's other positives.
        excluded = ops.arange(self.n_items + 1) == 0
        if self._positives is not None:
            excluded = ops.logical_or(excluded, self._other_positives(users, items))
        logits = ops.where(excluded, _NEVER, logits)
        return ops.sum(
            keras.losses.sparse_categorical_crossentropy(items, logits, from_logits=True)
        )

    def _in_batch_loss(self, v: Any, w: Any, items: Any) -> Any:
        """Summed cross-entropy of each positive against the batch's positives (Yi et al. 2019).

        The batch's items are a sample drawn by popularity, so each candidate's logit is lowered
        by the log of its share of the positives (log-Q): without it the softmax would learn
        to push popular items down. Another row with the same item is not a negative.
        """
        prior = ops.reshape(self.item_prior(items), (-1,))
        log_q = ops.take(self._log_q, items) if self._log_q is not None else 0.0
        logits = ops.matmul(v, ops.transpose(w)) + ops.reshape(prior - log_q, (1, -1))
        n = ops.shape(items)[0]
        same_item = ops.expand_dims(items, 1) == ops.expand_dims(items, 0)
        logits = ops.where(
            ops.logical_and(same_item, ops.logical_not(ops.eye(n, dtype="bool"))), _NEVER, logits
        )
        labels = ops.arange(n)
        return ops.sum(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )

    def _sampled_loss(self, v: Any, w: Any, users: Any, items: Any, negatives: Any) -> Any:
        """Summed cross-entropy of each positive against the batch's positives (when
        ``in_batch_negatives``) and ``negatives``, items drawn by popularity for the whole batch
        (sampled softmax, Bengio & Senecal 2008; mixed with in-batch as in Yang et al. 2020).

        Both kinds of candidate come from the popularity distribution, so each candidate's logit
        is lowered by the log of its expected count in the sample, ``log((batch + negatives) *
        q_i)`` (log-Q; the constant cancels in the softmax). A candidate that is the row's own
        item (drawn, or another row's), or another train positive of its user, is masked, as
        the full softmax masks them (on ML-100K u1: NDCG@10 0.471 with, 0.456 without).
        """

        if not self.in_batch_negatives:
            return self._sampled_per_user(v, w, users, items, negatives)
        corrected = self._log_q_corrected
        n = ops.shape(items)[0]
        sampled = ops.matmul(v, ops.transpose(self.item_tower(negatives)))
        sampled = sampled + ops.reshape(corrected(negatives), (1, -1))
        if self._positives is not None:
            # The row's own item is one of its user's train positives (the mask holds the rows
            # trained on), so the mask covers a drawn copy of it too.
            own = self._liked(users, negatives)
        else:
            own = ops.expand_dims(items, 1) == ops.expand_dims(negatives, 0)
        sampled = ops.where(own, _NEVER, sampled)
        batch = ops.matmul(v, ops.transpose(w))
        batch = batch + ops.reshape(corrected(items), (1, -1))
        same_item = ops.expand_dims(items, 1) == ops.expand_dims(items, 0)
        others = ops.logical_and(same_item, ops.logical_not(ops.eye(n, dtype="bool")))
        if self._positives is not None:
            liked = ops.logical_and(self._liked(users, items), ops.logical_not(same_item))
            others = ops.logical_or(others, liked)
        logits = ops.concatenate([ops.where(others, _NEVER, batch), sampled], axis=1)
        return ops.sum(
            keras.losses.sparse_categorical_crossentropy(ops.arange(n), logits, from_logits=True)
        )

    def _log_q_corrected(self, candidates: Any) -> Any:
        """Each candidate's prior logit lowered by log-Q (row lookups: sparse gradients)."""
        prior = ops.reshape(self.item_prior(candidates), (-1,))
        return prior if self._log_q is None else prior - ops.take(self._log_q, candidates)

    def _sampled_per_user(self, v: Any, w: Any, users: Any, items: Any, negatives: Any) -> Any:
        """The sampled softmax without in-batch negatives, scored once per distinct user.

        The cross-entropy of a positive against the sampled candidates, as the full softmax's
        dense path writes it: softplus(LSE(sampled) - positive) is -log(e^p / (e^p + sum e^s)),
        without the concatenated logits (at ML-1M's shape half the time of TensorFlow's sparse
        cross-entropy kernel). The sampled logits and their mask depend on the row's user only
        (its tower row, its positives), so they are computed once per user of the batch: with
        ``train.user_block`` a batch holds blocks of one user's rows, and the matmul, its
        gradient and the mask's lookups shrink with the distinct users.
        """
        import tensorflow as tf

        distinct, of_row = tf.unique(users)
        first = tf.math.unsorted_segment_min(
            tf.range(tf.shape(users)[0]), of_row, tf.shape(distinct)[0]
        )
        sampled = ops.matmul(ops.take(v, first, axis=0), ops.transpose(self.item_tower(negatives)))
        sampled = sampled + ops.reshape(self._log_q_corrected(negatives), (1, -1))
        if self._positives is not None:
            # The row's own item is one of its user's train positives (the mask holds the rows
            # trained on), so the mask covers a drawn copy of it too.
            own = self._liked(distinct, negatives)
        else:  # no mask: only a drawn copy of the row's own item is left out, row by row
            own = ops.expand_dims(items, 1) == ops.expand_dims(negatives, 0)
            sampled = ops.take(sampled, of_row, axis=0)
            of_row = ops.arange(ops.shape(items)[0])
        others = ops.take(ops.logsumexp(ops.where(own, _NEVER, sampled), axis=1), of_row)
        positive = ops.sum(v * w, axis=-1) + self._log_q_corrected(items)
        return ops.sum(ops.softplus(others - positive))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """``retrieval loss + rating_loss_weight * (rating MSE + its L2)``.

        Keras' own loss (the compiled MSE) and the rating head's penalties come from the parent
        and are weighted; the retrieval loss is added on top.
        """
        rating_loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        # Under tf.distribute Keras divides its own part by the replica count (the replicas'
        # gradients are summed); the retrieval part is divided alike, or it would count once
        # per replica against the rating part and the penalties.
        retrieval = scale_loss_for_distribution(self.retrieval_loss(x, y))
        return retrieval + self.rating_loss_weight * rating_loss

    def stopping_heads(self) -> dict[str, tuple[tuple[str, str, float], list[Any]]]:
        """The parts that early-stop apart, each on its validation metric and the least change
        that counts as better (see :func:`recommender.training.fit.head_stopping`): the towers
        on NDCG@10, the rating head on RMSE. A softmax converges later than an MSE; one shared
        epoch would leave one of them under- or over-trained. Without the least change both
        creep on: at ML-1M's shape the validation NDCG@10 reached 0.2376 by epoch 8 and then
        set new bests by 0.0001-0.0007 (within its noise) until the 45-epoch cap."""
        towers = [self.user_tower, self.item_tower, self.item_prior]
        return {
            "ranking": (
                ("val_ndcg_at_10", "max", NDCG_MIN_DELTA),
                [w for t in towers for w in t.weights],
            ),
            "rating": (("val_rmse", "min", RMSE_MIN_DELTA), list(self.rating_head.weights)),
        }

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "rating_loss_weight": self.rating_loss_weight,
            "relevance_threshold": self.relevance_threshold,
            "global_mean": self.global_mean,
            "rating": dict(self.rating_hyper),
            "softmax": self.softmax,
            "negatives": self.negatives,
            "in_batch_negatives": self.in_batch_negatives,
        }
