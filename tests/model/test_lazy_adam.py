"""Lazy Adam: the touched rows take Adam's step, the others stay put; ``auto`` picks it by size."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError

from recommender.core.config import RatingScale, TrainConfig
from recommender.models.lazy_adam import LazyAdam

pytestmark = pytest.mark.slow


def _step(
    optimizer: keras.optimizers.Optimizer,
    table: keras.Variable,
    rows: list[int],
    weights: np.ndarray | None = None,
) -> None:
    """One optimizer step on the loss ``sum(table[rows] * weights)`` (a sparse gradient)."""
    if weights is None:
        weights = np.arange(1, 4 * len(rows) + 1, dtype=np.float32).reshape(-1, 4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table.value, rows) * weights)
    (grad,) = tape.gradient(loss, [table.value])
    assert isinstance(grad, tf.IndexedSlices)
    optimizer.apply([grad], [table])


def _table() -> keras.Variable:
    return keras.Variable(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))


def test_first_step_equals_adam_and_untouched_rows_stay_put() -> None:
    lazy_table, dense_table = _table(), _table()
    start = lazy_table.numpy().copy()
    lazy, dense = LazyAdam(0.1), keras.optimizers.Adam(0.1)
    _step(lazy, lazy_table, [1, 2])
    _step(dense, dense_table, [1, 2])
    np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(lazy_table.numpy()[[1, 2]], start[[1, 2]])

    # Second step on other rows: Adam's momentum keeps moving rows 1 and 2; lazy Adam does not.
    after_first = lazy_table.numpy().copy()
    _step(lazy, lazy_table, [4])
    _step(dense, dense_table, [4])
    np.testing.assert_array_equal(lazy_table.numpy()[[0, 1, 2, 3, 5]], after_first[[0, 1, 2, 3, 5]])
    assert not np.allclose(dense_table.numpy()[[1, 2]], after_first[[1, 2]])
    assert not np.allclose(lazy_table.numpy()[4], start[4])


def test_a_row_used_twice_in_a_batch_takes_one_step_on_its_summed_gradient() -> None:
    twice, once = _table(), _table()
    w = np.array([[1.0, 2.0, 3.0, 4.0], [-3.0, 1.0, 0.5, 2.0]], np.float32)
    _step(LazyAdam(0.1), twice, [3, 3], w)
    _step(LazyAdam(0.1), once, [3], w.sum(axis=0, keepdims=True))
    np.testing.assert_allclose(twice.numpy(), once.numpy(), rtol=1e-6)


def test_dense_gradients_take_adams_step() -> None:
    lazy_var, dense_var = (
        keras.Variable(np.ones(3, np.float32)),
        keras.Variable(np.ones(3, np.float32)),
    )
    grad = tf.constant([0.5, -1.0, 2.0])
    lazy, dense = LazyAdam(0.01), keras.optimizers.Adam(0.01)
    for _ in range(3):
        lazy.apply([grad], [lazy_var])
        dense.apply([grad], [dense_var])
    np.testing.assert_array_equal(lazy_var.numpy(), dense_var.numpy())


def test_the_default_optimizer_is_row_sparse_and_builds_lazy_adam() -> None:
    from recommender.models import build_model, compile_model

    cfg = TrainConfig()
    assert cfg.optimizer == "lazy_adam"
    model = build_model("mf", 5, 5, RatingScale(), global_mean=3.0)
    assert isinstance(compile_model(model, 0.01, optimizer=cfg.optimizer).optimizer, LazyAdam)
    with pytest.raises(ValidationError, match="optimizer"):
        TrainConfig(optimizer="auto")


def test_saved_model_with_lazy_adam_loads_in_safe_mode(tmp_path) -> None:  # noqa: ANN001
    inputs = keras.Input((1,), dtype="int32")
    outputs = keras.layers.Embedding(10, 2)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=LazyAdam(0.01), loss="mse")
    model.fit(np.arange(8).reshape(-1, 1), np.zeros((8, 1, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.optimizer, LazyAdam)
