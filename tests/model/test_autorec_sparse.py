"""AutoRec reads sparse rows: it equals the dense computation it replaced, and it trains on data
whose dense item x user matrix would not fit (the old 50M-cell cap refused it).

Marked slow with the rest of ``tests/model`` (Keras and TensorFlow imports); each test takes
seconds.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from recommender import models
from recommender.core.config import RatingScale

pytestmark = pytest.mark.slow

SCALE = RatingScale(min=1.0, max=5.0, step=1.0)


def _tiny(seed: int = 0, n_users: int = 9, n_items: int = 7, n: int = 30):
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_users * n_items, n, replace=False)
    users, items = cells // n_items + 1, cells % n_items + 1
    ratings = rng.integers(1, 6, n).astype(np.float32)
    return n_users, n_items, users, items, ratings


def _build(n_users, n_items, users, items, ratings, **hyper):
    return models.build_model(
        "autorec",
        n_users,
        n_items,
        SCALE,
        float(ratings.mean()),
        train_ratings=(users, items, ratings),
        **hyper,
    )


def _autorec(n_users, n_items, users, items, ratings, **hyper):
    hyper = {"hidden_units": 5, "l2": 0.0, "dropout": 0.0, **hyper}
    model = _build(n_users, n_items, users, items, ratings, **hyper)
    rng = np.random.default_rng(1)  # weights that are not at their (trivial) start
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
    return model


def _dense_reference(model, n_users, n_items, users, items, ratings):
    """The computation the model did before: the dense item x user rating matrix times V."""
    matrix = np.zeros((n_items + 1, n_users + 1), np.float32)
    matrix[items, users] = ratings
    v = ops.convert_to_numpy(model.encoder_kernel)
    b = ops.convert_to_numpy(model.encoder_bias)
    codes = 1.0 / (1.0 + np.exp(-(matrix @ v + b)))
    return matrix, codes


def test_sparse_rows_equal_the_dense_computation():
    n_users, n_items, users, items, ratings = data = _tiny()
    model = _autorec(*data)
    matrix, codes = _dense_reference(model, *data)
    # Every item's code (the exported factors), row 0 = the mean known item's code.
    exported = model.item_codes()
    np.testing.assert_allclose(exported[1:], codes[1:], atol=1e-5)
    np.testing.assert_allclose(exported[0], codes[1:].mean(axis=0), atol=1e-5)
    # Predictions, in training mode (the batch's items only) and at inference (with unknown
    # users and items, and items repeated in the batch).
    w = ops.convert_to_numpy(model.decoder.embeddings)
    c = ops.convert_to_numpy(model.decoder_bias.embeddings)[:, 0]
    u = np.array([1, 2, 3, 9, 4, 4, 5, 1])
    i = np.array([1, 1, 7, 2, 3, 3, 6, 5])
    by_hand = c[u] + np.sum(w[u] * codes[i], axis=1)
    x = models.model_inputs(u, i)
    np.testing.assert_allclose(ops.convert_to_numpy(model.score(x, training=True)), by_hand,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(ops.convert_to_numpy(model.score(x)), by_hand, atol=1e-5)
    u0, i0 = np.array([0, 3, 0]), np.array([2, 0, 0])
    w_mean, c_mean = w[1:].mean(axis=0), c[1:].mean()
    oov = np.array(
        [
            c_mean + w_mean @ codes[2],  # unknown user
            c[3] + w[3] @ codes[1:].mean(axis=0),  # unknown item
            c_mean + w_mean @ codes[1:].mean(axis=0),  # both
        ]
    )
    got = ops.convert_to_numpy(model.score(models.model_inputs(u0, i0)))
    np.testing.assert_allclose(got, oov, atol=1e-5)
    # The same model traced into a graph (what fit and predict run) gives the same scores.
    np.testing.assert_allclose(
        models.predict_ratings(model, np.r_[u, u0], np.r_[i, i0]),
        np.clip(np.r_[by_hand, oov], 1.0, 5.0),
        atol=1e-5,
    )


def test_sparse_rows_give_the_dense_gradient():
    import tensorflow as tf

    n_users, n_items, users, items, ratings = data = _tiny(seed=2)
    model = _autorec(*data)
    matrix, _ = _dense_reference(model, *data)
    u, i = np.array([1, 5, 5, 8, 2]), np.array([3, 3, 4, 1, 7])
    target = np.array([4.0, 2.0, 5.0, 1.0, 3.0], np.float32)
    x = models.model_inputs(u, i)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model.score(x, training=True) - target) ** 2)
    sparse = tape.gradient(loss, [model.encoder_kernel, model.encoder_bias])
    with tf.GradientTape() as tape:  # the old step: dense rows of the batch's items
        rows = tf.gather(tf.constant(matrix), i)
        h = tf.sigmoid(rows @ model.encoder_kernel + model.encoder_bias)
        w, c = tf.gather(model.decoder.embeddings, u), tf.gather(model.decoder_bias.embeddings, u)
        loss = tf.reduce_mean((c[:, 0] + tf.reduce_sum(w * h, axis=1) - target) ** 2)
    dense = tape.gradient(loss, [model.encoder_kernel, model.encoder_bias])
    for got, want in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want),
                                   atol=1e-5)  # fmt: skip


def test_input_dropout_drops_observed_ratings_only():
    n_users, n_items, users, items, ratings = data = _tiny(seed=3)
    model = _autorec(*data, dropout=0.5)
    _, codes = _dense_reference(model, *data)
    keras.utils.set_random_seed(0)
    x = models.model_inputs(np.arange(1, 8), np.arange(1, 8))
    noisy = [ops.convert_to_numpy(model.score(x, training=True)) for _ in range(3)]
    assert not np.allclose(noisy[0], noisy[1])  # dropout is on while training
    clean = ops.convert_to_numpy(model.score(x))  # and off at inference
    w = ops.convert_to_numpy(model.decoder.embeddings)[1:8]
    c = ops.convert_to_numpy(model.decoder_bias.embeddings)[1:8, 0]
    np.testing.assert_allclose(clean, c + np.sum(w * codes[1:8], axis=1), atol=1e-5)


def test_autorec_trains_where_the_dense_matrix_would_not_fit():
    """20,000 users x 15,000 items (300M cells, 1.2 GB dense per copy; the old cap was 50M
    cells) with 60,000 ratings: two epochs, finite predictions and exported factors."""
    rng = np.random.default_rng(0)
    n_users, n_items, n = 20_000, 15_000, 60_000
    users = rng.integers(1, n_users + 1, 2 * n)
    items = 1 + (n_items * rng.random(2 * n) ** 2).astype(int)  # a long tail of rare items
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))[:n]]
    users, items = pairs[:, 0], pairs[:, 1]
    assert users.size == n and (n_items + 1) * (n_users + 1) > 50_000_000
    ratings = rng.integers(1, 6, users.size).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = _build(n_users, n_items, users, items, ratings, hidden_units=32)
    models.compile_model(model, 3e-3)
    history = model.fit(
        models.make_dataset(users, items, ratings, batch_size=4096, seed=0),
        epochs=2,
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
    ).history
    assert np.isfinite(history["loss"]).all() and history["loss"][1] < history["loss"][0]
    probe_users = np.r_[users[:50], 0, n_users]
    probe_items = np.r_[items[:50], n_items, 0]
    predicted = models.predict_ratings(model, probe_users, probe_items)
    assert np.isfinite(predicted).all() and (predicted >= 1).all() and (predicted <= 5).all()
    factors = model.factors()
    assert factors.item_vectors.shape == (n_items + 1, 32)
    assert np.isfinite(factors.item_vectors).all()
    np.testing.assert_allclose(
        np.clip(factors.predict(probe_users, probe_items), 1, 5), predicted, atol=1e-4
    )
