"""The one training loop, for every family, in one process and under ``tf.distribute``.

Why not ``model.fit``: at our pins Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585, #20329; tensorflow/tensorflow#72388; the canary in
``tests/model/test_distributed.py`` says when that changes), and these models are so small that
how the step is built decides the speed (``reports/epoch_profile.md``). So one loop serves both:

- **Many steps per call.** One ``tf.function`` call runs up to :data:`STEPS_PER_CALL` batches in a
  ``tf.range`` loop: no Python per step. Between calls the loop updates the progress line.
- **Row-sparse updates.** The tape gives an embedding table's gradient as ``IndexedSlices`` (the
  rows the batch touched); :class:`~recommender.models.lazy_adam.LazyAdam` moves only those rows.
- **The family's own loss.** ``model.compute_loss`` (the compiled MSE, the family's penalties and,
  for ``two_tower``, its retrieval loss) inside ``strategy.run``; outside ``tf.distribute`` the
  strategy is TensorFlow's default one, a single replica, and the same code runs.
- **A cheap validation pass.** The validation RMSE from one compiled call over the validation
  part (no loss, no penalties: nothing stops on them); NDCG and the rest come from the callbacks.
- **Keras callbacks.** ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_end`` (once per
  call, with the last batch's index, as Keras does with ``steps_per_execution``), ``on_test_begin``,
  ``on_epoch_end`` with the logs and ``on_train_end``; a callback stops training by setting
  ``model.stop_training``, as with ``fit``.

Each global batch is the one a single process would train on: a permutation per epoch keyed by
``(seed, epoch)``, so every worker computes the same one. With ``user_block`` > 1 it permutes
blocks of up to that many rows of one user instead of single rows (:func:`user_blocks`): a
step's cost is mostly its distinct table rows (lazy Adam's gathers and scatters, the mask's
lookups), and where a batch's users would otherwise be nearly all distinct, blocks cut them.
Replica ``k`` of ``n`` takes the batch's rows ``k, k + n, ...`` and weighs its loss by its
share of the batch, so the summed gradients are those of the whole batch's mean loss. Every
worker runs every step (a worker that leaves a collective early blocks the others forever) and
computes the validation metrics on the whole validation part; the epoch's logs and the stop
decision are then averaged across workers, so all take the same decision.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recommender.dataset.stream import ParquetRatings

#: Batches per call into the compiled train function (at most). Removes Python's per-step cost,
#: which dominates for models this small, while a large epoch's progress line still moves.
STEPS_PER_CALL = 100
#: Batches per call when the steps hold collectives across workers (unrolled; see ``train``).
UNROLLED_STEPS = 10
#: Rows scored at once by the validation pass.
VALIDATION_BATCH = 8192
#: The history keys that time an epoch (they vary from run to run; the others are seeded).
TIMING_KEYS = ("epoch_seconds", "ratings_per_second")


@dataclass(frozen=True)
class Ratings:
    """``(user_idx, item_idx, rating)`` columns as the loop feeds them."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    @classmethod
    def of(cls, frame: Any) -> Ratings:
        """The columns of a processed ratings frame."""
        return cls(
            frame["user_idx"].to_numpy(np.int32),
            frame["item_idx"].to_numpy(np.int32),
            frame["rating"].to_numpy(np.float32),
        )

    def __len__(self) -> int:
        return len(self.ratings)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.users, self.items, self.ratings


#: ``user_block: auto``'s block where it applies (see :func:`resolve_user_block`). Measured with
#: the default (``two_tower``, batch 4096), fit loop in rating-epochs/s against single rows:
#: ML-1M's shape 366k -> 459k at 8, 492k at 16; ML-10M's 297k -> 364k at 8, 420k at 16.
AUTO_USER_BLOCK = 16


def resolve_user_block(setting: int | str, n_users: int, batch_size: int) -> int:
    """The rows of one user kept together in a batch: ``setting``, or for ``auto``
    :data:`AUTO_USER_BLOCK` where a batch of single rows would hold mostly distinct users (more
    users than a batch has rows), else 1.

    Below that, a batch repeats its users already (ML-100K: 943 users, batches of 4,096), blocks
    save nothing, and on ML-100K's folds they cost rating error (u1 RMSE 0.9248 -> 0.9256 at 16).
    """
    if setting == "auto":
        return AUTO_USER_BLOCK if n_users > batch_size else 1
    return int(setting)


def user_blocks(users: np.ndarray, block: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, starts)``: the row indices grouped by user, in a seeded random order within
    each user, and where each block of up to ``block`` consecutive rows of one user starts in
    ``rows`` (a block never spans two users)."""
    rows = np.lexsort((np.random.default_rng(seed).random(len(users)), users))
    grouped = users[rows]
    at = np.arange(len(rows))
    # Each row's position within its user: its index less where its user's rows begin.
    user_start = np.maximum.accumulate(np.where(np.r_[True, grouped[1:] != grouped[:-1]], at, 0))
    return rows.astype(np.int64), np.flatnonzero((at - user_start) % block == 0).astype(np.int64)


def shard_batches(
    n_rows: int,
    batch_size: int,
    n_shards: int,
    shards: Sequence[int],
    epochs: int,
    seed: int,
    shuffle: bool = True,
    users: np.ndarray | None = None,
    user_block: int = 1,
) -> Any:
    """``tf.data`` of ``(rows, share)``: for every global batch of every epoch, one element per
    shard in ``shards`` (this input pipeline's replicas), with the rows ``shard, shard + n_shards,
    ...`` of the batch and the shard's share of it.

    A permutation per epoch keyed by ``(seed, epoch)``, so every worker computes the same one: of
    the rows, or with ``user_block`` > 1 (and ``users``, each row's user) of the blocks of
    :func:`user_blocks`. A last batch smaller than ``n_shards`` (some replica would get no row) is
    left out of the epoch.
    """
    import tensorflow as tf

    n_batches = steps_per_epoch(n_rows, batch_size, n_shards)
    local = tf.constant(list(shards), tf.int64)
    blocked = shuffle and user_block > 1 and users is not None
    if blocked:
        grouped, block_starts = user_blocks(np.asarray(users), user_block, seed)
        by_user = tf.constant(grouped)
        starts = tf.constant(block_starts)
        ends = tf.constant(np.r_[block_starts[1:], n_rows].astype(np.int64))

    def epoch_batches(epoch: Any) -> Any:
        order = tf.range(n_rows, dtype=tf.int64)
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        if blocked:
            blocks = tf.random.experimental.stateless_shuffle(
                tf.range(tf.size(starts, out_type=tf.int64)), seed=key
            )
            within = tf.ragged.range(tf.gather(starts, blocks), tf.gather(ends, blocks))
            order = tf.gather(by_user, within.flat_values)
        elif shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=key)

        def shard_rows(b: Any) -> Any:
            rows = order[b * batch_size : tf.minimum((b + 1) * batch_size, n_rows)]
            size = tf.shape(rows, out_type=tf.int64)[0]
            if n_shards == 1:  # one replica: the whole batch, its whole share
                return tf.data.Dataset.from_tensors((rows, tf.constant(1.0)))
            return tf.data.Dataset.from_tensor_slices(local).map(
                lambda s: (
                    rows[s::n_shards],
                    tf.cast((size - s + n_shards - 1) // n_shards, tf.float32)
                    / tf.cast(size, tf.float32),
                )
            )

        return tf.data.Dataset.range(n_batches).flat_map(shard_rows)

    return tf.data.Dataset.range(epochs).flat_map(epoch_batches)


def steps_per_epoch(n_rows: int, batch_size: int, n_replicas: int = 1) -> int:
    """Global batches in an epoch (a last batch too small to give every replica a row is left
    out)."""
    return n_rows // batch_size + (n_rows % batch_size >= n_replicas)


def column(values: Any) -> Any:
    """``values`` as a ``(batch, 1)`` tensor."""
    import tensorflow as tf

    return tf.reshape(values, [-1, 1])


class Progress:
    """Keras-style progress: a bar within the epoch (``verbose=1``) or one line per epoch
    (``verbose=2``), each with rating-epochs per second and, once an epoch has run, the time
    left at most (the epoch cap; early stopping usually ends sooner)."""

    def __init__(self, verbose: int | str, epochs: int, steps: int, n_rows: int) -> None:
        self.verbose = 1 if verbose == "auto" else int(verbose)
        self.epochs, self.steps, self.n_rows = epochs, steps, n_rows
        self.bar: Any = None
        self.epoch_seconds: list[float] = []

    def begin(self, epoch: int) -> None:
        if self.verbose == 1:
            import keras

            print(f"Epoch {epoch + 1}/{self.epochs}", file=sys.stdout, flush=True)
            self.bar = keras.utils.Progbar(self.steps, stateful_metrics=["ratings/s"])

    def step(self, done: int, seconds: float, logs: dict[str, float]) -> None:
        if self.bar is not None:
            rate = self.n_rows * done / max(self.steps, 1) / max(seconds, 1e-9)
            self.bar.update(done, [*logs.items(), ("ratings/s", rate)])

    def end(self, epoch: int, seconds: float, logs: dict[str, float]) -> None:
        self.epoch_seconds.append(seconds)
        if not self.verbose:
            return
        left = self.epochs - epoch - 1
        recent = self.epoch_seconds[1:] or self.epoch_seconds  # the first epoch traces
        eta = left * sum(recent) / len(recent)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in TIMING_KEYS)
        print(
            f"Epoch {epoch + 1}/{self.epochs}: {seconds:.1f} s, "
            f"{self.n_rows / max(seconds, 1e-9):,.0f} ratings/s, {shown}"
            + (f"; at most {_clock(eta)} left ({left} epochs)" if left else ""),
            file=sys.stdout,
            flush=True,
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def train(
    model: Any,
    strategy: Any,
    train_rows: Ratings | ParquetRatings,
    val_rows: Ratings | None,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    producers: Sequence[Any] = (),
    consumers: Sequence[Any] = (),
    verbose: int | str = 0,
    across_workers: bool = False,
    steps_per_call: int = STEPS_PER_CALL,
    user_block: int | str = 1,
) -> tuple[dict[str, list[float]], float]:
    """Train ``model`` (built and compiled in ``strategy``'s scope) for at most ``epochs``.

    Args:
        model: A compiled family (its optimizer and loss are used).
        strategy: ``tf.distribute.get_strategy()`` for one process, or the strategy the model
            was built under.
        train_rows: Rows in memory, or a split read a window at a time (``ParquetRatings``).
        val_rows: The validation part: adds ``val_rmse`` to each epoch's logs.
        epochs: At most this many epochs (a callback may stop sooner).
        batch_size: Rows per global batch (split across the replicas).
        seed: Keys each epoch's permutation.
        producers: Callbacks that add entries to the logs (the epoch timer, validation NDCG); they
            run on every worker, before the logs are agreed.
        consumers: Callbacks that read the agreed logs (loggers, early stopping).
        verbose: 0 quiet, 1 a progress bar, 2 a line per epoch.
        across_workers: Average the logs and the stop decision over the workers (multi-worker).
        steps_per_call: Batches per call into the compiled train function, at most.
        user_block: Rows of one user kept together in a batch, or ``auto``: see ``_batches``.

    Returns:
        The history (per-epoch logs) and the seconds the loop took.
    """
    import keras

    n_rows = len(train_rows)
    n_steps = steps_per_epoch(n_rows, batch_size, strategy.num_replicas_in_sync)
    batches = _batches(strategy, train_rows, batch_size, epochs, seed, user_block)
    train_steps = _compiled_steps(model, strategy, across_workers)
    if across_workers:
        steps_per_call = min(steps_per_call, UNROLLED_STEPS)
    validate = validation_rmse(model, val_rows) if val_rows is not None and len(val_rows) else None
    mean_over_workers = _mean_over_workers(strategy) if across_workers else None

    everyone = keras.callbacks.CallbackList([*producers, *consumers], model=model)
    progress = Progress(verbose, epochs, n_steps, n_rows)
    history: dict[str, list[float]] = {}
    model.stop_training = False
    start = time.perf_counter()
    everyone.on_train_begin()
    for epoch in range(epochs):
        everyone.on_epoch_begin(epoch)
        progress.begin(epoch)
        began = time.perf_counter()
        sums = np.zeros(3)
        done = 0
        while done < n_steps:
            steps = min(steps_per_call, n_steps - done)
            sums += train_steps(batches, steps).numpy()
            done += steps
            running = {"loss": sums[0] / sums[2], "rmse": math.sqrt(sums[1] / sums[2])}
            everyone.on_train_batch_end(done - 1, running)
            progress.step(done, time.perf_counter() - began, running)
        logs: dict[str, float] = {
            "loss": float(sums[0] / sums[2]),
            "rmse": math.sqrt(sums[1] / sums[2]),
        }
        logs = _epoch_logs(epoch, logs, validate, producers, consumers, mean_over_workers)
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        progress.end(epoch, time.perf_counter() - began, logs)
        if _stop(model, mean_over_workers):
            break
    everyone.on_train_end()
    return history, time.perf_counter() - start


def _batches(
    strategy: Any,
    train_rows: Ratings | ParquetRatings,
    batch_size: int,
    epochs: int,
    seed: int,
    user_block: int | str,
) -> Iterator[Any]:
    """Every epoch's batches, each replica's share gathered from the rows kept on the device;
    blocks of one user's rows as :func:`resolve_user_block` settles ``user_block``."""
    import tensorflow as tf

    if isinstance(train_rows, ParquetRatings):
        if strategy.num_replicas_in_sync != 1:
            raise ValueError("training from Parquet pieces takes one replica")
        stream = train_rows.dataset(batch_size, epochs, seed).prefetch(tf.data.AUTOTUNE)
        return iter(strategy.experimental_distribute_dataset(stream))

    n_users = int(np.count_nonzero(np.bincount(train_rows.users)))
    block = resolve_user_block(user_block, n_users, batch_size)

    replicas = strategy.num_replicas_in_sync
    n_rows = len(train_rows)
    users, items, ratings = (tf.constant(a) for a in train_rows.columns())

    def dataset_fn(context: Any) -> Any:
        per_pipeline = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * per_pipeline
        ds = shard_batches(
            n_rows,
            batch_size,
            replicas,
            range(first, first + per_pipeline),
            epochs,
            seed,
            users=train_rows.users,
            user_block=block,
        )
        ds = ds.map(
            lambda rows, share: (
                {"user": tf.gather(users, rows), "item": tf.gather(items, rows)},
                tf.gather(ratings, rows),
                share,
            )
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    return iter(strategy.distribute_datasets_from_function(dataset_fn))


def _mean_over_workers(strategy: Any) -> Callable[[Any], Any]:
    """A compiled mean of a tensor over every replica of ``strategy`` (all workers')."""
    import tensorflow as tf

    @tf.function
    def mean_over_workers(values: Any) -> Any:
        return strategy.reduce("MEAN", strategy.run(tf.identity, args=(values,)), axis=None)

    return mean_over_workers


def _epoch_logs(
    epoch: int,
    logs: dict[str, float],
    validate: Callable[[], float] | None,
    producers: Sequence[Any],
    consumers: Sequence[Any],
    mean_over_workers: Callable[[Any], Any] | None,
) -> dict[str, float]:
    """The epoch's logs: the validation RMSE and the producers' entries added, averaged over
    the workers (with ``mean_over_workers``), then shown to the consumers."""
    if validate is not None:
        for callback in producers:
            callback.on_test_begin()
        logs["val_rmse"] = validate()
    for callback in producers:
        callback.on_epoch_end(epoch, logs)
    if mean_over_workers is not None:
        logs = agree(logs, mean_over_workers, exclude=TIMING_KEYS)
    for callback in consumers:
        callback.on_epoch_end(epoch, logs)
    return logs


def _stop(model: Any, mean_over_workers: Callable[[Any], Any] | None) -> bool:
    """Whether a callback stopped training (on any worker, with ``mean_over_workers``)."""
    stop = float(bool(model.stop_training))
    if mean_over_workers is not None:
        import tensorflow as tf

        stop = float(mean_over_workers(tf.constant([stop], tf.float64))[0])
    return stop > 0


#: The last model's compiled steps, kept for its next :func:`train` (a refit that continues the
#: fitted model): a new trace costs ~3 s at ML-100K's size, a fifth of its whole refit. One slot,
#: so at most one model outlives its training through it.
_last_compiled: tuple[Any, tuple[Any, ...], Callable[[Any, int], Any]] | None = None


def _compiled_steps(model: Any, strategy: Any, across_workers: bool) -> Callable[[Any, int], Any]:
    """``train_steps(iterator, steps)``: ``steps`` batches from ``iterator`` through the model's
    step, in one call into a ``tf.function``; returns the summed loss, squared errors and rows."""
    global _last_compiled
    # A model may bake more than its weights into the step (two_tower's mask of positives).
    key = (strategy, across_workers, model.trace_key() if hasattr(model, "trace_key") else None)
    if _last_compiled is not None and _last_compiled[0] is model and _last_compiled[1] == key:
        return _last_compiled[2]
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    variables = model.trainable_variables
    optimizer = model.optimizer

    def replica_step(x: Any, y: Any, share: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            # Keras divides the compiled loss and the penalties by the replica count (for equal
            # local batches); undone, then weighed by this replica's share of the batch. As
            # (batch, 1): a rank-1 target makes the MSE a scalar before Keras' reduction, which
            # then skips that division (tensorflow#72388's scalar case) but not the penalties'.
            loss = model.compute_loss(x, column(y), column(y_pred), training=True)
            loss = loss * (share * replicas)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        errors = tf.reduce_sum(tf.square(tf.reshape(y_pred, [-1]) - tf.reshape(y, [-1])))
        return loss, errors, tf.cast(tf.size(y), tf.float32)

    def one_step(iterator: Any, totals: Any) -> Any:
        x, y, share = next(iterator)
        per_replica = strategy.run(replica_step, args=(x, y, share))
        # The replicas' weighed losses sum to the global batch's mean loss.
        loss, errors, rows = (strategy.reduce("SUM", v, axis=None) for v in per_replica)
        return totals + tf.cast(tf.stack([loss * rows, errors, rows]), tf.float64)

    def steps_of(iterator: Any, steps: Any) -> Any:
        totals = tf.zeros([3], tf.float64)  # summed loss, squared errors, rows
        # A while loop, but with collectives across workers an unrolled one: in a while loop
        # their instances can pair up out of order (a row gather then meets another size),
        # while straight-line code keeps them in program order.
        if isinstance(steps, int):
            for _ in range(steps):
                totals = one_step(iterator, totals)
            return totals
        _, totals = tf.while_loop(
            lambda k, _: k < steps,
            lambda k, totals: (k + 1, one_step(iterator, totals)),
            (tf.constant(0), totals),
        )
        return totals

    # Traced as written (autograph off): the loop is an explicit while loop, and nothing in a
    # step branches on a tensor; converting it cost ~40% of the first epoch's trace.
    if across_workers:
        # One trace per steps value: the full and the tail.
        train_steps = tf.function(steps_of, autograph=False)
    else:
        compiled = tf.function(steps_of, autograph=False)

        def train_steps(iterator: Any, steps: int) -> Any:
            return compiled(iterator, tf.constant(steps))

    _last_compiled = (model, key, train_steps)
    return train_steps


def validation_rmse(model: Any, rows: Ratings) -> Callable[[], float]:
    """A function giving the RMSE of the model's clipped predictions on ``rows``, in one
    compiled call (the validation pass; also a worker's report of its test RMSE).

    Outside any strategy's ``run``: every worker scores the whole validation part locally.
    """
    import tensorflow as tf

    users, items, ratings = (tf.constant(a) for a in rows.columns())
    n = len(rows)
    n_batches = -(-n // VALIDATION_BATCH)

    def batch_errors(b: Any, total: Any) -> Any:
        part = tf.range(b * VALIDATION_BATCH, tf.minimum((b + 1) * VALIDATION_BATCH, n))
        x = {"user": tf.gather(users, part), "item": tf.gather(items, part)}
        y_pred = tf.reshape(model(x, training=False), [-1])
        diff = tf.cast(y_pred - tf.gather(ratings, part), tf.float64)
        return b + 1, total + tf.reduce_sum(tf.square(diff))

    @tf.function(autograph=False)  # an explicit while loop (see _compiled_steps)
    def squared_errors() -> Any:
        start = (tf.constant(0), tf.constant(0.0, tf.float64))
        return tf.while_loop(lambda b, _: b < n_batches, batch_errors, start)[1]

    return lambda: math.sqrt(float(squared_errors()) / n)


def agree(
    logs: dict[str, float], mean_over_workers: Any, exclude: Sequence[str]
) -> dict[str, float]:
    """``logs`` with every entry but ``exclude`` (each worker's own timings) averaged over the
    workers: identical inputs already give identical values; this makes it certain, so every
    worker takes the same early-stopping decision."""
    import tensorflow as tf

    keys = sorted(k for k in logs if k not in exclude)
    mean = mean_over_workers(tf.constant([logs[k] for k in keys], tf.float64)).numpy()
    return {**logs, **{k: float(v) for k, v in zip(keys, mean, strict=True)}}
