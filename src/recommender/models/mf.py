"""``mf``: the collaborative-filtering tutorial's matrix factorization."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from recommender.models.base import RatingModel, as_index, register
from recommender.scoring.factors import Factors


@register
class MatrixFactorization(RatingModel):
    """Plain matrix factorization: ``r(u, i) = p_u . q_i``, trained with MSE.

    The collaborative-filtering tutorial's model, kept faithful as the reference point (no biases,
    no global mean), with one fix: the tables have ``n + 1`` rows from the vocabulary instead of
    ``max(raw id)`` rows, which left the largest id out of range. Row 0 (unknown) is never
    trained, so an unknown user or item gets an arbitrary, near-zero prediction (clipped up to the
    scale's minimum): this family has no fallback; use ``biased_mf`` or ``hybrid`` for that.

    Example:
        >>> model = MatrixFactorization(943, 1682, embedding_dim=32, l2=0.0, min_rating=1,
        ...                             max_rating=5)
        >>> model.compile(optimizer="adam", loss="mse")
        >>> model.fit({"user": u, "item": i}, r, batch_size=1024, epochs=20)
    """

    family = "mf"

    def __init__(self, n_users: int, n_items: int, *, embedding_dim: int, **kwargs: Any) -> None:
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
        p = self.user_embedding(as_index(inputs["user"]))
        q = self.item_embedding(as_index(inputs["item"]))
        if training:
            self._penalize(p, q)
        return ops.sum(p * q, axis=-1)

    def factors(self) -> Factors:
        """``p_u . q_i`` with zero biases; row 0 stays as trained (never: this family has no
        fallback for unknown ids)."""
        p = ops.convert_to_numpy(self.user_embedding.embeddings)
        q = ops.convert_to_numpy(self.item_embedding.embeddings)
        return Factors(p, q, np.zeros(p.shape[0], p.dtype), np.zeros(q.shape[0], q.dtype), 0.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "embedding_dim": self.embedding_dim}
