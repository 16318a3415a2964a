"""The input side every family shares: index dicts and the shuffled ``tf.data`` pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np

from recommender.models.base import RatingModel


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
