"""The training loop (``training/loop.py``) against references: one step equals Keras' own
``model.fit`` step with the same optimizer, lazy Adam moves only the rows a batch used, and the
refit from the fitted model continues it rather than starting again."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.core.config import Params, RatingScale
from recommender.dataset.processed import Processed
from recommender.training import loop

pytestmark = pytest.mark.slow

N_USERS, N_ITEMS = 6, 9


def tiny_model(optimizer: str) -> object:
    import keras

    from recommender.models import build_model, compile_model

    keras.utils.set_random_seed(3)
    model = build_model(
        "biased_mf", N_USERS, N_ITEMS, RatingScale(), global_mean=3.5, embedding_dim=4, l2=0.05
    )
    return compile_model(model, 0.01, optimizer=optimizer)


def some_ratings(n: int = 16) -> loop.Ratings:
    rng = np.random.default_rng(0)
    return loop.Ratings(
        rng.integers(1, N_USERS + 1, n).astype(np.int32),
        # Items 1..6 only: rows 7-9 of the item tables are never touched.
        rng.integers(1, 7, n).astype(np.int32),
        rng.integers(1, 6, n).astype(np.float32),
    )


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
def test_one_step_of_the_loop_is_keras_fit_step(optimizer: str) -> None:
    """A whole-batch epoch is one step: the loop and ``model.fit`` (same model, same optimizer,
    same batch) must end on the same weights, penalties and all."""
    import tensorflow as tf

    rows = some_ratings()
    reference = tiny_model(optimizer)
    start = [w.copy() for w in reference.get_weights()]
    reference.fit(
        {"user": rows.users, "item": rows.items},
        rows.ratings,
        batch_size=len(rows),
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    ours = tiny_model(optimizer)
    ours.set_weights(start)
    history, _ = loop.train(
        ours, tf.distribute.get_strategy(), rows, None, epochs=1, batch_size=len(rows), seed=0
    )
    moved = 0
    for got, want, before in zip(ours.get_weights(), reference.get_weights(), start, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        moved += int(np.any(got != before))
    assert moved == 4, "every table (user, item, their biases) takes a step"
    assert history["loss"][0] > 0 and len(history["loss"]) == 1


def test_lazy_adam_leaves_the_rows_no_batch_used_untouched() -> None:
    import tensorflow as tf

    rows = some_ratings()
    model = tiny_model("lazy_adam")
    item_tables = [w for w in model.trainable_variables if w.shape[0] == N_ITEMS + 1]
    before = [np.array(w.numpy()) for w in item_tables]
    loop.train(model, tf.distribute.get_strategy(), rows, None, epochs=3, batch_size=4, seed=0)
    assert len(item_tables) == 2  # the item factors and the item biases
    for table, old in zip(item_tables, before, strict=True):
        now = table.numpy()
        np.testing.assert_array_equal(now[7:], old[7:], err_msg=table.path)
        assert np.any(now[1:7] != old[1:7]), table.path


def test_the_loop_runs_many_steps_per_call_and_reports_each_call(
    processed: Processed, params: Params
) -> None:
    """``on_train_batch_end`` comes once per call, with the index of the call's last batch (as
    Keras does under ``steps_per_execution``); the epoch covers every training row."""
    import keras
    import tensorflow as tf

    from recommender.training.fit import build

    rows = loop.Ratings.of(processed.train)
    seen: list[int] = []

    class Calls(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            seen.append(batch)

    batch = 64
    steps = loop.steps_per_epoch(len(rows), batch)
    history, _ = loop.train(
        build(processed, params.train.model_copy(update={"model": "biased_mf"})),
        tf.distribute.get_strategy(),
        rows,
        None,
        epochs=1,
        batch_size=batch,
        seed=0,
        consumers=[Calls()],
        steps_per_call=7,
    )
    assert seen == [min(k + 6, steps - 1) for k in range(0, steps, 7)]
    assert np.isfinite(history["rmse"][0])


def test_the_refit_from_the_fitted_model_continues_it(processed: Processed, params: Params) -> None:
    from recommender.training.fit import fit, refit

    cfg = params.train.model_copy(update={"model": "biased_mf", "refit_from": "fitted"})
    fitted = fit(processed, cfg, params.seed)
    steps_before = int(fitted.model.optimizer.iterations.numpy())
    final = refit(processed, cfg, params.seed, fitted)
    assert final.model is fitted.model  # the same model went on
    share = len(processed.val) / len(processed.train)
    assert final.epochs_run == max(1, round(fitted.best_epoch * share))
    assert final.train_rows == len(processed.train) + len(processed.val)
    assert int(final.model.optimizer.iterations.numpy()) > steps_before
    # It started from the fitted weights, not afresh: its first epoch is already trained.
    assert final.history["rmse"][0] < fitted.history["rmse"][0]


def test_the_first_head_decides_when_to_stop_and_each_keeps_its_best() -> None:
    """Two heads on fake logs: the ranking head stops gaining (beyond its least change) after
    epoch 2, the rating head keeps gaining; with patience 2 the run stops after epoch 4, the
    ranking head back at epoch 2's weights, the rating head at epoch 4's."""
    import keras

    from recommender.training.fit import head_stopping

    towers, rating = keras.Variable(0.0), keras.Variable(0.0)
    heads = {
        "ranking": (("val_ndcg_at_10", "max", 0.002), [towers]),
        "rating": (("val_rmse", "min", 0.0002), [rating]),
    }
    ndcg = [0.20, 0.23, 0.231, 0.2315, 0.2319, 0.25]  # +0.001: not a gain beyond 0.002
    rmse = [0.90, 0.89, 0.88, 0.87, 0.86, 0.85]
    stopper = head_stopping(heads, patience=2)
    stopper.set_model(type("Model", (), {"stop_training": False})())
    for epoch in range(6):
        towers.assign(float(epoch + 1))
        rating.assign(float(epoch + 1))
        stopper.on_epoch_end(epoch, {"val_ndcg_at_10": ndcg[epoch], "val_rmse": rmse[epoch]})
        if stopper.model.stop_training:
            break
    stopper.on_train_end()
    assert epoch + 1 == 4
    assert stopper.epochs == {"ranking": 2, "rating": 4}
    assert (float(towers.numpy()), float(rating.numpy())) == (2.0, 4.0)


def test_a_continued_model_keeps_its_compiled_step_and_reads_the_new_positives() -> None:
    """The refit continues the fitted model with train + validation's positives: the step traced
    for the fit is reused (no second trace), and it must mask the new positives, exactly as a
    step traced afresh does."""
    import keras
    import tensorflow as tf

    from recommender.models import build_model, compile_model

    rng = np.random.default_rng(1)
    first = loop.Ratings(
        rng.integers(1, N_USERS + 1, 40).astype(np.int32),
        rng.integers(1, N_ITEMS + 1, 40).astype(np.int32),
        np.full(40, 5.0, np.float32),
    )
    more = loop.Ratings(  # every user now likes every item: every sampled negative is masked
        np.repeat(np.arange(1, N_USERS + 1, dtype=np.int32), N_ITEMS),
        np.tile(np.arange(1, N_ITEMS + 1, dtype=np.int32), N_USERS),
        np.full(N_USERS * N_ITEMS, 5.0, np.float32),
    )

    def continued(fresh_trace: bool) -> list[np.ndarray]:
        keras.utils.set_random_seed(5)
        model = build_model(
            "two_tower",
            N_USERS,
            N_ITEMS,
            RatingScale(),
            global_mean=4.0,
            embedding_dim=4,
            l2=0.0,
            softmax="sampled",
            negatives=8,
        )
        compile_model(model, 0.05, optimizer="lazy_adam")
        strategy = tf.distribute.get_strategy()
        model.set_training_positives(*first.columns())
        loop.train(model, strategy, first, None, epochs=1, batch_size=8, seed=0)
        traced = loop._compiled_steps(model, strategy, False)
        model.set_training_positives(*more.columns())
        if fresh_trace:
            loop._last_compiled = None
        else:
            assert loop._compiled_steps(model, strategy, False) is traced, "traced again"
        loop.train(model, strategy, first, None, epochs=2, batch_size=8, seed=1)
        return [w.numpy().copy() for w in model.trainable_variables]

    for kept, fresh in zip(continued(False), continued(True), strict=True):
        np.testing.assert_allclose(kept, fresh, rtol=1e-6, atol=1e-7)


def test_user_blocks_group_a_users_rows_and_cover_every_row_once() -> None:
    users = np.array([3, 1, 3, 2, 3, 1, 3, 3, 2, 3], np.int32)
    rows, starts = loop.user_blocks(users, 2, seed=0)
    assert sorted(rows.tolist()) == list(range(len(users)))
    blocks = np.split(rows, starts[1:])
    assert all(1 <= len(b) <= 2 and len(set(users[b])) == 1 for b in blocks)
    # User 3's six rows make three blocks, user 1's two one, user 2's two one.
    assert sorted(int(users[b[0]]) for b in blocks) == [1, 2, 3, 3, 3]
    again, _ = loop.user_blocks(users, 2, seed=0)
    other, _ = loop.user_blocks(users, 2, seed=1)
    assert again.tolist() == rows.tolist() and other.tolist() != rows.tolist()


def _epochs(dataset: object) -> list[np.ndarray]:
    return [rows.numpy() for rows, _ in dataset]  # type: ignore[attr-defined]


def test_blocked_epochs_cover_every_row_once_with_fewer_users_a_batch() -> None:
    """Each epoch still trains on every row once, in batches of the same size; the batches hold
    blocks of one user's rows, so far fewer distinct users than a permutation of rows gives;
    two shards split each batch as before, and every epoch has its own order."""
    rng = np.random.default_rng(0)
    users = rng.integers(1, 500, 4000).astype(np.int32)
    n, batch = len(users), 256

    def batches(block: int, shards: int = 1, shard: int = 0) -> list[np.ndarray]:
        data = loop.shard_batches(n, batch, shards, [shard], 2, 7, users=users, user_block=block)
        return _epochs(data)

    single, blocked = batches(1), batches(16)
    steps = loop.steps_per_epoch(n, batch)
    assert len(blocked) == len(single) == 2 * steps
    for epoch in (blocked[:steps], blocked[steps:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(n))
    distinct = [np.mean([len(set(users[b])) for b in run]) for run in (single, blocked)]
    assert distinct[1] < distinct[0] / 3, distinct
    assert blocked[0].tolist() != blocked[steps].tolist()  # another order each epoch
    halves = batches(16, 2, 0), batches(16, 2, 1)
    for whole, first, second in zip(blocked, *halves, strict=True):
        assert sorted([*first, *second]) == sorted(whole)
        assert first.tolist() == whole[0::2].tolist()


@pytest.mark.parametrize(
    ("setting", "n_users", "batch", "block"),
    [("auto", 70_000, 4096, loop.AUTO_USER_BLOCK), ("auto", 943, 4096, 1), (4, 943, 4096, 4)],
)
def test_user_block_auto_blocks_only_where_a_batchs_users_would_be_distinct(
    setting: int | str, n_users: int, batch: int, block: int
) -> None:
    assert loop.resolve_user_block(setting, n_users, batch) == block


def test_the_loop_trains_from_parquet_pieces_as_from_memory(
    processed: Processed, params: Params, tmp_path
) -> None:
    """A split streamed from its Parquet files (a window at a time) trains the same model to
    about the same error as the rows held in memory, over every row each epoch."""
    import tensorflow as tf

    from recommender.dataset.stream import ParquetRatings
    from recommender.training.fit import build

    folder = tmp_path / "train.parquet"
    folder.mkdir()
    half = len(processed.train) // 2
    processed.train.iloc[:half].to_parquet(folder / "part-00000.parquet", row_group_size=5000)
    processed.train.iloc[half:].to_parquet(folder / "part-00001.parquet", row_group_size=5000)
    stream = ParquetRatings(folder, window_rows=20_000)
    cfg = params.train.model_copy(update={"model": "biased_mf"})
    strategy = tf.distribute.get_strategy()
    kw = {"epochs": 3, "batch_size": 512, "seed": 0}
    streamed, _ = loop.train(build(processed, cfg), strategy, stream, None, **kw)
    held, _ = loop.train(
        build(processed, cfg), strategy, loop.Ratings.of(processed.train), None, **kw
    )
    assert len(streamed["rmse"]) == 3
    assert streamed["rmse"][-1] < streamed["rmse"][0]
    assert abs(streamed["rmse"][-1] - held["rmse"][-1]) < 0.05 * held["rmse"][-1]
