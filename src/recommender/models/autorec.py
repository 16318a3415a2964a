"""``autorec``: item-based AutoRec, an autoencoder over each item's vector of train ratings."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from recommender.core.errors import ConfigError
from recommender.models.base import (
    RatingModel,
    RegForm,
    RowEmbedding,
    as_index,
    lookup,
    register,
    table_with_mean_oov,
)
from recommender.models.sizing import AUTOREC_CODE_BLOCK_RATINGS as ITEM_CODE_BLOCK_RATINGS
from recommender.scoring.factors import Factors


def _train_ratings(
    n_users: int,
    n_items: int,
    train_ratings: Any,
    n_train_ratings: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the ``(user_idx, item_idx, rating)`` arrays an AutoRec encodes, sorted by item.

    Loading from a config passes none: zero arrays of the saved length are made, and the saved
    weights fill them.
    """
    if train_ratings is None:
        if n_train_ratings is None:
            raise ConfigError("ItemAutoRec needs train_ratings (or n_train_ratings)")
        n = int(n_train_ratings)
        return np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32)
    users, items, values = (np.asarray(a).reshape(-1) for a in train_ratings)
    if not users.size == items.size == values.size:
        raise ConfigError(
            f"train_ratings must be three arrays of one length (user_idx, item_idx, rating), "
            f"got {users.size}, {items.size}, {values.size}"
        )
    if users.size and (users.min() < 1 or users.max() > n_users):
        raise ConfigError(f"train_ratings user indices must be in 1..{n_users} (0 is unknown)")
    if items.size and (items.min() < 1 or items.max() > n_items):
        raise ConfigError(f"train_ratings item indices must be in 1..{n_items} (0 is unknown)")
    if n_train_ratings is not None and users.size != n_train_ratings:
        raise ConfigError(f"train_ratings has {users.size} rows, not {n_train_ratings}")
    order = np.lexsort((users, items))  # row-major order of the (item, user) sparse matrix
    return (
        users[order].astype(np.int32),
        items[order].astype(np.int32),
        values[order].astype(np.float32),
    )


def _csr_times_dense(matrix: Any, dense: Any) -> Any:
    """``matrix @ dense`` for a CSR ``matrix`` of data (the ratings): the gradient flows to
    ``dense`` only, as ``matrix^T @ grad``.

    TensorFlow's registered gradient of the CSR product also builds one for the matrix, which
    fails on a matrix whose row count is only known at run time and would cost a dot product
    per stored rating for nothing.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def product(b: Any) -> Any:
        def grad(upstream: Any) -> Any:
            return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=upstream, transpose_a=True)

        return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=b), grad

    return product(dense)


@register
class ItemAutoRec(RatingModel):
    """Item-based AutoRec (Sedhain et al. 2015): an autoencoder over each item's ratings.

    Item ``i`` is its vector of train ratings over all users, ``x_i`` (0 where unrated). The
    encoder compresses it to a code ``h_i = sigmoid(V x_i + b)``; the decoder reads a rating for
    every user back out: ``r(u, i) = c_u + w_u . h_i``. Only observed ratings enter the loss (the
    per-row MSE every family uses), with L2 on ``V`` and ``W`` over the whole tables, as in the
    paper. An optional dropout on the input ratings makes it a denoising autoencoder.

    Why it is here: an item's representation is computed from who rated it and how, not learned
    as a free vector, so rarely rated items borrow strength from the users who did rate them. On
    ML-100K it is as accurate as the tuned hybrid and errs differently from matrix factorization,
    which is what :class:`HybridAutoRecEnsemble` exploits.

    The train ratings are stored as non-trainable weights (saved with the model), sorted by
    item, so each item's ratings are one contiguous slice (CSR rows). It loads and scores from
    indices like every family. A trained AutoRec is a factor model too (user vectors ``w_u``,
    biases ``c_u``, item vectors ``h_i``), so it exports :class:`Factors` and serving needs no
    TensorFlow graph.

    Cost scales with ratings, not with users x items: ``V x_i`` is a sparse-dense product over
    item ``i``'s observed ``(user, rating)`` entries only. A training step encodes the distinct
    items of its batch from their ratings: at most the ratings of the batch-size most-rated
    items (:func:`recommender.models.sizing.autorec_ratings_per_step`; ML-100K, batch 4096, reads
    ~74k of its 80k ratings per step). Every item's code (export, an unknown item's code) is
    computed in blocks of :data:`ITEM_CODE_BLOCK_RATINGS` ratings. An item repeated in a batch
    is encoded once, so its copies share one input-dropout draw in that step. What still grows
    with the data: a step reads its items' ratings, so an epoch costs about (ratings / batch) x
    ratings read per step; the train stage's memory guard sizes that step before training.

    Unknown users (row 0) are decoded with the mean known user's weights, unknown items with the
    mean known item's code.

    Example:
        >>> model = build_model("autorec", 943, 1682, RatingScale(), global_mean=3.53,
        ...                     train_ratings=(user_idx, item_idx, rating))
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=4096, epochs=20)
    """

    family = "autorec"
    needs_ratings = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        hidden_units: int,
        global_mean: float,
        l2: float,
        dropout: float,
        train_ratings: Any = None,
        n_train_ratings: int | None = None,
        reg_form: RegForm = "table",
        **kwargs: Any,
    ) -> None:
        if reg_form != "table":  # the paper's form; per-example L2 has no rows to apply to here
            raise ConfigError(
                f"ItemAutoRec regularizes whole tables (reg_form 'table'), not {reg_form!r}"
            )
        super().__init__(n_users, n_items, l2=l2, reg_form="table", **kwargs)
        if hidden_units < 1:
            raise ConfigError(f"hidden_units must be positive, got {hidden_units}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        users, items, values = _train_ratings(n_users, n_items, train_ratings, n_train_ratings)
        self.hidden_units = int(hidden_units)
        self.global_mean = float(global_mean)
        self.dropout = float(dropout)
        self.n_train_ratings = int(values.size)
        # The rating matrix, as non-trainable weights: saved with the model, never in the config.
        self.rating_users = self._constant(users, "rating_users", "int32")
        self.rating_items = self._constant(items, "rating_items", "int32")
        self.rating_values = self._constant(values, "rating_values", "float32")
        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        h = self.hidden_units
        self.encoder_kernel = self.add_weight(
            shape=(self.n_users + 1, h),
            initializer="glorot_uniform",
            regularizer=reg,
            name="encoder_kernel",
        )
        self.encoder_bias = self.add_weight(shape=(h,), initializer="zeros", name="encoder_bias")
        self.decoder = RowEmbedding(self.n_users + 1, h, embeddings_regularizer=reg, name="decoder")
        # The output starts at the train mean, so training starts from the baseline.
        self.decoder_bias = RowEmbedding(
            self.n_users + 1,
            1,
            embeddings_initializer=keras.initializers.Constant(self.global_mean),
            name="decoder_bias",
        )
        self.input_dropout = keras.layers.Dropout(self.dropout) if self.dropout else None

    def _constant(self, values: np.ndarray, name: str, dtype: str) -> Any:
        weight = self.add_weight(
            shape=values.shape, initializer="zeros", trainable=False, dtype=dtype, name=name
        )
        weight.assign(values)
        return weight

    def build(self, input_shape: Any = None) -> None:
        self.decoder.build((None,))
        self.decoder_bias.build((None,))

    def _encode_items(self, items: Any, training: bool = False) -> Any:
        """Codes ``h_i = sigmoid(V x_i + b)`` of ``items`` (distinct indices), ``(n, hidden)``.

        Reads only the items' stored ratings: their slices of the item-sorted arrays become the
        rows of an ``n x (n_users + 1)`` CSR matrix, multiplied by ``V``. On an ML-100K step
        (batch 4096: ~1,000 items, 74k ratings) the CSR product and its gradient took 6 ms,
        against 50 ms for the dense rows it replaces and 47 ms for
        ``tf.sparse.sparse_dense_matmul``; a whole epoch went from ~4.5 to ~2 s. Input dropout
        (a denoising AutoRec) drops observed ratings only, as on the dense rows: zeros stay zero.
        """
        import tensorflow as tf

        item_of = tf.convert_to_tensor(self.rating_items)
        starts = tf.searchsorted(item_of, items, side="left")
        counts = tf.searchsorted(item_of, items, side="right") - starts
        row = tf.repeat(tf.range(tf.size(items)), counts)  # each read rating's row in the block
        before = tf.cumsum(counts, exclusive=True)
        position = tf.gather(starts, row) + tf.range(tf.size(row)) - tf.gather(before, row)
        users = tf.gather(tf.convert_to_tensor(self.rating_users), position)
        values = tf.gather(tf.convert_to_tensor(self.rating_values), position)
        if training and self.input_dropout is not None:
            values = self.input_dropout(values, training=True)
        shape = tf.cast(tf.stack([tf.size(items), self.n_users + 1]), tf.int64)
        indices = tf.cast(tf.stack([row, users], axis=1), tf.int64)  # row-major, as CSR wants
        matrix = tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=indices, values=tf.stop_gradient(values), dense_shape=shape
        )
        x = _csr_times_dense(matrix, tf.convert_to_tensor(self.encoder_kernel))
        return ops.sigmoid(x + self.encoder_bias)

    def item_codes(self) -> np.ndarray:
        """Codes ``h_i`` of every item ``(n_items + 1, hidden_units)``; row 0 (an unknown item)
        is the mean known item's code. Computed in blocks of about
        :data:`ITEM_CODE_BLOCK_RATINGS` ratings, so memory stays bounded."""
        items = ops.convert_to_numpy(self.rating_items)
        starts = np.searchsorted(items, np.arange(self.n_items + 2))
        codes = np.empty((self.n_items + 1, self.hidden_units), np.float32)
        first = 1
        while first <= self.n_items:  # blocks of whole items, about BLOCK ratings each
            last = int(np.searchsorted(starts, starts[first] + ITEM_CODE_BLOCK_RATINGS, "right"))
            last = min(max(last - 1, first + 1), self.n_items + 1)
            block = ops.arange(first, last, dtype="int32")
            codes[first:last] = ops.convert_to_numpy(self._encode_items(block))
            first = last
        codes[0] = codes[1:].mean(axis=0)
        return codes

    def _mean_code(self) -> Any:
        """The mean known item's code (an unknown item's), in the graph, item block by item
        block as :meth:`item_codes` goes, so memory stays bounded."""
        import tensorflow as tf

        n = self.n_items
        # starts[i]: where item i's ratings begin in the item-sorted arrays (i = 0 .. n + 1).
        starts = tf.searchsorted(
            tf.convert_to_tensor(self.rating_items), tf.range(n + 2, dtype=tf.int32)
        )

        def step(first: Any, total: Any) -> tuple[Any, Any]:
            budget = starts[first] + ITEM_CODE_BLOCK_RATINGS
            last = tf.searchsorted(starts, budget[None], side="right")[0] - 1
            last = tf.clip_by_value(last, first + 1, n + 1)
            block = tf.range(first, last, dtype=tf.int32)
            return last, total + tf.reduce_sum(self._encode_items(block), axis=0)

        _, total = tf.while_loop(
            lambda first, _: first <= n,
            step,
            (tf.constant(1, tf.int32), tf.zeros((self.hidden_units,))),
        )
        return total / n

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        import tensorflow as tf

        user, item = as_index(inputs["user"]), as_index(inputs["item"])
        distinct, where = tf.unique(item)  # each item encoded once per batch
        codes = self._encode_items(distinct, training)
        if not training:  # training batches hold no unknown items (row 0)
            unknown = tf.cast(tf.equal(distinct, 0), codes.dtype)[:, None]
            mean = tf.cond(
                tf.reduce_any(tf.equal(distinct, 0)),
                self._mean_code,
                lambda: tf.zeros((self.hidden_units,)),
            )
            codes = codes * (1.0 - unknown) + unknown * mean
        h = tf.gather(codes, where)
        w = lookup(self.decoder, user, training)
        c = lookup(self.decoder_bias, user, training)
        return c[:, 0] + ops.sum(w * h, axis=-1)

    def factors(self) -> Factors:
        """The trained model as :class:`Factors` (``mu + b_u + w_u . h_i``)."""
        return Factors(
            user_vectors=table_with_mean_oov(self.decoder),
            item_vectors=self.item_codes(),
            user_bias=table_with_mean_oov(self.decoder_bias)[:, 0] - self.global_mean,
            item_bias=np.zeros(self.n_items + 1, dtype=np.float32),
            global_mean=self.global_mean,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "global_mean": self.global_mean,
            "dropout": self.dropout,
            "n_train_ratings": self.n_train_ratings,
        }
