"""The Keras model families: training, baseline comparison, determinism, save/load, cold start.

Each family is trained once (module fixture) on the synthetic low-rank matrix from conftest; the
tests then inspect those models. The whole file takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from recommender import metrics, models
from recommender.baselines import BiasBaseline
from recommender.config import RatingScale
from recommender.errors import ConfigError

SCALE = RatingScale(min=1.0, max=5.0, step=1.0)
EPOCHS = 10
LEARNING_RATE = 1e-2  # higher than the default: the test data is small and time is short


def _hyper(name, data) -> dict:
    if name != "hybrid":
        return {}
    return {
        "item_features": data.item_features,
        "user_features": data.user_features,
        "user_cardinalities": data.user_cardinalities,
    }


def _train(name, data, epochs=EPOCHS, seed=0, **hyper):
    keras.utils.set_random_seed(seed)
    model = models.build_model(
        name, data.n_users, data.n_items, SCALE, data.global_mean, **{**_hyper(name, data), **hyper}
    )
    models.compile_model(model, LEARNING_RATE)
    t = data.train
    history = model.fit(
        models.make_dataset(t.user, t.item, t.rating, batch_size=1024, seed=seed),
        epochs=epochs,
        shuffle=False,  # the dataset shuffles itself, with its own seed
        verbose=0,
    )
    return model, history.history["loss"]


@pytest.fixture(scope="module")
def trained(synthetic):
    """Each family trained once: {name: (model, per-epoch training losses)}."""
    return {name: _train(name, synthetic) for name in models.MODEL_NAMES}


@pytest.fixture(scope="module")
def baseline(synthetic):
    t = synthetic.train
    n_users, n_items = synthetic.n_users, synthetic.n_items
    return BiasBaseline(scale=SCALE).fit(t.user, t.item, t.rating, n_users, n_items)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_training_loss_decreases(trained, name):
    losses = trained[name][1]
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_beats_bias_baseline_on_held_out_ratings(trained, baseline, synthetic, name):
    test = synthetic.test
    pred = models.predict_ratings(trained[name][0], test.user, test.item)
    model_rmse = metrics.rmse(test.rating, pred)
    base_rmse = metrics.rmse(test.rating, baseline.predict(test.user, test.item))
    # The bias baseline cannot model the rank-4 taste term, so any working model beats it clearly.
    assert model_rmse < 0.95 * base_rmse, (model_rmse, base_rmse)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_predictions_are_clipped_to_the_scale_at_inference(trained, synthetic, name):
    model = trained[name][0]
    rng = np.random.default_rng(1)
    users = rng.integers(0, synthetic.n_users + 1, 2000)  # index 0 (unknown) included
    items = rng.integers(0, synthetic.n_items + 1, 2000)
    pred = models.predict_ratings(model, users, items)
    direct = ops.convert_to_numpy(model(models.model_inputs(users, items)))
    for p in (pred, direct):
        assert p.min() >= SCALE.min and p.max() <= SCALE.max
    assert np.allclose(pred, direct, atol=1e-5)


def test_training_output_is_not_clipped_so_gradients_flow(synthetic):
    # A global mean far above the scale: inference clips to 5, training must see the raw 10.
    model = models.build_model("biased_mf", synthetic.n_users, synthetic.n_items, SCALE, 10.0)
    x = models.model_inputs([1, 2], [3, 4])
    assert np.allclose(ops.convert_to_numpy(model(x, training=True)), 10.0, atol=0.5)
    assert np.allclose(ops.convert_to_numpy(model(x)), 5.0)


def test_same_seed_and_data_give_identical_predictions(synthetic):
    t = synthetic.test
    first, _ = _train("biased_mf", synthetic, epochs=1, seed=3)
    second, _ = _train("biased_mf", synthetic, epochs=1, seed=3)
    p1 = models.predict_ratings(first, t.user, t.item)
    assert p1.std() > 0.1  # a model that learned something, not a constant
    assert np.array_equal(p1, models.predict_ratings(second, t.user, t.item))


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_save_and_safe_load_round_trip(trained, synthetic, tmp_path, name):
    model = trained[name][0]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    for w, w_loaded in zip(model.weights, loaded.weights, strict=True):
        assert np.array_equal(ops.convert_to_numpy(w), ops.convert_to_numpy(w_loaded)), w.path
    users = np.concatenate([synthetic.test.user, [0, 0]])
    items = np.concatenate([synthetic.test.item, [0, 5]])
    x = models.model_inputs(users, items)
    # Same weights, same eager ops: bit-identical. (Two separately traced `predict` graphs may
    # fuse a reduction differently and differ in the last bit, hence the tolerance below.)
    assert np.array_equal(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(loaded(x)))
    np.testing.assert_allclose(
        models.predict_ratings(loaded, users, items),
        models.predict_ratings(model, users, items),
        rtol=0,
        atol=1e-5,
    )


def test_biased_mf_prediction_matches_hand_computation(trained):
    model = trained["biased_mf"][0]
    P = ops.convert_to_numpy(model.user_embedding.embeddings)
    Q = ops.convert_to_numpy(model.item_embedding.embeddings)
    bu = ops.convert_to_numpy(model.user_bias.embeddings)[:, 0]
    bi = ops.convert_to_numpy(model.item_bias.embeddings)[:, 0]
    u, i = 7, 11
    by_hand = model.global_mean + bu[u] + bi[i] + float(P[u] @ Q[i])
    assert 1.0 < by_hand < 5.0  # inside the scale, so clipping does not hide a mismatch
    assert models.predict_ratings(model, [u], [i])[0] == pytest.approx(by_hand, abs=1e-5)
    # An unknown item (row 0) is the average known item: mean bias, mean vector.
    oov = model.global_mean + bu[u] + bi[1:].mean() + float(P[u] @ Q[1:].mean(axis=0))
    assert float(ops.convert_to_numpy(model.score(models.model_inputs([u], [0])))[0]) == (
        pytest.approx(oov, abs=1e-5)
    )


@pytest.mark.parametrize("name", ["mf", "biased_mf", "hybrid"])
def test_exported_factors_reproduce_the_model(trained, synthetic, name):
    model = trained[name][0]
    factors = models.export_factors(model)
    users = np.concatenate([synthetic.test.user, [0, 3]])
    items = np.concatenate([synthetic.test.item, [4, 0]])
    raw = ops.convert_to_numpy(model.score(models.model_inputs(users, items)))
    assert np.allclose(factors.predict(users, items), raw, atol=1e-4)


def test_ncf_has_no_factors_and_is_scored_on_the_grid(trained, synthetic):
    model = trained["ncf"][0]
    assert models.export_factors(model) is None
    users = np.array([1, 5, 9])
    grid = models.score_all_items(model, users, pairs_per_batch=250)  # forces several batches
    assert grid.shape == (3, synthetic.n_items + 1)
    direct = ops.convert_to_numpy(model.score(models.model_inputs([5, 5], [0, 17])))
    assert np.allclose(grid[1, [0, 17]], direct, atol=1e-5)


def test_hybrid_predicts_cold_items_from_their_features(trained, baseline, synthetic):
    model = trained["hybrid"][0]
    cold = synthetic.cold
    oov = np.zeros_like(cold.item)  # a brand-new item is not in the vocabulary: index 0
    with_features = models.model_inputs(cold.user, oov)
    with_features["item_features"] = synthetic.item_features[cold.item]
    pred_features = ops.convert_to_numpy(model.predict(with_features, verbose=0))
    pred_plain = models.predict_ratings(model, cold.user, oov)
    assert np.abs(pred_features - pred_plain).mean() > 0.1
    rmse_features = metrics.rmse(cold.rating, pred_features)
    rmse_baseline = metrics.rmse(cold.rating, baseline.predict(cold.user, oov))
    assert rmse_features < 0.9 * rmse_baseline, (rmse_features, rmse_baseline)


def test_hybrid_feature_override_equals_the_stored_table(trained, synthetic):
    model = trained["hybrid"][0]
    t = synthetic.test
    x = models.model_inputs(t.user[:50], t.item[:50])
    stored = ops.convert_to_numpy(model(x))
    x["item_features"] = synthetic.item_features[t.item[:50]]
    x["user_features"] = synthetic.user_features[t.user[:50]]
    assert np.allclose(ops.convert_to_numpy(model(x)), stored, atol=1e-5)


def test_hybrid_without_user_features_builds_trains_and_reloads(synthetic, tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build_model(
        "hybrid",
        synthetic.n_users,
        synthetic.n_items,
        SCALE,
        synthetic.global_mean,
        item_features=synthetic.item_features,
    )
    models.compile_model(model)
    t = synthetic.train
    n = 2048  # one pass over a few batches is enough to exercise the training path
    ds = models.make_dataset(t.user[:n], t.item[:n], t.rating[:n])
    model.fit(ds, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "h.keras")
    loaded = keras.saving.load_model(tmp_path / "h.keras", safe_mode=True)
    users, items = synthetic.test.user[:20], synthetic.test.item[:20]
    assert np.array_equal(
        models.predict_ratings(model, users, items), models.predict_ratings(loaded, users, items)
    )


@pytest.mark.parametrize(
    ("form", "bias_l2", "n_losses"),
    [("per_example", None, 2), ("per_example", 0.5, 2), ("table", 0.5, 4), ("none", 0.5, 0)],
)
def test_regularization_form_is_a_constructor_choice(synthetic, form, bias_l2, n_losses):
    model = models.build_model(
        "biased_mf",
        synthetic.n_users,
        synthetic.n_items,
        SCALE,
        3.5,
        reg_form=form,
        l2=0.1,
        bias_l2=bias_l2,
    )
    bu = np.linspace(-1, 1, synthetic.n_users + 1, dtype=np.float32)[:, None]
    bi = np.linspace(1, -1, synthetic.n_items + 1, dtype=np.float32)[:, None]
    model.user_bias.embeddings.assign(bu)
    model.item_bias.embeddings.assign(bi)
    model(models.model_inputs([1, 2], [3, 4]), training=True)
    # per_example: one term for the batch's vectors, one for its biases; table: one per table
    # (vectors and biases, for users and items); none: nothing.
    assert len(model.losses) == n_losses
    P = ops.convert_to_numpy(model.user_embedding.embeddings)
    Q = ops.convert_to_numpy(model.item_embedding.embeddings)
    vectors = ((P[[1, 2]] ** 2).sum() + (Q[[3, 4]] ** 2).sum()) / 2  # mean over the 2 examples
    biases = ((bu[[1, 2]] ** 2).sum() + (bi[[3, 4]] ** 2).sum()) / 2
    losses = [float(x) for x in model.losses]
    if form == "per_example" and bias_l2 is None:  # the biases take the model's l2
        assert losses == pytest.approx([0.1 * vectors, 0.1 * biases], rel=1e-5)
    elif form == "per_example":
        assert losses == pytest.approx([0.1 * vectors, 0.5 * biases], rel=1e-5)
    elif form == "table":  # whole tables: the bias tables take bias_l2
        assert sorted(losses)[-2:] == pytest.approx(
            sorted([0.5 * float((bu**2).sum()), 0.5 * float((bi**2).sum())]), rel=1e-5
        )


def test_build_model_rejects_bad_configuration(synthetic):
    with pytest.raises(ConfigError, match="unknown model 'svd'"):
        models.build_model("svd", 10, 10, SCALE, 3.0)
    with pytest.raises(ConfigError, match="embeding_dim"):
        models.build_model("biased_mf", 10, 10, SCALE, 3.0, embeding_dim=8)
    with pytest.raises(ConfigError, match="n_items \\+ 1 = 11 rows"):
        models.build_model("hybrid", 10, 10, SCALE, 3.0, item_features=np.zeros((10, 4)))
    with pytest.raises(ConfigError, match="reg_form"):
        models.build_model("mf", 10, 10, SCALE, 3.0, reg_form="sometimes")


def _epochs(ds, n_epochs: int) -> list[np.ndarray]:
    """Each epoch's ratings in the order the dataset yields them (one array per epoch)."""
    return [np.concatenate([ops.convert_to_numpy(y) for _, y in ds]) for _ in range(n_epochs)]


def test_dataset_yields_every_row_once_per_epoch_reshuffled_and_seeded():
    n, batch = 1000, 96  # a partial last batch: 10 full batches of 96 and one of 40
    rating = np.arange(n, dtype=np.float32)  # each row identified by its "rating"
    user, item = np.arange(n) % 7 + 1, np.arange(n) % 11 + 1
    ds = models.make_dataset(user, item, rating, batch_size=batch, seed=3)
    assert int(ds.cardinality()) == -(-n // batch)
    first, second = _epochs(ds, 2)
    np.testing.assert_array_equal(np.sort(first), rating)  # every row exactly once
    np.testing.assert_array_equal(np.sort(second), rating)
    assert not np.array_equal(first, second)  # a new order every epoch
    # Users and items travel with their ratings.
    x, y = next(iter(ds))
    rows = ops.convert_to_numpy(y).astype(int)
    np.testing.assert_array_equal(ops.convert_to_numpy(x["user"]), user[rows])
    np.testing.assert_array_equal(ops.convert_to_numpy(x["item"]), item[rows])
    # The same seed replays the same epochs; another seed does not.
    again = models.make_dataset(user, item, rating, batch_size=batch, seed=3)
    replayed = np.concatenate(_epochs(again, 2))
    np.testing.assert_array_equal(replayed, np.concatenate([first, second]))
    other = models.make_dataset(user, item, rating, batch_size=batch, seed=4)
    assert not np.array_equal(_epochs(other, 1)[0], first)
    # Without shuffling, the rows come in order.
    plain = models.make_dataset(user, item, rating, batch_size=batch, shuffle=False)
    np.testing.assert_array_equal(_epochs(plain, 1)[0], rating)
