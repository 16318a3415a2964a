"""Model checks that need no training: construction, the penalty's forms, bad configuration,
one source of defaults, and the ``tf.data`` input pipeline. The trained families are tested in
``tests/model/test_families.py``.

Marked slow with the rest of ``tests/model``: each test is quick, but the module imports Keras and
TensorFlow (~10 s), which ``make test-fast`` does not pay for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from keras import ops

from recommender import models
from recommender.core.config import (
    FAMILIES,
    TRAINING_KNOBS,
    RatingScale,
    TrainConfig,
    load_params,
    parse_params,
)
from recommender.core.errors import ConfigError
from recommender.models.sizing import TWO_TOWER_AUTO_LARGE, TWO_TOWER_NEGATIVES

pytestmark = pytest.mark.slow

SCALE = RatingScale(min=1.0, max=5.0, step=1.0)


def test_one_class_per_configured_family():
    assert tuple(models.FAMILY_CLASSES) == FAMILIES
    for name, cls in models.FAMILY_CLASSES.items():
        assert cls.family == name


def test_params_yaml_is_the_configs_defaults(project_root):
    # The one home of every default is params.yaml; the typed config mirrors it exactly.
    assert load_params(project_root / "params.yaml").model_dump() == parse_params({}).model_dump()


@pytest.mark.parametrize("name", ["mf", "biased_mf", "ncf"])
def test_a_built_model_carries_the_configured_knobs(name):
    model = models.build_model(name, 10, 12, SCALE, 3.5)
    section = getattr(TrainConfig(), name).model_dump(exclude=set(TRAINING_KNOBS))
    config = model.get_config()
    for key, value in section.items():
        assert config[key] == value, key


def test_model_classes_have_no_default_knobs():
    # Knobs come from the config through build_model; a constructor default would be a second home.
    with pytest.raises(TypeError, match="embedding_dim"):
        models.BiasedMF(10, 10, min_rating=1, max_rating=5)


def test_training_output_is_not_clipped_so_gradients_flow(synthetic):
    # A global mean far above the scale: inference clips to 5, training must see the raw 10.
    model = models.build_model("biased_mf", synthetic.n_users, synthetic.n_items, SCALE, 10.0)
    x = models.model_inputs([1, 2], [3, 4])
    assert np.allclose(ops.convert_to_numpy(model(x, training=True)), 10.0, atol=0.5)
    assert np.allclose(ops.convert_to_numpy(model(x)), 5.0)


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


def test_autorec_and_ensemble_reject_bad_configuration(synthetic):
    t = synthetic.train
    ratings = (t.user, t.item, t.rating)
    ensemble_data = {
        "train_ratings": ratings,
        "item_features": synthetic.item_features,
        "user_features": synthetic.user_features,
        "user_cardinalities": synthetic.user_cardinalities,
    }
    with pytest.raises(ConfigError, match="whole tables"):
        models.build_model("autorec", 10, 10, SCALE, 3.0, train_ratings=ratings, reg_form="none")
    with pytest.raises(ConfigError, match="user indices must be in 1..10"):
        models.build_model("autorec", 10, 500, SCALE, 3.0, train_ratings=ratings)
    with pytest.raises(ConfigError, match="one length"):
        models.build_model("autorec", 10, 10, SCALE, 3.0, train_ratings=([1, 2], [1], [3.0]))
    with pytest.raises(ConfigError, match="needs train_ratings"):
        models.build_model("autorec", 10, 10, SCALE, 3.0)
    with pytest.raises(ConfigError, match="member 'autorec' has no hyperparameter hiden_units"):
        models.build_model(
            "ensemble",
            synthetic.n_users,
            synthetic.n_items,
            SCALE,
            3.0,
            **ensemble_data,
            autorec={"hiden_units": 8},
        )
    with pytest.raises(ConfigError, match="blend must be in"):
        models.build_model(
            "ensemble", synthetic.n_users, synthetic.n_items, SCALE, 3.0, **ensemble_data, blend=1.5
        )


def test_ensemble_member_overrides_apply_over_the_family_sections_and_are_checked():
    from recommender.core.config import parse_params
    from recommender.core.errors import ConfigError

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


def test_two_tower_softmax_loss_matches_a_hand_computation():
    model = models.build_model("two_tower", 2, 3, SCALE, 3.5, embedding_dim=2, l2=0.5)
    users = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)  # row 0: unknown user
    items = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    prior = np.array([[0.0], [0.1], [0.0], [-0.2]], np.float32)
    model.user_tower.embeddings.assign(users)
    model.item_tower.embeddings.assign(items)
    model.item_prior.embeddings.assign(prior)
    x = models.model_inputs([1, 2, 2], [1, 3, 2])
    rating = np.array([5.0, 4.0, 2.0], np.float32)  # the third row is not a positive
    got = float(ops.convert_to_numpy(model.retrieval_loss(x, rating)))

    def ce(u: int, i: int) -> float:
        logits = users[u] @ items[1:].T + prior[1:, 0]  # item 0 (unknown) is never a candidate
        return float(np.log(np.exp(logits).sum()) - logits[i - 1])

    l2 = 0.5 * np.mean([users[u] @ users[u] + items[i] @ items[i] for u, i in [(1, 1), (2, 3)]])
    assert got == pytest.approx((ce(1, 1) + ce(2, 3)) / 2 + l2, rel=1e-5)
    # A batch without a positive contributes nothing (and no NaN).
    assert float(ops.convert_to_numpy(model.retrieval_loss(x, np.full(3, 1.0)))) == 0.0


def test_two_tower_in_batch_softmax_matches_a_hand_computation():
    model = _tiny_two_tower("in_batch")
    users = ops.convert_to_numpy(model.user_tower.embeddings)
    items = ops.convert_to_numpy(model.item_tower.embeddings)
    prior = ops.convert_to_numpy(model.item_prior.embeddings)
    log_q = np.log(np.array([1.0, 2.0, 1.0, 1.0]) / 4)
    x = models.model_inputs([1, 2, 2, 1], [1, 3, 1, 2])
    rating = np.array([5.0, 4.0, 4.0, 2.0], np.float32)  # the last row is not a positive
    got = float(ops.convert_to_numpy(model.retrieval_loss(x, rating)))

    batch_users, batch_items = [1, 2, 2], [1, 3, 1]  # the positives, in batch order
    logits = users[batch_users] @ items[batch_items].T + (
        prior[batch_items, 0] - log_q[batch_items]
    )
    logits[0, 2] = logits[2, 0] = -np.inf  # rows 0 and 2 share item 1: not each other's negative
    ce = [np.log(np.exp(row).sum()) - row[r] for r, row in enumerate(logits)]
    assert got == pytest.approx(np.mean(ce), rel=1e-5)


def test_two_tower_full_softmax_matches_a_hand_computation():
    """Each positive against every known item, its user's other train positives masked."""
    model = _tiny_two_tower("full")
    users = ops.convert_to_numpy(model.user_tower.embeddings)
    items = ops.convert_to_numpy(model.item_tower.embeddings)
    prior = ops.convert_to_numpy(model.item_prior.embeddings)
    x = models.model_inputs([1, 2, 2, 1], [1, 3, 1, 2])
    rating = np.array([5.0, 4.0, 4.0, 2.0], np.float32)  # the last row is not a positive
    got = float(ops.convert_to_numpy(model.retrieval_loss(x, rating)))

    liked = {1: {1, 2}, 2: {1, 3}}
    ce = []
    for user, item in ((1, 1), (2, 3), (2, 1)):  # the positives, in batch order
        logits = users[user] @ items.T + prior[:, 0]
        candidates = [i for i in (1, 2, 3) if i == item or i not in liked[user]]
        ce.append(np.log(np.exp(logits[candidates]).sum()) - logits[item])
    assert got == pytest.approx(np.mean(ce), rel=1e-5)


def test_two_tower_softmax_auto_switches_to_sampled_for_large_catalogs():
    from recommender.models.sizing import TWO_TOWER_IN_BATCH_MIN_ITEMS as IN_BATCH_MIN_ITEMS

    small = models.build_model("two_tower", 3, IN_BATCH_MIN_ITEMS, SCALE, 3.5, embedding_dim=2)
    large = models.build_model("two_tower", 3, IN_BATCH_MIN_ITEMS + 1, SCALE, 3.5, embedding_dim=2)
    assert (small.softmax_kind, large.softmax_kind) == ("full", "sampled")
    assert TWO_TOWER_AUTO_LARGE == "sampled"
    # One default for the knob: the typed config's (params.yaml's) is the model's.
    assert TrainConfig().two_tower.negatives == TWO_TOWER_NEGATIVES
    assert models.build_model("two_tower", 3, 4, SCALE, 3.5, softmax="in_batch").in_batch
    with pytest.raises(ConfigError, match="softmax must be one of auto, full, in_batch, sampled"):
        models.build_model("two_tower", 3, 4, SCALE, 3.5, softmax="negative")


def _tiny_two_tower(softmax: str = "sampled", **knobs: Any) -> Any:
    """Two users, three items, 2-d towers set by hand; train positives: user 1 likes items 1
    and 2, user 2 items 1 and 3 (so log-Q = log(2/4), log(1/4), log(1/4))."""
    model = models.build_model(
        "two_tower", 2, 3, SCALE, 3.5, embedding_dim=2, l2=0.0, softmax=softmax, **knobs
    )
    model.user_tower.embeddings.assign(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], "float32"))
    model.item_tower.embeddings.assign(
        np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
    )
    model.item_prior.embeddings.assign(np.array([[0.0], [0.1], [0.0], [-0.2]], "float32"))
    model.set_training_positives([1, 2, 1, 2], [1, 1, 2, 3], [5.0, 4.0, 4.0, 5.0])
    return model


@pytest.mark.parametrize(
    ("in_batch_negatives", "mask_form"), [(True, "bits"), (False, "bits"), (True, "keys")]
)
def test_two_tower_sampled_softmax_matches_a_hand_computation(
    in_batch_negatives, mask_form, monkeypatch
):
    if mask_form == "keys":  # the form beyond MASK_MAX_BITS cells: sorted keys, searched
        monkeypatch.setattr("recommender.models.two_tower.MASK_MAX_BITS", 0)
    model = _tiny_two_tower(negatives=4, in_batch_negatives=in_batch_negatives)
    assert model._mask_form == mask_form
    users = ops.convert_to_numpy(model.user_tower.embeddings)
    items = ops.convert_to_numpy(model.item_tower.embeddings)
    prior = ops.convert_to_numpy(model.item_prior.embeddings)[:, 0]
    log_q = np.log(np.array([1.0, 2.0, 1.0, 1.0]) / 4)
    x = models.model_inputs([1, 2, 2, 1], [1, 3, 1, 2])
    rating = np.array([5.0, 4.0, 4.0, 2.0], np.float32)  # the last row is not a positive
    negatives = np.array([2, 1, 2, 3], np.int32)  # what the batch "drew" (with replacement)
    got = float(ops.convert_to_numpy(model.retrieval_loss(x, rating, negatives=negatives)))

    batch_users, batch_items = [1, 2, 2], [1, 3, 1]  # the positives, in batch order
    liked = {1: {1, 2}, 2: {1, 3}}  # each user's train positives (their own item included)
    corrected = prior - log_q  # each candidate's logit lowered by log of its popularity
    ce, n_candidates = [], []
    for r, (u, i) in enumerate(zip(batch_users, batch_items, strict=True)):
        own = users[u] @ items[i] + corrected[i]
        # Not a negative: the row's own item, nor another item its user liked in training.
        drawn = [users[u] @ items[j] + corrected[j] for j in negatives if j not in liked[u]]
        others = [
            users[u] @ items[j] + corrected[j]
            for k, j in enumerate(batch_items)
            if in_batch_negatives and k != r and j not in liked[u]
        ]
        logits = np.array([own, *drawn, *others])
        ce.append(np.log(np.exp(logits).sum()) - own)
        n_candidates.append(len(logits))
    assert n_candidates == ([3, 3, 3] if in_batch_negatives else [2, 3, 3])  # masks at work
    assert got == pytest.approx(np.mean(ce), rel=1e-5)
    # Without them the loss differs: the batch's positives count (or do not) as candidates.
    other = _tiny_two_tower(negatives=4, in_batch_negatives=not in_batch_negatives)
    assert float(ops.convert_to_numpy(other.retrieval_loss(x, rating, negatives=negatives))) != (
        pytest.approx(got, rel=1e-3)
    )


def test_two_tower_sampled_softmax_without_train_positives_masks_only_the_own_item():
    """Before ``set_training_positives`` there is no mask and no log-Q: each positive meets
    every drawn item but a copy of its own, scored row by row (users repeat in the batch)."""
    model = models.build_model(
        "two_tower", 2, 3, SCALE, 3.5, embedding_dim=2, l2=0.0, softmax="sampled", negatives=4
    )
    users = ops.convert_to_numpy(model.user_tower.embeddings)
    items = ops.convert_to_numpy(model.item_tower.embeddings)
    prior = ops.convert_to_numpy(model.item_prior.embeddings)[:, 0]
    x = models.model_inputs([1, 2, 2, 1], [1, 3, 1, 2])
    rating = np.array([5.0, 4.0, 4.0, 2.0], np.float32)
    negatives = np.array([2, 1, 2, 3], np.int32)
    got = float(ops.convert_to_numpy(model.retrieval_loss(x, rating, negatives=negatives)))
    ce = []
    for u, i in zip([1, 2, 2], [1, 3, 1], strict=True):
        own = users[u] @ items[i] + prior[i]
        drawn = [users[u] @ items[j] + prior[j] for j in negatives if j != i]
        logits = np.array([own, *drawn])
        ce.append(np.log(np.exp(logits).sum()) - own)
    assert got == pytest.approx(np.mean(ce), rel=1e-5)


def test_two_tower_samples_negatives_by_popularity_never_the_unknown_item():
    import keras
    import tensorflow as tf

    n_items, draws = 50, 400
    keras.utils.set_random_seed(7)
    model = models.build_model(
        "two_tower", 3, n_items, SCALE, 3.5, embedding_dim=2, softmax="sampled", negatives=draws
    )
    # Train positives: item i liked i times for i < 40, items 40..50 never (never drawn);
    # item 0 (unknown) among them too, yet it must never be drawn.
    liked = np.concatenate([np.repeat(np.arange(40), np.arange(40)), [0, 0, 0]])
    model.set_training_positives(np.ones(liked.size, int), liked, np.full(liked.size, 5.0))

    @tf.function
    def steps(n: int) -> Any:  # one traced loop of many steps, as model.fit runs them
        out = tf.TensorArray(tf.int32, size=n)
        for k in tf.range(n):
            out = out.write(k, model.sample_negatives())
        return out.stack()

    drawn = ops.convert_to_numpy(steps(50))
    assert drawn.shape == (50, draws)
    assert len({row.tobytes() for row in drawn}) == 50  # every step draws anew
    counts = np.bincount(drawn.ravel(), minlength=n_items + 1)
    assert counts[0] == 0 and counts[40:].sum() == 0
    expected = np.arange(40) / np.arange(40).sum() * drawn.size
    chi2 = ((counts[1:40] - expected[1:]) ** 2 / expected[1:]).sum()
    assert chi2 < 80  # 38 degrees of freedom: p ~ 1e-4 at 80; a uniform draw gives ~20,000
    # The global seed replays the same draws; the draws do not depend on the batch.
    keras.utils.set_random_seed(7)
    again = models.build_model(
        "two_tower", 3, n_items, SCALE, 3.5, embedding_dim=2, softmax="sampled", negatives=draws
    )
    again.set_training_positives(np.ones(liked.size, int), liked, np.full(liked.size, 5.0))
    first = ops.convert_to_numpy(again.sample_negatives())
    np.testing.assert_array_equal(first, drawn[0])


def test_two_tower_sampled_trains_saves_and_loads_in_safe_mode(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    user, item = rng.integers(1, 21, 600), rng.integers(1, 31, 600)
    rating = rng.integers(1, 6, 600).astype("float32")
    model = models.build_model(
        "two_tower", 20, 30, SCALE, 3.0, embedding_dim=4, softmax="sampled", negatives=7,
        in_batch_negatives=False,
    )  # fmt: skip
    model.set_training_positives(user, item, rating)
    models.compile_model(model, 0.01, steps_per_execution=4)
    data = models.make_dataset(user, item, rating, batch_size=64)
    history = model.fit(data, epochs=3, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "sampled.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    config = loaded.get_config()
    assert (config["softmax"], config["negatives"], config["in_batch_negatives"]) == (
        "sampled",
        7,
        False,
    )
    assert config == model.get_config()
    np.testing.assert_array_equal(
        loaded.retrieval_factors().item_vectors, model.retrieval_factors().item_vectors
    )


@pytest.mark.parametrize("negatives", [0, -3, 2.5, True, "512"])
def test_two_tower_refuses_a_negatives_that_is_not_a_positive_integer(negatives):
    with pytest.raises(ConfigError, match="negatives must be a positive integer"):
        models.build_model("two_tower", 3, 4, SCALE, 3.5, softmax="sampled", negatives=negatives)
    with pytest.raises(ConfigError, match=r"train\.two_tower\.negatives"):
        parse_params({"train": {"two_tower": {"negatives": negatives}}})


def test_two_tower_ranks_with_its_towers_and_rates_with_its_head():
    model = models.build_model("two_tower", 5, 7, SCALE, 3.5)
    retrieval, rating = model.retrieval_factors(), model.factors()
    assert retrieval.item_vectors.shape == (8, model.embedding_dim)
    assert rating.item_vectors.shape == (8, model.rating_head.embedding_dim)
    x = models.model_inputs([1, 2], [3, 4])
    np.testing.assert_allclose(
        ops.convert_to_numpy(model.score(x)), rating.predict([1, 2], [3, 4]), atol=1e-5
    )
    # The rating head takes train.biased_mf's knobs, with train.two_tower.rating over them.
    assert model.rating_hyper == TrainConfig(model="two_tower").hyper()["rating"]


def test_two_tower_positive_bits_match_the_positives_on_a_larger_table() -> None:
    """Every (user, item) cell's bit, read as the loss reads it, is set exactly for the train
    positives (cells that share a byte included)."""
    rng = np.random.default_rng(5)
    n_users, n_items = 37, 29
    users, items = rng.integers(1, n_users + 1, 400), rng.integers(1, n_items + 1, 400)
    ratings = rng.integers(1, 6, 400).astype(np.float32)
    model = models.build_model(
        "two_tower", n_users, n_items, SCALE, 3.5, embedding_dim=2, softmax="sampled"
    )
    model.set_training_positives(users, items, ratings)
    assert model._mask_form == "bits"
    got = np.zeros((n_users + 1, n_items + 1), bool)
    for u in range(n_users + 1):  # one user's row at a time: (1, items) of the mask
        got[u] = ops.convert_to_numpy(model._liked(np.array([u]), np.arange(n_items + 1)))[0]
    want = np.zeros_like(got)
    want[users[ratings >= 4.0], items[ratings >= 4.0]] = True
    np.testing.assert_array_equal(got, want)

    # Set again (a refit's positives), in place: bits of the first set that are not in the
    # second are cleared, the second's set; the table stays the variable a compiled step reads.
    table = model._positives
    ratings = rng.integers(1, 6, 400).astype(np.float32)
    model.set_training_positives(users, items, ratings)
    assert model._positives is table
    for u in range(n_users + 1):
        got[u] = ops.convert_to_numpy(model._liked(np.array([u]), np.arange(n_items + 1)))[0]
    want[:] = False
    want[users[ratings >= 4.0], items[ratings >= 4.0]] = True
    np.testing.assert_array_equal(got, want)
