"""``hybrid``: biased MF plus a content tower (item genres and year; user age, gender, job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from recommender.core.errors import ConfigError
from recommender.models.base import RowEmbedding, as_index, known_mask, register
from recommender.models.biased_mf import BiasedMF
from recommender.scoring.factors import Factors


@register
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
        >>> model = build_model("hybrid", 943, 1682, RatingScale(), global_mean=3.53,
        ...     item_features=item_table, user_features=user_table, user_cardinalities=(8, 3, 22))
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    family = "hybrid"
    needs_features = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        content_l2: float,
        item_features: np.ndarray | None = None,
        user_features: np.ndarray | None = None,
        n_item_features: int | None = None,
        user_cardinalities: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_items, **kwargs)
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
            RowEmbedding(
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
        return content_lookup(self._content_user, self.user_feature_table, user, training)

    def _item_content_parts(
        self, item: Any, inputs: dict[str, Any] | None = None, training: bool = False
    ) -> tuple[Any, Any]:
        if inputs is not None and "item_features" in inputs:
            return self._content_item(ops.cast(inputs["item_features"], "float32"))
        return content_lookup(self._content_item, self.item_feature_table, item, training)

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        user, item = as_index(inputs["user"]), as_index(inputs["item"])
        p, bu = self._user_parts(user, training)
        q, bi = self._item_parts(item, training)
        if training:
            self._penalize_parts(p, q, bu, bi)
        f, cu = self._user_content_parts(user, inputs, training)
        g, ci = self._item_content_parts(item, inputs, training)
        dot = ops.sum((p + f) * (q + g), axis=-1)
        return self.global_mean + (bu + cu + bi + ci)[:, 0] + dot

    def factors(self) -> Factors:
        """ID and content parts summed per row, so ``Factors.score`` equals :meth:`score` for
        every known index (the content part comes from the stored feature tables)."""
        users = ops.arange(self.n_users + 1, dtype="int32")
        items = ops.arange(self.n_items + 1, dtype="int32")
        p, bu = self._user_parts(users)
        q, bi = self._item_parts(items)
        f, cu = self._user_content_parts(users)
        g, ci = self._item_content_parts(items)
        return Factors(
            user_vectors=ops.convert_to_numpy(p + f),
            item_vectors=ops.convert_to_numpy(q + g),
            user_bias=ops.convert_to_numpy(bu + cu)[:, 0],
            item_bias=ops.convert_to_numpy(bi + ci)[:, 0],
            global_mean=self.global_mean,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_item_features": self.n_item_features,
            "user_cardinalities": list(self.user_cardinalities),
            "content_l2": self.content_l2,
        }


def content_lookup(content: Any, table: Any, idx: Any, training: bool) -> tuple[Any, Any]:
    """Content parts of the rows' stored features; at inference row 0 reads as the mean known one.

    Whatever features the vocabulary put in row 0 ("unknown"), no train rating ever taught the
    model about them; the average item (or user) is the better guess, as for the ID parts.
    """
    vec, bias = content(ops.take(table, idx, axis=0))
    if training:
        return vec, bias
    all_vec, all_bias = content(table[1:])
    known = known_mask(idx)
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
