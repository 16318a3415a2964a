"""Every model family, trained once on the synthetic low-rank matrix of ``tests/conftest.py``.

Trains six small models (about a minute on 2 cores), hence ``slow``; the checks that need no
training live in ``tests/model/test_model_construction.py``. What holds for every family is one
test, parametrized over ``FAMILIES``: the loss falls, it beats the bias baseline, predictions are
on the scale, a safe-mode save/load round trip is exact, exported factors reproduce it.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops
from support import tiny_params

from recommender import models
from recommender.core.config import FAMILIES, RatingScale
from recommender.evaluation.baselines import BiasBaseline
from recommender.scoring import metrics

pytestmark = pytest.mark.slow

SCALE = RatingScale(min=1.0, max=5.0, step=1.0)
EPOCHS = 10
LEARNING_RATE = 1e-2  # higher than the default: the test data is small and time is short
#: AutoRec (alone and in the ensemble): a small code and light L2 suit 300 users x 200 items.
SMALL_AUTOREC = {"hidden_units": 32, "l2": 1e-4}
FACTOR_FAMILIES = [f for f in FAMILIES if f != "ncf"]


def data_args(name, data) -> dict:
    """The data-derived constructor arguments a family needs (features, train ratings)."""
    cls = models.FAMILY_CLASSES[name]
    args: dict = {}
    if cls.needs_features:
        args |= {
            "item_features": data.item_features,
            "user_features": data.user_features,
            "user_cardinalities": data.user_cardinalities,
        }
    if cls.needs_ratings:
        args["train_ratings"] = (data.train.user, data.train.item, data.train.rating)
    if name == "autorec":
        args |= SMALL_AUTOREC
    if name == "ensemble":
        args["autorec"] = SMALL_AUTOREC
    return args


def train(name, data, epochs=EPOCHS, seed=0, **hyper):
    keras.utils.set_random_seed(seed)
    args = {**data_args(name, data), **hyper}
    model = models.build_model(name, data.n_users, data.n_items, SCALE, data.global_mean, **args)
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
    return {name: train(name, synthetic) for name in FAMILIES}


@pytest.fixture(scope="module")
def baseline(synthetic):
    t = synthetic.train
    n_users, n_items = synthetic.n_users, synthetic.n_items
    return BiasBaseline(scale=SCALE).fit(t.user, t.item, t.rating, n_users, n_items)


@pytest.mark.parametrize("name", FAMILIES)
def test_training_loss_decreases(trained, name):
    losses = trained[name][1]
    assert len(losses) == EPOCHS
    # A softmax over 200 items starts near log(200) and its floor is far from 0: it cannot halve.
    factor = 0.9 if models.FAMILY_CLASSES[name].ranking_trained else 0.5
    assert losses[-1] < factor * losses[0], losses


@pytest.mark.parametrize("name", FAMILIES)
def test_beats_bias_baseline_on_held_out_ratings(trained, baseline, synthetic, name):
    test = synthetic.test
    pred = models.predict_ratings(trained[name][0], test.user, test.item)
    model_rmse = metrics.rmse(test.rating, pred)
    base_rmse = metrics.rmse(test.rating, baseline.predict(test.user, test.item))
    # The bias baseline cannot model the rank-4 taste term, so any working model beats it clearly.
    assert model_rmse < 0.95 * base_rmse, (model_rmse, base_rmse)


@pytest.mark.parametrize("name", FAMILIES)
def test_predictions_are_clipped_and_unknown_ids_get_finite_scores(trained, synthetic, name):
    model = trained[name][0]
    rng = np.random.default_rng(1)
    users = np.concatenate([rng.integers(0, synthetic.n_users + 1, 2000), [0, 0, 3]])
    items = np.concatenate([rng.integers(0, synthetic.n_items + 1, 2000), [0, 4, 0]])
    pred = models.predict_ratings(model, users, items)
    direct = ops.convert_to_numpy(model(models.model_inputs(users, items)))
    for p in (pred, direct):
        assert p.min() >= SCALE.min and p.max() <= SCALE.max
    assert np.allclose(pred, direct, atol=1e-5)
    raw = ops.convert_to_numpy(model.score(models.model_inputs(users, items)))
    assert np.isfinite(raw).all()
    assert np.allclose(pred, np.clip(raw, SCALE.min, SCALE.max), atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
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
    # Same weights, same eager ops: equal up to float32 reduction order. (Two separately traced
    # `predict` graphs may fuse a reduction differently and differ in the last bit.)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        models.predict_ratings(loaded, users, items),
        models.predict_ratings(model, users, items),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", FACTOR_FAMILIES)
def test_exported_factors_reproduce_the_model(trained, synthetic, name):
    model = trained[name][0]
    factors = model.factors()
    users = np.concatenate([synthetic.test.user, [0, 3, 0]])
    items = np.concatenate([synthetic.test.item, [4, 0, 0]])
    if name == "mf":  # no fallback for unknown ids: compare known ones only
        users, items = users[:-3], items[:-3]
    raw = ops.convert_to_numpy(model.score(models.model_inputs(users, items)))
    assert np.allclose(factors.predict(users, items), raw, atol=1e-4)
    # similar_items compares items in the space ranking uses: the towers' for two_tower.
    space = model.retrieval_factors() or factors
    np.testing.assert_array_equal(model.item_vectors(), space.item_vectors)


def test_ncf_has_no_factors_and_compares_items_by_its_gmf_vectors(trained):
    model = trained["ncf"][0]
    assert model.factors() is None
    vectors = model.item_vectors()
    assert vectors.shape == (model.n_items + 1, model.embedding_dim)
    np.testing.assert_array_equal(vectors, ops.convert_to_numpy(model.gmf_item.embeddings))


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
    models.compile_model(model, LEARNING_RATE)
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


def test_autorec_prediction_matches_hand_computation(trained, synthetic):
    model = trained["autorec"][0]
    t = synthetic.train
    R = np.zeros((synthetic.n_items + 1, synthetic.n_users + 1), np.float32)
    R[t.item, t.user] = t.rating
    V = ops.convert_to_numpy(model.encoder_kernel)
    b = ops.convert_to_numpy(model.encoder_bias)
    W = ops.convert_to_numpy(model.decoder.embeddings)
    c = ops.convert_to_numpy(model.decoder_bias.embeddings)[:, 0]
    codes = 1.0 / (1.0 + np.exp(-(R @ V + b)))
    u, i = 7, 11
    by_hand = c[u] + W[u] @ codes[i]
    got = float(ops.convert_to_numpy(model.score(models.model_inputs([u], [i])))[0])
    assert got == pytest.approx(by_hand, abs=1e-4)
    # An unknown item is the mean known item's code; an unknown user the mean known user.
    oov_item = c[u] + W[u] @ codes[1:].mean(axis=0)
    oov_user = c[1:].mean() + W[1:].mean(axis=0) @ codes[i]
    scores = ops.convert_to_numpy(model.score(models.model_inputs([u, 0], [0, i])))
    assert scores == pytest.approx([oov_item, oov_user], abs=1e-4)


def test_ensemble_is_the_blend_of_its_members(trained, synthetic):
    model = trained["ensemble"][0]
    x = models.model_inputs(synthetic.test.user[:100], synthetic.test.item[:100])
    h = ops.convert_to_numpy(model.hybrid.score(x))
    a = ops.convert_to_numpy(model.autorec.score(x))
    both = ops.convert_to_numpy(model.score(x))
    assert np.allclose(both, model.blend * h + (1 - model.blend) * a, atol=1e-5)
    assert np.abs(h - a).mean() > 0.01  # two different models, not one counted twice


@pytest.mark.parametrize("name", ["autorec", "ensemble"])
def test_fit_and_bundle_round_trip(processed, processed_dir, tmp_path, name):
    """training.fit -> ModelBundle -> save/load -> the factor and the graph scoring paths agree."""
    from recommender.scoring.bundle import ModelBundle
    from recommender.training.fit import fit

    params = tiny_params(train={"model": name, "epochs": 3})
    result = fit(processed, params.train, params.seed)
    assert result.epochs_run == 3 and len(result.history["val_rmse"]) == 3
    bundle = ModelBundle.from_training(result.model, processed, {"model": name})
    bundle.save(tmp_path / "bundle", processed_dir)
    loaded = ModelBundle.load(tmp_path / "bundle")
    assert loaded.factors is not None  # served with NumPy, no TensorFlow graph needed
    test = processed.test
    u, i = test["user_idx"].to_numpy(), test["item_idx"].to_numpy()
    direct = models.predict_ratings(result.model, u, i)
    np.testing.assert_allclose(loaded.predict(u, i), direct, atol=1e-5)
    # The tf.function path (used by families without factors) gives the same scores.
    loaded.factors = None
    np.testing.assert_allclose(loaded.predict(u, i), direct, atol=1e-5)
    top = loaded.recommend(np.array([1, 0]), k=5)
    assert top.items.shape == (2, 5) and (top.items > 0).all()
