"""``biased_mf``: matrix factorization with user and item biases and the global mean."""

from __future__ import annotations

from typing import Any

from keras import ops

from recommender.core.errors import ConfigError
from recommender.models.base import (
    RatingModel,
    as_index,
    lookup,
    register,
    table_with_mean_oov,
)
from recommender.scoring.factors import Factors


@register
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
        >>> model = BiasedMF(943, 1682, embedding_dim=64, global_mean=3.53, l2=0.1, bias_l2=0.01,
        ...                  init_stddev=0.01, min_rating=1, max_rating=5)
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    family = "biased_mf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        embedding_dim: int,
        global_mean: float,
        l2: float,
        bias_l2: float | None,
        init_stddev: float,
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
            lookup(self.user_embedding, user, training),
            lookup(self.user_bias, user, training),
        )

    def _item_parts(self, item: Any, training: bool = False) -> tuple[Any, Any]:
        return (
            lookup(self.item_embedding, item, training),
            lookup(self.item_bias, item, training),
        )

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        p, bu = self._user_parts(as_index(inputs["user"]), training)
        q, bi = self._item_parts(as_index(inputs["item"]), training)
        if training:
            self._penalize_parts(p, q, bu, bi)
        return self.global_mean + bu[:, 0] + bi[:, 0] + ops.sum(p * q, axis=-1)

    def _penalize_parts(self, p: Any, q: Any, bu: Any, bi: Any) -> None:
        """Per-example L2: ``l2`` on the vectors, ``bias_l2`` (``None``: ``l2``) on the biases."""
        self._penalize(p, q)
        self._penalize(bu, bi, l2=self.bias_l2)

    def factors(self) -> Factors:
        """The tables as NumPy, row 0 read as the mean known row (as :func:`lookup` does)."""
        return Factors(
            user_vectors=table_with_mean_oov(self.user_embedding),
            item_vectors=table_with_mean_oov(self.item_embedding),
            user_bias=table_with_mean_oov(self.user_bias)[:, 0],
            item_bias=table_with_mean_oov(self.item_bias)[:, 0],
            global_mean=self.global_mean,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "global_mean": self.global_mean,
            "bias_l2": self.bias_l2,
            "init_stddev": self.init_stddev,
        }
