"""Keras 3 rating models, one small class per family.

Every model takes a dict of index tensors ``{"user": int32 (batch,), "item": int32 (batch,)}``
(encoded by the preprocess vocabulary; index 0 is the out-of-vocabulary row, known ids are
``1..n``) and returns predicted ratings of shape ``(batch,)``. At inference (``predict``, or a
direct call) predictions are clipped to the rating scale; during training they are not, so the
gradient still flows for predictions beyond the scale. Ranking uses the unclipped
:meth:`RatingModel.score` (or exported :class:`~recommender.ranking.Factors`), because clipping
would tie all the best items at the maximum rating.

Every class is registered as Keras-serializable, so ``model.save("m.keras")`` reloads with
``keras.saving.load_model("m.keras", safe_mode=True)`` (no pickled code) and predicts identically.

Families (``build_model`` names):

- ``mf``: :class:`MatrixFactorization`, the tutorial's plain dot product.
- ``biased_mf``: :class:`BiasedMF`, the default: dot product plus biases and a global mean.
- ``ncf``: :class:`NeuMF`, neural collaborative filtering (GMF + MLP paths).
- ``hybrid``: :class:`HybridRecommender`, biased MF plus a content tower for cold users/items.
- ``autorec``: :class:`ItemAutoRec`, an autoencoder over each item's train ratings.
- ``ensemble``: :class:`HybridAutoRecEnsemble`, the hybrid and the AutoRec blended: the best
  configuration on MovieLens-100K (see ``benchmarks/``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import keras
import numpy as np
from keras import ops

from recommender.config import RatingScale
from recommender.errors import ConfigError
from recommender.ranking import Factors

RegForm = Literal["per_example", "table", "none"]
REG_FORMS = ("per_example", "table", "none")
_register = keras.saving.register_keras_serializable(package="recommender")


def _index(x: Any) -> Any:
    """Any index input (``(batch,)`` or ``(batch, 1)``, any int dtype) as int32 ``(batch,)``."""
    return ops.reshape(ops.cast(x, "int32"), (-1,))


def _known(idx: Any) -> Any:
    """1.0 for a known index, 0.0 for the OOV row, shaped ``(batch, 1)`` to scale rows."""
    return ops.expand_dims(ops.cast(ops.not_equal(idx, 0), "float32"), -1)


def _lookup(table: keras.layers.Embedding, idx: Any, training: bool) -> Any:
    """Rows of ``table``; row 0 (unknown) reads as the mean of the known rows at inference.

    Row 0 never occurs in training, so its stored values are untrained noise. The mean row makes
    an unknown item "the average item" (and an unknown user the average user): for a linear
    model, exactly the average prediction over known items. While training, row 0 is zeroed
    instead: taking the mean would give every row of the table a (zero) dense gradient.
    """
    rows = table(idx)
    known = _known(idx)
    if training:
        return rows * known
    mean_row = ops.mean(table.embeddings[1:], axis=0)
    return rows * known + (1.0 - known) * mean_row


def _table_with_mean_oov(table: keras.layers.Embedding) -> np.ndarray:
    """A table as NumPy with row 0 replaced as :func:`_lookup` does at inference."""
    values = ops.convert_to_numpy(table.embeddings).copy()
    values[0] = values[1:].mean(axis=0)
    return values


class RatingModel(keras.Model):
    """Shared plumbing: table sizes, rating scale, clipping and the L2 penalty's two forms.

    Args:
        n_users: Known users; the user tables get ``n_users + 1`` rows (row 0 = unknown).
        n_items: Known items; likewise.
        min_rating: Lower end of the rating scale (inference clips to it).
        max_rating: Upper end of the rating scale.
        l2: L2 strength.
        reg_form: ``"per_example"`` adds ``l2 * mean over the batch of the squared norms of the
            looked-up rows`` to the loss: each row is shrunk in proportion to how often it is
            seen, as in Funk-SVD / Surprise's SVD, which suits MF much better than
            ``"table"`` (Keras' ``embeddings_regularizer``: every row of the whole table is
            shrunk at every step, so rare users' and items' rows collapse to zero).
            ``"none"`` disables it.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        min_rating: float = 1.0,
        max_rating: float = 5.0,
        l2: float = 0.0,
        reg_form: RegForm = "per_example",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if n_users < 1 or n_items < 1:
            raise ConfigError(f"n_users and n_items must be positive, got {n_users}, {n_items}")
        if reg_form not in REG_FORMS:
            raise ConfigError(f"reg_form must be one of {REG_FORMS}, got {reg_form!r}")
        if not min_rating < max_rating:
            raise ConfigError(f"min_rating ({min_rating}) must be below max_rating ({max_rating})")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.min_rating = float(min_rating)
        self.max_rating = float(max_rating)
        self.l2 = float(l2)
        self.reg_form = reg_form

    def _embedding(
        self,
        rows: int,
        dim: int,
        name: str,
        stddev: float | None = 0.05,
        l2: float | None = None,
    ) -> keras.layers.Layer:
        """An ``rows x dim`` table; ``stddev=None`` starts it at zero (biases). ``l2`` overrides
        the model's strength for this table (``"table"`` form only)."""
        strength = self.l2 if l2 is None else l2
        table_reg = (
            keras.regularizers.L2(strength) if self.reg_form == "table" and strength else None
        )
        init = "zeros" if stddev is None else keras.initializers.RandomNormal(stddev=stddev)
        return keras.layers.Embedding(
            rows,
            dim,
            embeddings_initializer=init,
            embeddings_regularizer=table_reg,
            name=name,
        )

    def _penalize(self, *rows: Any, l2: float | None = None) -> None:
        """Per-example L2 on looked-up rows (only while training, only in that form), with the
        model's strength or ``l2``."""
        strength = self.l2 if l2 is None else l2
        if self.reg_form != "per_example" or not strength:
            return
        total = sum(ops.sum(ops.square(r), axis=-1) for r in rows)
        self.add_loss(strength * ops.mean(total))

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        """Unclipped predictions ``(batch,)``; each family implements this."""
        raise NotImplementedError

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        raw = self.score(inputs, training=bool(training))
        if training:
            return raw
        return ops.clip(raw, self.min_rating, self.max_rating)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "min_rating": self.min_rating,
            "max_rating": self.max_rating,
            "l2": self.l2,
            "reg_form": self.reg_form,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RatingModel:
        return cls(**config)


@_register
class MatrixFactorization(RatingModel):
    """Plain matrix factorization: ``r(u, i) = p_u . q_i``, trained with MSE.

    The collaborative-filtering tutorial's model, kept faithful as the reference point (no biases,
    no global mean), with one fix: the tables have ``n + 1`` rows from the vocabulary instead of
    ``max(raw id)`` rows, which left the largest id out of range. Row 0 (unknown) is never
    trained, so an unknown user or item gets an arbitrary, near-zero prediction (clipped up to the
    scale's minimum): this family has no fallback; use ``biased_mf`` or ``hybrid`` for that.

    Example:
        >>> model = MatrixFactorization(n_users=943, n_items=1682, embedding_dim=32)
        >>> model.compile(optimizer="adam", loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 32, **kwargs: Any) -> None:
        super().__init__(n_users, n_items, **kwargs)
        self.embedding_dim = int(embedding_dim)
        # Dot products near the mean rating need large vectors; starting small (as the tutorial
        # does) lets Adam find that scale rather than fight a bad initial one.
        d = self.embedding_dim
        self.user_embedding = self._embedding(self.n_users + 1, d, "user_embedding")
        self.item_embedding = self._embedding(self.n_items + 1, d, "item_embedding")

    def build(self, input_shape: Any = None) -> None:
        self.user_embedding.build((None,))
        self.item_embedding.build((None,))

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        p = self.user_embedding(_index(inputs["user"]))
        q = self.item_embedding(_index(inputs["item"]))
        if training:
            self._penalize(p, q)
        return ops.sum(p * q, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "embedding_dim": self.embedding_dim}


@_register
class BiasedMF(RatingModel):
    """Biased matrix factorization: ``r(u, i) = mu + b_u + b_i + p_u . q_i`` (Koren et al. 2009).

    The default family. The biases absorb "this user rates high" and "this film is liked by
    everyone", leaving the vectors to model taste; ``mu`` is the train mean, fixed rather than
    learned, so training starts at the baseline instead of at zero. An unknown user or item
    (row 0) is scored as the average known one (the mean of the known rows).

    ``bias_l2`` (default: ``l2``) regularizes the biases apart from the vectors: a bias is one
    number learnt from every rating of its user or item and needs little shrinking, while the
    vectors need a lot. ``init_stddev`` is the spread of the vectors' random start; a small one
    lets the biases fit first and the vectors grow only where the data pulls them.

    Example:
        >>> model = BiasedMF(n_users=943, n_items=1682, global_mean=3.53, l2=0.1)
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 32,
        global_mean: float = 3.0,
        l2: float = 0.1,
        bias_l2: float | None = None,
        init_stddev: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_items, l2=l2, **kwargs)
        if bias_l2 is not None and bias_l2 < 0:
            raise ConfigError(f"bias_l2 must be >= 0, got {bias_l2}")
        if init_stddev <= 0:
            raise ConfigError(f"init_stddev must be positive, got {init_stddev}")
        self.embedding_dim = int(embedding_dim)
        self.global_mean = float(global_mean)
        self.bias_l2 = None if bias_l2 is None else float(bias_l2)
        self.init_stddev = float(init_stddev)
        d, std = self.embedding_dim, self.init_stddev
        self.user_embedding = self._embedding(self.n_users + 1, d, "user_embedding", std)
        self.item_embedding = self._embedding(self.n_items + 1, d, "item_embedding", std)
        self.user_bias = self._embedding(
            self.n_users + 1, 1, "user_bias", stddev=None, l2=self.bias_l2
        )
        self.item_bias = self._embedding(
            self.n_items + 1, 1, "item_bias", stddev=None, l2=self.bias_l2
        )

    def build(self, input_shape: Any = None) -> None:
        for layer in (self.user_embedding, self.item_embedding, self.user_bias, self.item_bias):
            layer.build((None,))

    def _user_parts(self, user: Any, training: bool = False) -> tuple[Any, Any]:
        return (
            _lookup(self.user_embedding, user, training),
            _lookup(self.user_bias, user, training),
        )

    def _item_parts(self, item: Any, training: bool = False) -> tuple[Any, Any]:
        return (
            _lookup(self.item_embedding, item, training),
            _lookup(self.item_bias, item, training),
        )

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        p, bu = self._user_parts(_index(inputs["user"]), training)
        q, bi = self._item_parts(_index(inputs["item"]), training)
        if training:
            self._penalize_parts(p, q, bu, bi)
        return self.global_mean + bu[:, 0] + bi[:, 0] + ops.sum(p * q, axis=-1)

    def _penalize_parts(self, p: Any, q: Any, bu: Any, bi: Any) -> None:
        """Per-example L2: ``l2`` on the vectors, ``bias_l2`` (``None``: ``l2``) on the biases."""
        self._penalize(p, q)
        self._penalize(bu, bi, l2=self.bias_l2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "global_mean": self.global_mean,
            "bias_l2": self.bias_l2,
            "init_stddev": self.init_stddev,
        }


@_register
class NeuMF(RatingModel):
    """Neural collaborative filtering (He et al. 2017), as a regressor on explicit ratings.

    Two paths over separate embeddings: GMF (the element-wise product ``p_u * q_i``, a
    generalised MF) and an MLP over ``[p'_u, q'_i]`` that can learn non-linear interactions. Their
    outputs are concatenated into one linear unit, added to the train mean ``mu``. The paper
    predicts implicit feedback with a sigmoid; here the output is a rating and the loss MSE. An
    unknown user or item (row 0) gets the mean of the known rows' embeddings.

    Example:
        >>> model = NeuMF(n_users=943, n_items=1682, global_mean=3.53, mlp_layers=(64, 32, 16))
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 32,
        mlp_layers: Sequence[int] = (64, 32, 16),
        dropout: float = 0.3,
        global_mean: float = 3.0,
        l2: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_items, l2=l2, **kwargs)
        if not mlp_layers:
            raise ConfigError("NeuMF needs at least one MLP layer")
        self.embedding_dim = int(embedding_dim)
        self.mlp_layers = tuple(int(n) for n in mlp_layers)
        self.dropout = float(dropout)
        self.global_mean = float(global_mean)
        d = self.embedding_dim
        self.gmf_user = self._embedding(self.n_users + 1, d, "gmf_user")
        self.gmf_item = self._embedding(self.n_items + 1, d, "gmf_item")
        self.mlp_user = self._embedding(self.n_users + 1, d, "mlp_user")
        self.mlp_item = self._embedding(self.n_items + 1, d, "mlp_item")
        self.hidden = [
            keras.layers.Dense(n, activation="relu", name=f"mlp_{k}")
            for k, n in enumerate(self.mlp_layers)
        ]
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout else None
        self.head = keras.layers.Dense(1, name="head")

    def build(self, input_shape: Any = None) -> None:
        for layer in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            layer.build((None,))
        width = 2 * self.embedding_dim
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.head.build((None, self.embedding_dim + width))

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        user, item = _index(inputs["user"]), _index(inputs["item"])
        gu, gi = _lookup(self.gmf_user, user, training), _lookup(self.gmf_item, item, training)
        mu_, mi = _lookup(self.mlp_user, user, training), _lookup(self.mlp_item, item, training)
        if training:
            self._penalize(gu, gi, mu_, mi)
        h = ops.concatenate([mu_, mi], axis=-1)
        for layer in self.hidden:
            h = layer(h)
            if self.drop is not None:
                h = self.drop(h, training=training)
        out = self.head(ops.concatenate([gu * gi, h], axis=-1))
        return self.global_mean + out[:, 0]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "mlp_layers": list(self.mlp_layers),
            "dropout": self.dropout,
            "global_mean": self.global_mean,
        }


@_register
class HybridRecommender(BiasedMF):
    """Biased MF plus a content tower, so cold users and items get feature-based predictions.

    ``r(u, i) = mu + b_u + b_i + c_u + c_i + (p_u + f_u) . (q_i + g_i)``, where ``p, q, b`` are
    the ID parts of :class:`BiasedMF` and ``f, g, c`` come from features, as in LightFM (Kula
    2015): an item's content vector ``g_i`` and bias ``c_i`` are linear in its features (genre
    multi-hot, normalised year, year-missing flag), which equals summing one learned vector per
    genre; a user's ``f_u`` and ``c_u`` sum one learned embedding per categorical code (age
    bucket, gender, occupation; code 0 = unknown). The ID parts of row 0 read as the average known
    row (as in :class:`BiasedMF`), so an unknown item with known features is scored as the
    average item plus what its features say, never by an untrained row.

    Why lookup tables inside the model: the feature tables (``item_features`` ``(n_items + 1, F)``
    float, ``user_features`` ``(n_users + 1, C)`` int) are passed at construction and stored as
    non-trainable weights, so they are saved with the model and serving sends only indices, like
    every other family. A brand-new item (or user) not in the vocabulary is scored with index 0
    plus an override input ``"item_features"`` ``(batch, F)`` (or ``"user_features"``
    ``(batch, C)``) that replaces the table lookup for the whole batch; omitted, the table is used.

    Example:
        >>> model = HybridRecommender(943, 1682, global_mean=3.53, item_features=item_table,
        ...                           user_features=user_table, user_cardinalities=(8, 3, 22))
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 32,
        global_mean: float = 3.0,
        l2: float = 0.1,
        item_features: np.ndarray | None = None,
        user_features: np.ndarray | None = None,
        n_item_features: int | None = None,
        user_cardinalities: Sequence[int] | None = None,
        content_l2: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_items, embedding_dim, global_mean, l2, **kwargs)
        item_table, user_table, cards = _feature_tables(
            n_users, n_items, item_features, user_features, n_item_features, user_cardinalities
        )
        self.n_item_features = item_table.shape[1]
        self.user_cardinalities = cards
        self.content_l2 = float(content_l2)
        reg = keras.regularizers.L2(self.content_l2) if self.content_l2 else None
        # Non-trainable weights, not config: they are saved with the weights, and the config
        # (JSON) stays small. Loading builds zero tables of the right shape, then fills them.
        self.item_feature_table = self.add_weight(
            shape=item_table.shape, initializer="zeros", trainable=False, name="item_feature_table"
        )
        self.item_feature_table.assign(item_table)
        self.user_feature_table = None
        if cards:  # sources without user data (e.g. the csv source) have no user tower
            self.user_feature_table = self.add_weight(
                shape=user_table.shape,
                initializer="zeros",
                trainable=False,
                dtype="int32",
                name="user_feature_table",
            )
            self.user_feature_table.assign(user_table)
        # Content weights start at zero: a feature never seen in training (say, "year missing"
        # when every train item has a year) then adds nothing, instead of a random offset. The
        # gradient still flows, because the ID vectors they are dotted with start random.
        self.item_content = keras.layers.Dense(
            self.embedding_dim,
            use_bias=False,
            kernel_initializer="zeros",
            kernel_regularizer=reg,
            name="item_content",
        )
        self.item_content_bias = keras.layers.Dense(
            1, kernel_initializer="zeros", kernel_regularizer=reg, name="item_content_bias"
        )
        self.user_content = [
            keras.layers.Embedding(
                c,
                self.embedding_dim + 1,  # the last column is the code's bias
                embeddings_initializer="zeros",
                embeddings_regularizer=reg,
                name=f"user_content_{k}",
            )
            for k, c in enumerate(cards)
        ]

    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        self.item_content.build((None, self.n_item_features))
        self.item_content_bias.build((None, self.n_item_features))
        for layer in self.user_content:
            layer.build((None,))

    def _content_user(self, feats: Any) -> tuple[Any, Any]:
        """Content vector and bias of users with these codes ``(batch, C)``."""
        total = sum(emb(feats[:, k]) for k, emb in enumerate(self.user_content))
        return total[:, :-1], total[:, -1:]

    def _content_item(self, feats: Any) -> tuple[Any, Any]:
        """Content vector and bias of items with these features ``(batch, F)``."""
        return self.item_content(feats), self.item_content_bias(feats)

    def _user_content_parts(
        self, user: Any, inputs: dict[str, Any] | None = None, training: bool = False
    ) -> tuple[Any, Any]:
        if not self.user_content:  # no user features: 0.0 broadcasts over the batch
            return 0.0, 0.0
        if inputs is not None and "user_features" in inputs:
            return self._content_user(ops.cast(inputs["user_features"], "int32"))
        return _content_lookup(self._content_user, self.user_feature_table, user, training)

    def _item_content_parts(
        self, item: Any, inputs: dict[str, Any] | None = None, training: bool = False
    ) -> tuple[Any, Any]:
        if inputs is not None and "item_features" in inputs:
            return self._content_item(ops.cast(inputs["item_features"], "float32"))
        return _content_lookup(self._content_item, self.item_feature_table, item, training)

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        user, item = _index(inputs["user"]), _index(inputs["item"])
        p, bu = self._user_parts(user, training)
        q, bi = self._item_parts(item, training)
        if training:
            self._penalize_parts(p, q, bu, bi)
        f, cu = self._user_content_parts(user, inputs, training)
        g, ci = self._item_content_parts(item, inputs, training)
        dot = ops.sum((p + f) * (q + g), axis=-1)
        return self.global_mean + (bu + cu + bi + ci)[:, 0] + dot

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_item_features": self.n_item_features,
            "user_cardinalities": list(self.user_cardinalities),
            "content_l2": self.content_l2,
        }


def _content_lookup(content: Any, table: Any, idx: Any, training: bool) -> tuple[Any, Any]:
    """Content parts of the rows' stored features; at inference row 0 reads as the mean known one.

    Whatever features the vocabulary put in row 0 ("unknown"), no train rating ever taught the
    model about them; the average item (or user) is the better guess, as for the ID parts.
    """
    vec, bias = content(ops.take(table, idx, axis=0))
    if training:
        return vec, bias
    all_vec, all_bias = content(table[1:])
    known = _known(idx)
    return (
        vec * known + (1.0 - known) * ops.mean(all_vec, axis=0),
        bias * known + (1.0 - known) * ops.mean(all_bias, axis=0),
    )


def _feature_tables(
    n_users: int,
    n_items: int,
    item_features: np.ndarray | None,
    user_features: np.ndarray | None,
    n_item_features: int | None,
    user_cardinalities: Sequence[int] | None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Check (or, when loading from config, create empty) feature tables of the right shapes."""
    if item_features is None:
        if n_item_features is None:
            raise ConfigError("HybridRecommender needs item_features (or n_item_features)")
        item_features = np.zeros((n_items + 1, n_item_features), dtype=np.float32)
    item_features = np.asarray(item_features, dtype=np.float32)
    if item_features.ndim != 2 or item_features.shape[0] != n_items + 1:
        raise ConfigError(
            f"item_features must have n_items + 1 = {n_items + 1} rows, got {item_features.shape}"
        )
    if n_item_features is not None and item_features.shape[1] != n_item_features:
        raise ConfigError(
            f"item_features has {item_features.shape[1]} columns, not {n_item_features}"
        )
    if user_features is None:
        cards = tuple(int(c) for c in (user_cardinalities or ()))
        user_features = np.zeros((n_users + 1, len(cards)), dtype=np.int32)
    else:
        user_features = np.asarray(user_features)
        if user_features.ndim != 2 or user_features.shape[0] != n_users + 1:
            raise ConfigError(
                f"user_features must have n_users + 1 = {n_users + 1} rows, "
                f"got {user_features.shape}"
            )
        if not np.issubdtype(user_features.dtype, np.integer) or (user_features < 0).any():
            raise ConfigError("user_features must hold non-negative integer codes")
        seen = tuple(int(m) + 1 for m in user_features.max(axis=0)) if user_features.size else ()
        cards = tuple(int(c) for c in user_cardinalities) if user_cardinalities else seen
        if len(cards) != user_features.shape[1] or any(
            c < s for c, s in zip(cards, seen, strict=True)
        ):
            raise ConfigError(
                f"user_cardinalities {cards} do not cover the codes in user_features (max+1 {seen})"
            )
    return item_features, user_features.astype(np.int32), cards


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


#: Largest rating matrix, (n_items + 1) x (n_users + 1) cells, an :class:`ItemAutoRec` accepts:
#: it is rebuilt densely at each step (ML-1M: 22 M cells, 90 MB); ML-25M's would need 40 GB.
AUTOREC_MAX_CELLS = 50_000_000


@_register
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

    The train ratings are stored as non-trainable weights (saved with the model), so it loads and
    scores from indices like every family. A trained AutoRec is a factor model too (user vectors
    ``w_u``, biases ``c_u``, item vectors ``h_i``), so it exports :class:`Factors` and serving
    needs no TensorFlow graph. A training step encodes the batch's items from their dense rating
    rows (batch x users x hidden units), a few seconds per epoch on ML-100K on 2 cores; the
    matrix must fit in memory (:data:`AUTOREC_MAX_CELLS`).

    Unknown users (row 0) are decoded with the mean known user's weights, unknown items with the
    mean known item's code.

    Example:
        >>> model = ItemAutoRec(943, 1682, hidden_units=100, global_mean=3.53,
        ...                     train_ratings=(user_idx, item_idx, rating))
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=4096, epochs=20)
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        hidden_units: int = 100,
        global_mean: float = 3.0,
        l2: float = 3e-5,
        dropout: float = 0.03,
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
        cells = (n_items + 1) * (n_users + 1)
        if cells > AUTOREC_MAX_CELLS:
            raise ConfigError(
                f"ItemAutoRec works on the dense item x user rating matrix; {n_items} items x "
                f"{n_users} users is {cells} cells, more than the {AUTOREC_MAX_CELLS} it is built "
                "for: use biased_mf or hybrid for data this large"
            )
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
        self.decoder = keras.layers.Embedding(
            self.n_users + 1, h, embeddings_regularizer=reg, name="decoder"
        )
        # The output starts at the train mean, so training starts from the baseline.
        self.decoder_bias = keras.layers.Embedding(
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

    def _rating_rows(self, items: Any | None = None) -> Any:
        """Rows of the dense item x user rating matrix (all of them when ``items`` is None).

        Dense on purpose: on a CPU, a dense product over the gathered rows measured 6x faster
        per training step than ``tf.sparse`` (52 vs 335 ms on ML-100K), and the matrix is
        rebuilt from the stored triplets at each call rather than stored (ML-1M: 90 MB).
        """
        shape = (self.n_items + 1, self.n_users + 1)
        indices = ops.stack([self.rating_items, self.rating_users], axis=1)
        matrix = ops.scatter(indices, self.rating_values, shape)
        return matrix if items is None else ops.take(matrix, items, axis=0)

    def _encode(self, rows: Any) -> Any:
        return ops.sigmoid(ops.matmul(rows, self.encoder_kernel) + self.encoder_bias)

    def item_codes(self) -> Any:
        """Codes ``h_i`` of every item ``(n_items + 1, hidden_units)``; row 0 (an unknown item)
        is the mean known item's code."""
        codes = self._encode(self._rating_rows())
        return ops.concatenate([ops.mean(codes[1:], axis=0, keepdims=True), codes[1:]], axis=0)

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        user, item = _index(inputs["user"]), _index(inputs["item"])
        if training:  # only the batch's items: no unknown ones, and much less work
            rows = self._rating_rows(item)
            if self.input_dropout is not None:
                rows = self.input_dropout(rows, training=True)
            h = self._encode(rows)
        else:
            h = ops.take(self.item_codes(), item, axis=0)
        w = _lookup(self.decoder, user, training)
        c = _lookup(self.decoder_bias, user, training)
        return c[:, 0] + ops.sum(w * h, axis=-1)

    def factors(self) -> Factors:
        """The trained model as :class:`Factors` (``mu + b_u + w_u . h_i``)."""
        return Factors(
            user_vectors=_table_with_mean_oov(self.decoder),
            item_vectors=ops.convert_to_numpy(self.item_codes()),
            user_bias=_table_with_mean_oov(self.decoder_bias)[:, 0] - self.global_mean,
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


@_register
class HybridAutoRecEnsemble(RatingModel):
    """The hybrid and the item AutoRec in one model: ``r = a * hybrid + (1 - a) * autorec``.

    The best configuration the project offers (``train.model: ensemble``). The two members see
    the data differently (free ID vectors plus content features, against item codes computed from
    the rating matrix), so their errors are partly independent and their blend beats either. Both
    are trained together, on the blend's loss, with one optimizer and early stopping on the
    blend's validation RMSE; each keeps its own regularization (``train.hybrid`` and
    ``train.autorec`` give their knobs). The blend is a factor model again (vectors side by side,
    biases blended), so it exports :class:`Factors` like its members.

    Example:
        >>> model = HybridAutoRecEnsemble(943, 1682, global_mean=3.53, blend=0.5,
        ...     item_features=items, user_features=users, user_cardinalities=(8, 3, 22),
        ...     train_ratings=(user_idx, item_idx, rating))
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        global_mean: float = 3.0,
        blend: float = 0.5,
        hybrid: dict[str, Any] | None = None,
        autorec: dict[str, Any] | None = None,
        item_features: np.ndarray | None = None,
        user_features: np.ndarray | None = None,
        n_item_features: int | None = None,
        user_cardinalities: Sequence[int] | None = None,
        train_ratings: Any = None,
        n_train_ratings: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_items, **kwargs)
        if not 0 <= blend <= 1:
            raise ConfigError(f"blend must be in [0, 1], got {blend}")
        self.blend = float(blend)
        self.global_mean = float(global_mean)
        self.hybrid_hyper = _member_hyper("hybrid", hybrid)
        self.autorec_hyper = _member_hyper("autorec", autorec)
        scale = {"min_rating": self.min_rating, "max_rating": self.max_rating}
        self.hybrid = HybridRecommender(
            n_users,
            n_items,
            global_mean=global_mean,
            item_features=item_features,
            user_features=user_features,
            n_item_features=n_item_features,
            user_cardinalities=user_cardinalities,
            name="hybrid",
            **scale,
            **self.hybrid_hyper,
        )
        self.autorec = ItemAutoRec(
            n_users,
            n_items,
            global_mean=global_mean,
            train_ratings=train_ratings,
            n_train_ratings=n_train_ratings,
            name="autorec",
            **scale,
            **self.autorec_hyper,
        )

    def build(self, input_shape: Any = None) -> None:
        self.hybrid.build()
        self.autorec.build()

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        h = self.hybrid.score(inputs, training)
        a = self.autorec.score(inputs, training)
        return self.blend * h + (1.0 - self.blend) * a

    def factors(self) -> Factors:
        """Both members' factors side by side: ``a*h + (1-a)*r`` as one dot product."""
        hy, ar = export_factors(self.hybrid), self.autorec.factors()
        a, b = self.blend, 1.0 - self.blend
        return Factors(
            user_vectors=np.concatenate([a * hy.user_vectors, b * ar.user_vectors], axis=1),
            item_vectors=np.concatenate([hy.item_vectors, ar.item_vectors], axis=1),
            user_bias=a * hy.user_bias + b * ar.user_bias,
            item_bias=a * hy.item_bias + b * ar.item_bias,
            global_mean=a * hy.global_mean + b * ar.global_mean,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "global_mean": self.global_mean,
            "blend": self.blend,
            "hybrid": dict(self.hybrid_hyper),
            "autorec": dict(self.autorec_hyper),
            "n_item_features": self.hybrid.n_item_features,
            "user_cardinalities": list(self.hybrid.user_cardinalities),
            "n_train_ratings": self.autorec.n_train_ratings,
        }


def _member_hyper(family: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """An ensemble member's knobs: its family's defaults overridden by ``given`` (checked)."""
    given = dict(given or {})
    allowed = _constructor_args(_FAMILIES[family]) - _DATA_ARGS
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"ensemble member {family!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    hyper = {**DEFAULT_HYPER[family], **given}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()}


#: The families' defaults, the same as ``params.yaml``'s and ``config.py``'s. ``biased_mf``,
#: ``hybrid`` and ``autorec`` were tuned on ML-100K's validation split (90/10 of ``u1.base``;
#: ``u1.test`` never took part): ``biased_mf`` at batch 4096, Adam 1e-2 reaches val RMSE
#: 0.908 by epoch 7 with 64 dimensions, per-example l2 0.1 on the vectors, 0.01 on the biases
#: and a small random start (0.01); one l2 for both stalls at 0.911 whatever the size (16 to
#: 128) or step, and below 0.05 it overfits within 5 epochs. The hybrid likewise (val 0.893,
#: from 0.900 with one l2 of 0.014 for vectors and biases); its content tower wants far stronger
#: L2 (0.009) than its first guess (1e-5). ``mf`` is left unregularized, like the tutorial it
#: reproduces.
DEFAULT_HYPER: dict[str, dict[str, Any]] = {
    "mf": {"embedding_dim": 32, "l2": 0.0},
    "biased_mf": {"embedding_dim": 64, "l2": 0.1, "bias_l2": 0.01, "init_stddev": 0.01},
    "ncf": {"embedding_dim": 32, "mlp_layers": (64, 32, 16), "dropout": 0.3, "l2": 0.1},
    "hybrid": {
        "embedding_dim": 128,
        "l2": 0.1,
        "bias_l2": 0.01,
        "init_stddev": 0.05,
        "content_l2": 0.009,
    },
    "autorec": {"hidden_units": 100, "l2": 3e-5, "dropout": 0.03},
}
#: Trained jointly in the ensemble, the hybrid wants less L2 than alone (val 0.881 against 0.886).
DEFAULT_HYPER["ensemble"] = {
    "blend": 0.5,
    "hybrid": {**DEFAULT_HYPER["hybrid"], "l2": 0.025},
    "autorec": DEFAULT_HYPER["autorec"],
}

_FAMILIES: dict[str, type[RatingModel]] = {
    "mf": MatrixFactorization,
    "biased_mf": BiasedMF,
    "ncf": NeuMF,
    "hybrid": HybridRecommender,
    "autorec": ItemAutoRec,
    "ensemble": HybridAutoRecEnsemble,
}
#: Families whose constructor takes the item/user feature tables (``item_features``, ...).
NEEDS_FEATURES = ("hybrid", "ensemble")
#: Families whose constructor takes the train ratings (``train_ratings``).
NEEDS_RATINGS = ("autorec", "ensemble")
#: Every family ``build_model`` knows (``train.model``'s choices).
FAMILY_NAMES = tuple(_FAMILIES)
#: The families built from table sizes (and, for the hybrid, features) alone; the others also
#: take the train ratings (:data:`NEEDS_RATINGS`).
MODEL_NAMES = tuple(name for name in FAMILY_NAMES if name not in NEEDS_RATINGS)
#: Constructor arguments that come from the data, not from ``params.yaml``.
_DATA_ARGS = {
    "n_users",
    "n_items",
    "min_rating",
    "max_rating",
    "global_mean",
    "item_features",
    "user_features",
    "n_item_features",
    "user_cardinalities",
    "train_ratings",
    "n_train_ratings",
}


def _constructor_args(cls: type) -> set[str]:
    """Named constructor arguments of ``cls`` and its bases up to :class:`RatingModel`."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not issubclass(klass, RatingModel):
            break
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}
    return names


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    scale: RatingScale,
    global_mean: float,
    **hyper: Any,
) -> RatingModel:
    """Build (not compile) a model of family ``name`` with its defaults overridden by ``hyper``.

    Args:
        name: One of :data:`FAMILY_NAMES`.
        n_users: Known users (tables get one more row, for unknown users).
        n_items: Known items.
        scale: The rating scale predictions are clipped to.
        global_mean: Mean train rating (ignored by ``mf``, which has no offset).
        **hyper: Constructor arguments, e.g. ``embedding_dim=64``; the hybrid needs
            ``item_features`` and optionally ``user_features``/``user_cardinalities``.
    """
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(FAMILY_NAMES)}")
    cls = _FAMILIES[name]
    accepted = _constructor_args(cls) - {"n_users", "n_items", "min_rating", "max_rating"}
    unknown = sorted(set(hyper) - accepted)
    if unknown:  # a typo must not silently train the default
        raise ConfigError(
            f"model {name!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted - {'global_mean'}))}"
        )
    kwargs = {**DEFAULT_HYPER[name], **hyper}
    if name != "mf":
        kwargs["global_mean"] = float(global_mean)
    model = cls(n_users, n_items, min_rating=scale.min, max_rating=scale.max, **kwargs)
    model.build()
    return model


def compile_model(
    model: RatingModel, learning_rate: float = 3e-3, steps_per_execution: int = 1
) -> RatingModel:
    """Compile with Adam and MSE (the loss), reporting RMSE.

    ``steps_per_execution`` runs that many batches per call into the compiled train function:
    these models are so small that Python's per-step overhead would otherwise dominate an epoch.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        steps_per_execution=steps_per_execution,
        # XLA compiles for seconds on a CPU, longer than these models train.
        jit_compile=False,
    )
    return model


def model_inputs(user_idx: np.ndarray, item_idx: np.ndarray) -> dict[str, np.ndarray]:
    """The input dict every model takes, with the dtypes it expects."""
    return {
        "user": np.asarray(user_idx, dtype=np.int32).reshape(-1),
        "item": np.asarray(item_idx, dtype=np.int32).reshape(-1),
    }


def make_dataset(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    rating: np.ndarray,
    batch_size: int = 1024,
    shuffle: bool = True,
    seed: int = 42,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(inputs, rating)``, reshuffled every epoch.

    Shuffling permutes row indices once per epoch and gathers whole batches, rather than
    shuffling row by row through a shuffle buffer (several times slower here, where the model
    itself costs little). The permutation is stateless, keyed by ``seed`` and a per-epoch draw
    from a seeded ``Dataset.random``: the same seed gives the same epochs in any process.
    """
    import tensorflow as tf

    inputs = model_inputs(user_idx, item_idx)
    users = tf.constant(inputs["user"])
    items = tf.constant(inputs["item"])
    ratings = tf.constant(np.asarray(rating, dtype=np.float32).reshape(-1))
    n = int(ratings.shape[0])
    n_batches = -(-n // batch_size)

    def epoch_order(epoch_key: Any) -> Any:
        order = tf.range(n, dtype=tf.int64)
        if not shuffle:
            return order
        key = tf.stack([tf.constant(seed, tf.int64), epoch_key])
        return tf.random.experimental.stateless_shuffle(order, seed=key)

    def batches(order: Any) -> Any:
        return tf.data.Dataset.range(n_batches).map(
            lambda b: order[b * batch_size : tf.minimum((b + 1) * batch_size, n)]
        )

    def gather(rows: Any) -> Any:
        return (
            {"user": tf.gather(users, rows), "item": tf.gather(items, rows)},
            tf.gather(ratings, rows),
        )

    epochs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    ds = epochs.map(epoch_order).flat_map(batches).map(gather)
    # Known length, so Keras shows a progress bar and ``steps_per_execution`` can group batches.
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_ratings(
    model: RatingModel, user_idx: np.ndarray, item_idx: np.ndarray, batch_size: int = 8192
) -> np.ndarray:
    """Clipped rating predictions for (user, item) pairs, as float32 NumPy."""
    out = model.predict(model_inputs(user_idx, item_idx), batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32).reshape(-1)


def export_factors(model: RatingModel) -> Factors | None:
    """The model as NumPy :class:`Factors`, for fast ranking and similar items; None for ``ncf``.

    For the hybrid, each row's vector and bias already include its content part (from the
    stored feature tables), so ``Factors.score`` equals ``model.score`` for every known index.
    """
    if isinstance(model, ItemAutoRec | HybridAutoRecEnsemble):
        return model.factors()
    if isinstance(model, HybridRecommender):
        users = ops.arange(model.n_users + 1, dtype="int32")
        items = ops.arange(model.n_items + 1, dtype="int32")
        p, bu = model._user_parts(users)
        q, bi = model._item_parts(items)
        f, cu = model._user_content_parts(users)
        g, ci = model._item_content_parts(items)
        return Factors(
            user_vectors=ops.convert_to_numpy(p + f),
            item_vectors=ops.convert_to_numpy(q + g),
            user_bias=ops.convert_to_numpy(bu + cu)[:, 0],
            item_bias=ops.convert_to_numpy(bi + ci)[:, 0],
            global_mean=model.global_mean,
        )
    if isinstance(model, BiasedMF):
        return Factors(
            user_vectors=_table_with_mean_oov(model.user_embedding),
            item_vectors=_table_with_mean_oov(model.item_embedding),
            user_bias=_table_with_mean_oov(model.user_bias)[:, 0],
            item_bias=_table_with_mean_oov(model.item_bias)[:, 0],
            global_mean=model.global_mean,
        )
    if isinstance(model, MatrixFactorization):
        p = ops.convert_to_numpy(model.user_embedding.embeddings)
        q = ops.convert_to_numpy(model.item_embedding.embeddings)
        return Factors(p, q, np.zeros(p.shape[0], p.dtype), np.zeros(q.shape[0], q.dtype), 0.0)
    return None


def score_all_items(
    model: RatingModel, users: np.ndarray, pairs_per_batch: int = 262_144
) -> np.ndarray:
    """Unclipped scores of every item (column = item index) for each user, for ranking.

    Uses exported factors where the family has them (one matrix product); otherwise calls
    :meth:`RatingModel.score` on the user x item grid, a few hundred thousand pairs at a time.
    """
    users = np.asarray(users, dtype=np.int32).reshape(-1)
    factors = export_factors(model)
    if factors is not None:
        return factors.score(users)
    n_cols = model.n_items + 1
    rows_per_batch = max(1, pairs_per_batch // n_cols)
    items = np.arange(n_cols, dtype=np.int32)
    out = np.empty((users.size, n_cols), dtype=np.float32)
    for s in range(0, users.size, rows_per_batch):
        block = users[s : s + rows_per_batch]
        grid = {"user": np.repeat(block, n_cols), "item": np.tile(items, block.size)}
        scores = ops.convert_to_numpy(model.score(grid))
        out[s : s + block.size] = scores.reshape(block.size, n_cols)
    return out
