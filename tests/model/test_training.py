"""Model tests on tiny synthetic data: training, determinism, the bundle and the evaluation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from recommender.core.config import Params
from recommender.dataset.processed import Processed
from recommender.evaluation.evaluate import activity_slices, evaluate, mlflow_metrics
from recommender.scoring.bundle import ModelBundle
from recommender.training.fit import fit
from recommender.training.loop import TIMING_KEYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rating_params(params: Params) -> Params:
    """The tiny params with a rating family: these tests pin down RMSE early stopping and the
    refit (the ranking default's two-headed stopping is tested below)."""
    return params.model_copy(
        update={"train": params.train.model_copy(update={"model": "biased_mf"})}
    )


@pytest.fixture(scope="module")
def trained(processed: Processed, rating_params: Params):  # noqa: ANN201
    return fit(processed, rating_params.train, rating_params.seed)


@pytest.fixture(scope="module")
def bundle(trained, processed: Processed, processed_dir: Path, tmp_path_factory) -> ModelBundle:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("bundle") / "bundle"
    ModelBundle.from_training(trained.model, processed, {"model": "biased_mf"}).save(
        folder, processed_dir
    )
    return ModelBundle.load(folder)


def test_training_loss_decreases_and_early_stopping_keeps_the_best_epoch(trained) -> None:  # noqa: ANN001
    history = trained.history
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert 1 <= trained.best_epoch <= trained.epochs_run
    # restore_best_weights: the model holds the epoch with the lowest validation RMSE.
    assert history["val_rmse"][trained.best_epoch - 1] == min(history["val_rmse"])


def test_same_seed_same_model(processed: Processed, trained, rating_params: Params) -> None:  # noqa: ANN001
    again = fit(processed, rating_params.train, rating_params.seed)
    untimed = [
        {k: v for k, v in h.items() if k not in TIMING_KEYS}
        for h in (again.history, trained.history)
    ]
    assert untimed[0] == untimed[1]
    assert set(TIMING_KEYS) <= set(again.history)  # each epoch's speed, timed
    u = processed.test["user_idx"].to_numpy()
    i = processed.test["item_idx"].to_numpy()
    first = ModelBundle.from_training(trained.model, processed, {}).predict(u, i)
    second = ModelBundle.from_training(again.model, processed, {}).predict(u, i)
    np.testing.assert_array_equal(first, second)


def test_bundle_round_trip_predicts_the_same(trained, bundle: ModelBundle, processed) -> None:  # noqa: ANN001
    live = ModelBundle.from_training(trained.model, processed, {})
    test = processed.test
    users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    np.testing.assert_allclose(bundle.predict_raw(users, items), live.predict_raw(users, items))
    # The factor path (NumPy) and the Keras graph agree: serving and training see one model.
    graph = np.asarray(
        trained.model.score(
            {"user": test["user_idx"].to_numpy(), "item": test["item_idx"].to_numpy()}
        )
    ).reshape(-1)
    np.testing.assert_allclose(bundle.score(test["user_idx"], test["item_idx"]), graph, atol=1e-5)


def test_predictions_stay_on_the_scale_and_unknown_ids_use_the_oov_row(bundle: ModelBundle) -> None:
    users = np.array(list(bundle.user_vocab.ids)[:50] + [10**9])
    items = np.array(list(bundle.item_vocab.ids)[:50] + [10**9])
    pred = bundle.predict_raw(users, items)
    assert pred.min() >= bundle.scale.min and pred.max() <= bundle.scale.max
    # An unknown user and an unknown item read as index 0 — the same as asking for it directly.
    assert pred[-1] == pytest.approx(float(bundle.predict(np.array([0]), np.array([0]))[0]))


def test_recommend_excludes_rated_items_and_the_oov_row(bundle: ModelBundle) -> None:
    users = np.arange(1, 11)
    top = bundle.recommend(users, k=10)
    assert top.items.shape == (10, 10)
    for row, user in zip(top.items, users, strict=True):
        assert 0 not in row
        assert not set(row.tolist()) & set(bundle.seen.items_of(int(user)).tolist())
        # Sorted by score, and the scores are the model's own.
        scores = bundle.score(np.full(10, user), row)
        assert np.all(np.diff(scores) <= 1e-6)


def test_evaluation_beats_the_baselines_and_has_the_promised_shape(
    bundle: ModelBundle, processed: Processed, params: Params
) -> None:
    result = evaluate(bundle, processed, params.evaluate).metrics
    assert set(result["test"]) >= {"mse", "rmse", "mae"}
    assert result["test"]["mse"] == pytest.approx(result["test"]["rmse"] ** 2, rel=1e-4)
    assert result["test"]["rmse"] < result["baselines"]["bias"]["rmse"]
    assert result["baselines"]["bias"]["rmse"] < result["baselines"]["global_mean"]["rmse"]
    assert {"precision@10", "recall@10", "ndcg@10", "map@10"} <= set(result["ranking"])
    # EASE: its lambda chosen on the validation split (one NDCG per candidate), then measured.
    ease = result["baselines"]["ease"]
    assert ease["chosen_on"] == "validation split"
    assert ease["lambda"] in params.evaluate.ease_lambdas
    assert set(ease["val_ndcg@10"]) == {str(lam) for lam in params.evaluate.ease_lambdas}
    assert ease["ndcg@10"] > result["baselines"]["popularity"]["ndcg@10"]
    slices = result["slices"]["user_train_ratings"]
    assert list(slices) == ["0", "1-5", "6-20", "21+"]
    assert sum(s["rows"] for s in slices.values()) == result["test"]["rows"]
    for name in mlflow_metrics(result):
        assert re.fullmatch(r"[\w\-. /]+", name), name


def test_activity_slice_names() -> None:
    assert [s[0] for s in activity_slices([1, 6, 21])] == ["0", "1-5", "6-20", "21+"]
    assert [s[0] for s in activity_slices([2, 3])] == ["0-1", "2", "3+"]


def test_refit_trains_on_train_and_val_for_the_chosen_epochs(
    processed: Processed, trained, rating_params: Params
) -> None:  # noqa: ANN001
    from recommender.dataset.processed import with_val_in_train
    from recommender.training.fit import refit

    merged = with_val_in_train(processed)
    val = processed.val
    known = (val["user_idx"] != 0) & (val["item_idx"] != 0)
    assert len(merged.train) == len(processed.train) + int(known.sum())
    assert len(merged.val) == 0 and len(processed.val) == len(val)  # the input is untouched

    final = refit(processed, rating_params.train, rating_params.seed, trained.best_epoch)
    assert final.epochs_run == trained.best_epoch and "val_rmse" not in final.history
    # The refit learnt from the validation ratings: it fits them better than the model that
    # only early-stopped on them.
    rows = val[known]
    u, i, y = rows["user_idx"].to_numpy(), rows["item_idx"].to_numpy(), rows["rating"].to_numpy()
    before = ModelBundle.from_training(trained.model, processed, {}).predict(u, i)
    after = ModelBundle.from_training(final.model, processed, {}).predict(u, i)
    assert np.sqrt(np.mean((after - y) ** 2)) < np.sqrt(np.mean((before - y) ** 2))


def test_two_tower_heads_stop_apart_and_the_refit_replays_both(
    processed: Processed, params: Params
) -> None:
    from recommender.models.two_tower import NDCG_MIN_DELTA, RMSE_MIN_DELTA
    from recommender.scoring import metrics
    from recommender.scoring.ranking import SeenItems, rank
    from recommender.training.fit import refit

    cfg = params.train.model_copy(update={"model": "two_tower", "refit_from": "scratch"})
    cfg = cfg.with_epochs(6)
    result = fit(processed, cfg, params.seed)
    history, heads = result.history, result.head_epochs
    assert set(heads) == {"ranking", "rating"}
    ndcg, rmse = history["val_ndcg_at_10"], history["val_rmse"]
    # Each head keeps the epoch of its last change by more than its least change.
    assert heads["ranking"] == last_gain(ndcg, +1, NDCG_MIN_DELTA)
    assert heads["rating"] == last_gain(rmse, -1, RMSE_MIN_DELTA)
    assert result.best_epoch == heads["ranking"]
    # The towers hold their best epoch's weights: ranking validation again gives its NDCG.
    train, val = processed.train, processed.val
    n_users = len(processed.user_vocab) - 1
    seen = SeenItems(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), n_users)
    u, i, r = (val[c].to_numpy() for c in ("user_idx", "item_idx", "rating"))
    users = np.unique(u[u > 0])
    relevant = [{x for x in rel if x} for rel in metrics.relevant_items(u, i, r, users, 4.0)]
    factors = result.model.retrieval_factors()
    top = rank(factors.score, users, 10, len(processed.item_vocab), seen=seen).items
    assert metrics.ndcg_at_k(top, relevant, 10) == pytest.approx(max(ndcg), abs=1e-6)
    # The refit trains as long as the later head needs, and keeps each head's own epoch.
    again = refit(processed, cfg, params.seed, result)
    assert again.epochs_run == max(heads.values()) and again.head_epochs == heads
    # From the fitted model: each head goes on for the validation part's share of its epochs.
    fitted = fit(processed, cfg, params.seed)
    more = refit(processed, cfg.model_copy(update={"refit_from": "fitted"}), params.seed, fitted)
    share = cfg.refit_epochs_factor * len(processed.val) / len(processed.train)
    assert more.head_epochs == {h: max(1, round(e * share)) for h, e in heads.items()}
    assert more.model is fitted.model


def last_gain(values: list[float], sign: int, min_delta: float) -> int:
    """1-based epoch of the last value better than the best before it by more than min_delta."""
    best, at = None, 0
    for epoch, value in enumerate(values, start=1):
        if best is None or sign * (value - best) > min_delta:
            best, at = value, epoch
    return at
