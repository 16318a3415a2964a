"""A factorised model as plain NumPy arrays: what ranking and the service score with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Row of the out-of-vocabulary user or item.
OOV = 0


@dataclass(frozen=True)
class Factors:
    """A factorised model as plain arrays: ``score(u, i) = mu + b_u + b_i + p_u . q_i``.

    Exported from a trained Keras model (:meth:`recommender.models.RatingModel.factors`) so that
    ranking all items for a user is one matrix product, with no TensorFlow at serving time.
    Scores are not clipped to the rating scale: clipping would tie the best items at the maximum
    and make the ranking among them arbitrary.

    Attributes:
        user_vectors: ``(n_users + 1, d)``.
        item_vectors: ``(n_items + 1, d)``.
        user_bias: ``(n_users + 1,)``.
        item_bias: ``(n_items + 1,)``.
        global_mean: The constant offset ``mu``.
    """

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    global_mean: float = 0.0

    def __post_init__(self) -> None:
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise ValueError(
                f"user vectors have {self.user_vectors.shape[1]} dims, "
                f"item vectors {self.item_vectors.shape[1]}"
            )
        if self.user_bias.shape != (self.user_vectors.shape[0],):
            raise ValueError("user_bias must have one entry per user row")
        if self.item_bias.shape != (self.item_vectors.shape[0],):
            raise ValueError("item_bias must have one entry per item row")

    @property
    def n_users(self) -> int:
        """Known users (the OOV row not counted)."""
        return self.user_vectors.shape[0] - 1

    @property
    def n_items(self) -> int:
        """Known items (the OOV row not counted)."""
        return self.item_vectors.shape[0] - 1

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item (column = item index) for each user: ``(len(users), n_items + 1)``.

        Unknown user indices (outside the table) are scored as the OOV user, row 0.
        """
        users = _clip_to_table(users, self.n_users)
        return (
            self.global_mean
            + self.user_bias[users][:, None]
            + self.item_bias[None, :]
            + self.user_vectors[users] @ self.item_vectors.T
        )

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of given (user, item) pairs (unclipped); unknown indices use row 0."""
        users = _clip_to_table(users, self.n_users)
        items = _clip_to_table(items, self.n_items)
        dots = np.einsum("ij,ij->i", self.user_vectors[users], self.item_vectors[items])
        return self.global_mean + self.user_bias[users] + self.item_bias[items] + dots

    def save(self, path: str | Path) -> None:
        """Write the arrays to one ``.npz`` file, atomically."""
        from recommender.core.io import staged_file

        with staged_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                user_vectors=self.user_vectors,
                item_vectors=self.item_vectors,
                user_bias=self.user_bias,
                item_bias=self.item_bias,
                global_mean=np.float64(self.global_mean),
            )

    @classmethod
    def load(cls, path: str | Path) -> Factors:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            return cls(
                user_vectors=z["user_vectors"],
                item_vectors=z["item_vectors"],
                user_bias=z["user_bias"],
                item_bias=z["item_bias"],
                global_mean=float(z["global_mean"]),
            )


def _clip_to_table(idx: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    return np.where((idx >= 0) & (idx <= n), idx, OOV)
