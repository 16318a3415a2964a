"""The item AutoRec and the hybrid + AutoRec ensemble (``train.model: autorec | ensemble``).

Trained once each (module fixture) on the synthetic low-rank matrix from conftest, as the other
families are in test_models.py; then checked against the bias baseline, a hand computation, a
safe-mode save/load round trip, their exported factors, and the train -> bundle path.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from recommender import metrics, models
from recommender.baselines import BiasBaseline
from recommender.config import RatingScale, TrainConfig, parse_params
from recommender.errors import ConfigError

SCALE = RatingScale(min=1.0, max=5.0, step=1.0)
EPOCHS = 10
LEARNING_RATE = 1e-2
NEW = ("autorec", "ensemble")


def _data_args(name, data) -> dict:
    t = data.train
    args = {"train_ratings": (t.user, t.item, t.rating)}
    if name == "ensemble":
        args |= {
            "item_features": data.item_features,
            "user_features": data.user_features,
            "user_cardinalities": data.user_cardinalities,
        }
    return args


def _build(name, data, seed=0, **hyper):
    keras.utils.set_random_seed(seed)
    return models.build_model(
        name,
        data.n_users,
        data.n_items,
        SCALE,
        data.global_mean,
        **{**_data_args(name, data), **hyper},
    )


def _train(name, data, epochs=EPOCHS, seed=0, **hyper):
    model = models.compile_model(_build(name, data, seed, **hyper), LEARNING_RATE)
    t = data.train
    history = model.fit(
        models.make_dataset(t.user, t.item, t.rating, batch_size=1024, seed=seed),
        epochs=epochs,
        shuffle=False,
        verbose=0,
    )
    return model, history.history["loss"]


@pytest.fixture(scope="module")
def trained(synthetic):
    # AutoRec: a small code and light L2 suit 300 users x 200 items in 10 epochs.
    autorec = {"hidden_units": 32, "l2": 1e-4}
    return {
        "autorec": _train("autorec", synthetic, **autorec),
        "ensemble": _train("ensemble", synthetic, autorec=autorec),
    }


@pytest.fixture(scope="module")
def baseline(synthetic):
    t = synthetic.train
    return BiasBaseline(scale=SCALE).fit(
        t.user, t.item, t.rating, synthetic.n_users, synthetic.n_items
    )


def test_new_families_are_registered_everywhere():
    for name in NEW:
        assert name in models.FAMILY_NAMES and name in models.NEEDS_RATINGS
        assert name in models.DEFAULT_HYPER
    params = parse_params({"train": {"model": "ensemble", "autorec": {"hidden_units": 64}}})
    hyper = params.train.hyper()
    # The ensemble's members take the knobs of their own sections, then its overrides.
    assert hyper["autorec"]["hidden_units"] == 64
    expected = params.train.hybrid.model_dump(exclude={"learning_rate"})
    assert hyper["hybrid"] == expected | params.train.ensemble.hybrid
    assert hyper["blend"] == params.train.ensemble.blend


@pytest.mark.parametrize("name", NEW)
def test_training_loss_decreases(trained, name):
    losses = trained[name][1]
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", NEW)
def test_beats_bias_baseline_on_held_out_ratings(trained, baseline, synthetic, name):
    test = synthetic.test
    model_rmse = metrics.rmse(
        test.rating, models.predict_ratings(trained[name][0], test.user, test.item)
    )
    base_rmse = metrics.rmse(test.rating, baseline.predict(test.user, test.item))
    assert model_rmse < 0.95 * base_rmse, (model_rmse, base_rmse)


@pytest.mark.parametrize("name", NEW)
def test_predictions_are_clipped_and_unknown_ids_get_finite_scores(trained, synthetic, name):
    model = trained[name][0]
    rng = np.random.default_rng(1)
    users = np.concatenate([rng.integers(0, synthetic.n_users + 1, 500), [0, 0, 3]])
    items = np.concatenate([rng.integers(0, synthetic.n_items + 1, 500), [0, 4, 0]])
    pred = models.predict_ratings(model, users, items)
    assert pred.min() >= SCALE.min and pred.max() <= SCALE.max
    raw = ops.convert_to_numpy(model.score(models.model_inputs(users, items)))
    assert np.isfinite(raw).all()
    assert np.allclose(pred, np.clip(raw, SCALE.min, SCALE.max), atol=1e-5)


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


@pytest.mark.parametrize("name", NEW)
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
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("name", NEW)
def test_exported_factors_reproduce_the_model(trained, synthetic, name):
    model = trained[name][0]
    factors = models.export_factors(model)
    assert factors is not None
    users = np.concatenate([synthetic.test.user, [0, 3, 0]])
    items = np.concatenate([synthetic.test.item, [4, 0, 0]])
    raw = ops.convert_to_numpy(model.score(models.model_inputs(users, items)))
    assert np.allclose(factors.predict(users, items), raw, atol=1e-4)
    grid = models.score_all_items(model, np.array([1, 2]))
    assert grid.shape == (2, synthetic.n_items + 1)


def test_build_model_rejects_bad_configuration(synthetic):
    t = synthetic.train
    ratings = (t.user, t.item, t.rating)
    with pytest.raises(ConfigError, match="whole tables"):
        models.build_model("autorec", 10, 10, SCALE, 3.0, train_ratings=ratings, reg_form="none")
    with pytest.raises(ConfigError, match="user indices must be in 1..10"):
        models.build_model("autorec", 10, 500, SCALE, 3.0, train_ratings=ratings)
    with pytest.raises(ConfigError, match="one length"):
        models.build_model("autorec", 10, 10, SCALE, 3.0, train_ratings=([1, 2], [1], [3.0]))
    with pytest.raises(ConfigError, match="needs train_ratings"):
        models.build_model("autorec", 10, 10, SCALE, 3.0)
    with pytest.raises(ConfigError, match="cells"):
        models.build_model("autorec", 100_000, 1_000, SCALE, 3.0, train_ratings=([1], [1], [3.0]))
    with pytest.raises(ConfigError, match="member 'autorec' has no hyperparameter hiden_units"):
        models.build_model(
            "ensemble",
            synthetic.n_users,
            synthetic.n_items,
            SCALE,
            3.0,
            **_data_args("ensemble", synthetic),
            autorec={"hiden_units": 8},
        )
    with pytest.raises(ConfigError, match="blend must be in"):
        _build("ensemble", synthetic, blend=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_fit_and_bundle_round_trip(tmp_path, name):
    """training.fit -> ModelBundle -> save/load -> the factor and the graph scoring paths agree."""
    from recommender.bundle import ModelBundle
    from recommender.data.synthetic import generate
    from recommender.preprocess import preprocess, write_processed
    from recommender.training import fit

    params = parse_params(
        {
            "synthetic": {"n_users": 150, "n_items": 200, "n_ratings": 6000},
            "train": {"model": name, "epochs": 3, "batch_size": 256, "learning_rate": 0.01},
        }
    )
    processed = preprocess(generate(params.synthetic, params.seed), params.preprocess, params.seed)
    result = fit(processed, params.train, params.seed)
    assert result.epochs_run == 3 and len(result.history["val_rmse"]) == 3
    write_processed(processed, tmp_path / "processed")
    bundle = ModelBundle.from_training(result.model, processed, {"model": name})
    bundle.save(tmp_path / "bundle", tmp_path / "processed")
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
    assert TrainConfig.model_validate(params.train.model_dump()).model == name


def test_params_yaml_config_defaults_and_model_defaults_agree():
    from pathlib import Path

    from recommender.config import load_params

    root = Path(__file__).resolve().parents[2]
    in_file = load_params(root / "params.yaml").train
    assert in_file == TrainConfig()  # params.yaml's train section is the code's defaults

    def plain(value):  # noqa: ANN001, ANN202  (tuples in the model defaults, lists in config)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if isinstance(value, tuple) else value

    for family in models.FAMILY_NAMES:
        # The config's view of a family: its section (the ensemble's with its members merged).
        section = in_file.model_copy(update={"model": family}).hyper()
        for name, value in models.DEFAULT_HYPER[family].items():
            assert plain(section[name]) == plain(value), (family, name)


def test_ensemble_member_overrides_apply_over_the_family_sections_and_are_checked():
    from recommender.config import parse_params
    from recommender.errors import ConfigError

    params = parse_params(
        {
            "train": {
                "model": "ensemble",
                "hybrid": {"embedding_dim": 48, "l2": 0.2},
                "ensemble": {"hybrid": {"l2": 0.03}, "autorec": {"hidden_units": 64}},
            }
        }
    )
    hyper = params.train.hyper()
    # The override wins; what it does not name comes from the family's own section.
    assert hyper["hybrid"]["l2"] == 0.03 and hyper["hybrid"]["embedding_dim"] == 48
    assert hyper["autorec"]["hidden_units"] == 64
    assert params.train.hybrid.l2 == 0.2  # the hybrid trained alone keeps its own
    with pytest.raises(ConfigError, match=r"ensemble.hybrid overrides train.hybrid: l3"):
        parse_params({"train": {"ensemble": {"hybrid": {"l3": 1.0}}}})
    with pytest.raises(ConfigError, match=r"ensemble.autorec .*dropout"):
        parse_params({"train": {"ensemble": {"autorec": {"dropout": 2.0}}}})
