"""``ncf``: neural collaborative filtering (NeuMF), as a rating regressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from recommender.core.errors import ConfigError
from recommender.models.base import RatingModel, as_index, lookup, register


@register
class NeuMF(RatingModel):
    """Neural collaborative filtering (He et al. 2017), as a regressor on explicit ratings.

    Two paths over separate embeddings: GMF (the element-wise product ``p_u * q_i``, a
    generalised MF) and an MLP over ``[p'_u, q'_i]`` that can learn non-linear interactions. Their
    outputs are concatenated into one linear unit, added to the train mean ``mu``. The paper
    predicts implicit feedback with a sigmoid; here the output is a rating and the loss MSE. An
    unknown user or item (row 0) gets the mean of the known rows' embeddings.

    Example:
        >>> model = NeuMF(943, 1682, embedding_dim=32, mlp_layers=(64, 32, 16), dropout=0.3,
        ...               global_mean=3.53, l2=0.1, min_rating=1, max_rating=5)
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    family = "ncf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        embedding_dim: int,
        mlp_layers: Sequence[int],
        dropout: float,
        global_mean: float,
        l2: float,
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
        user, item = as_index(inputs["user"]), as_index(inputs["item"])
        gu, gi = lookup(self.gmf_user, user, training), lookup(self.gmf_item, item, training)
        mu_, mi = lookup(self.mlp_user, user, training), lookup(self.mlp_item, item, training)
        if training:
            self._penalize(gu, gi, mu_, mi)
        h = ops.concatenate([mu_, mi], axis=-1)
        for layer in self.hidden:
            h = layer(h)
            if self.drop is not None:
                h = self.drop(h, training=training)
        out = self.head(ops.concatenate([gu * gi, h], axis=-1))
        return self.global_mean + out[:, 0]

    def item_vectors(self) -> np.ndarray:
        """The GMF path's item embeddings (the MLP path has no per-item vector of its own)."""
        return np.asarray(ops.convert_to_numpy(self.gmf_item.embeddings))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "mlp_layers": list(self.mlp_layers),
            "dropout": self.dropout,
            "global_mean": self.global_mean,
        }
