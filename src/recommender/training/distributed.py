"""Data-parallel training with ``tf.distribute``: the loop behind ``train.distribute``.

``mirrored`` runs it over this machine's devices (one on a CPU: the single-process reference of
the same loop); ``multi_worker`` over the processes ``TF_CONFIG`` names, one per worker, each
started with the same command and its own ``TF_CONFIG``::

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}' python pipeline/train.py ...

Why a loop of our own: at our pins Keras 3's ``model.fit`` fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, #20329; tensorflow/tensorflow#72388;
the canary in ``tests/model/test_distributed.py`` says when that changes). The loop keeps what
``fit`` gives: the family's own ``compute_loss`` (its L2 penalties included), the same seeded
epochs, the same callbacks (timer, validation NDCG, early stopping with the best weights
restored, a multi-head model's per-head stopping, the refit's epoch count) and the same model.

Every worker runs every step: a worker that leaves a collective early blocks the others forever.
So every worker computes the validation metrics on the whole validation part with the same
weights, and the epoch's logs and stop decision are then averaged across workers, so all take
the same decision. Only the chief (task 0) runs the caller's callbacks (the MLflow logger).

Each global batch is the one a single process would train on (same seeded permutation); worker
``k`` of ``n`` takes its rows ``k, k + n, ...``, and weighs its loss by its share of the batch, so
the summed gradients are those of the whole batch's mean loss. The gradients of the embedding
tables are gathered, not summed densely: every worker keeps whole tables, so they must fit one
worker (``ParameterServerStrategy``'s sharded tables fail in Keras 3, keras-team/keras#18624).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recommender.core.config import TrainConfig
from recommender.core.errors import ConfigError
from recommender.preprocess.processed import Processed

if TYPE_CHECKING:
    from recommender.training.fit import FitResult

TF_CONFIG = "TF_CONFIG"
#: Rows scored at once by the validation pass.
VALIDATION_BATCH = 8192

_strategies: dict[str, Any] = {}


def cluster_spec(raw: str | None = None) -> dict[str, Any]:
    """``TF_CONFIG`` (or ``raw``) checked: ``{"cluster": {"worker": [...]}, "task": {...}}``.

    Raises:
        ConfigError: It is missing, not JSON, or does not name this task among the workers.
    """
    raw = os.environ.get(TF_CONFIG) if raw is None else raw
    expected = (
        'expected e.g. {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not raw:
        raise ConfigError(
            f"train.distribute is multi_worker but {TF_CONFIG} is not set: each worker needs "
            f"the cluster and its own task in it; {expected}"
        )
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{TF_CONFIG} is not JSON ({exc}); {expected}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"{TF_CONFIG} needs a 'cluster' and a 'task' object; {expected}")
    kind, index = task.get("type"), task.get("index")
    members = cluster.get(kind) if isinstance(kind, str) else None
    if kind not in ("worker", "chief") or not isinstance(members, list):
        raise ConfigError(
            f"{TF_CONFIG}'s task.type must be 'worker' or 'chief' and name a list in its "
            f"cluster, got task {task!r}, cluster keys {sorted(cluster)}; {expected}"
        )
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise ConfigError(
            f"{TF_CONFIG}'s task.index must be 0..{len(members) - 1} (its cluster's {kind} "
            f"list), got {index!r}"
        )
    return spec


def is_chief(kind: str) -> bool:
    """Whether this process logs and saves: always outside ``multi_worker``; there, the task
    ``chief``, or worker 0 of a cluster without one (TensorFlow's rule)."""
    if kind != "multi_worker":
        return True
    spec = cluster_spec()
    task = spec["task"]
    if task["type"] == "chief":
        return True
    return "chief" not in spec["cluster"] and task["index"] == 0


def strategy_for(kind: str) -> Any:
    """The strategy ``train.distribute`` names, made once per process (a second
    ``MultiWorkerMirroredStrategy`` cannot re-join the cluster: it resets the process's
    collective state while its peers may already use it, and the first collective hangs; see
    the ``__main__`` block): call it before any TensorFlow op, which would fix the runtime's
    collective setup."""
    if kind in _strategies:
        return _strategies[kind]
    import tensorflow as tf

    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif kind == "multi_worker":
        cluster_spec()  # a clear error before TensorFlow's own
        ring = tf.distribute.experimental.CommunicationImplementation.RING
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=ring
            )
        )
    else:
        raise ConfigError(f"train.distribute must be mirrored or multi_worker here, got {kind!r}")
    _strategies[kind] = strategy
    return strategy


def shard_batches(
    n_rows: int,
    batch_size: int,
    n_shards: int,
    shards: Sequence[int],
    epochs: int,
    seed: int,
    shuffle: bool = True,
) -> Any:
    """``tf.data`` of ``(rows, share)``: for every global batch of every epoch, one element per
    shard in ``shards`` (this input pipeline's replicas), with the rows ``shard, shard + n_shards,
    ...`` of the batch and the shard's share of it.

    The batches are those :func:`recommender.models.make_dataset` draws in one process when
    ``n_shards`` is 1: a permutation per epoch keyed by ``(seed, epoch)``, so every worker
    computes the same one. A last batch smaller than ``n_shards`` (some replica would get no
    row) is left out of the epoch.
    """
    import tensorflow as tf

    n_batches = n_rows // batch_size
    tail = n_rows % batch_size
    if tail >= n_shards:
        n_batches += 1
    local = tf.constant(list(shards), tf.int64)

    def epoch_batches(epoch: Any) -> Any:
        order = tf.range(n_rows, dtype=tf.int64)
        if shuffle:
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed=key)

        def shard_rows(b: Any) -> Any:
            rows = order[b * batch_size : tf.minimum((b + 1) * batch_size, n_rows)]
            size = tf.shape(rows, out_type=tf.int64)[0]
            return tf.data.Dataset.from_tensor_slices(local).map(
                lambda s: (
                    rows[s::n_shards],
                    tf.cast((size - s + n_shards - 1) // n_shards, tf.float32)
                    / tf.cast(size, tf.float32),
                )
            )

        return tf.data.Dataset.range(n_batches).flat_map(shard_rows)

    return tf.data.Dataset.range(epochs).flat_map(epoch_batches)


def follow_chief(processed: Processed, cfg: TrainConfig, seed: int) -> None:
    """A non-chief worker's part of the train stage: the fit and refit the chief's
    :func:`recommender.training.run.train_and_log` runs, step for step (a missing one would
    leave the chief waiting in a collective), with no MLflow run and no output."""
    from recommender.training.fit import refit

    result = fit(processed, cfg, seed)
    if cfg.refit and len(processed.val):
        refit(processed, cfg, seed, result)


def column(values: Any) -> Any:
    """``values`` as a ``(batch, 1)`` tensor."""
    import tensorflow as tf

    return tf.reshape(values, [-1, 1])


def fit(
    processed: Processed,
    cfg: TrainConfig,
    seed: int,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 0,
    head_epochs: dict[str, int] | None = None,
) -> FitResult:
    """:func:`recommender.training.fit.fit` under ``cfg.distribute`` (same arguments, same
    :class:`~recommender.training.fit.FitResult`); ``callbacks`` run on the chief only."""
    strategy = strategy_for(cfg.distribute)  # first: before any TensorFlow op
    import keras
    import tensorflow as tf

    from recommender.training.fit import (
        RANKING_MONITOR,
        TIMING_KEYS,
        FitResult,
        best_epoch_of,
        build,
        epoch_timer,
        head_stopping,
        monitor_of,
        throughput,
        validation_ranking,
    )

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    chief = is_chief(cfg.distribute)
    replicas = strategy.num_replicas_in_sync
    train, val = processed.train, processed.val
    users = tf.constant(train["user_idx"].to_numpy(np.int32))
    items = tf.constant(train["item_idx"].to_numpy(np.int32))
    ratings = tf.constant(train["rating"].to_numpy(np.float32))
    epochs = cfg.family_epochs
    batch_size = cfg.family_batch_size
    n_rows = len(train)

    with strategy.scope():
        model = build(processed, cfg)
        model.optimizer.build(model.trainable_variables)
    if hasattr(model, "set_training_positives"):  # masked out of each other's softmax
        model.set_training_positives(
            train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train["rating"].to_numpy()
        )

    def dataset_fn(context: Any) -> Any:
        per_pipeline = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * per_pipeline
        ds = shard_batches(
            n_rows, batch_size, replicas, range(first, first + per_pipeline), epochs, seed
        )
        ds = ds.map(
            lambda rows, share: (
                {"user": tf.gather(users, rows), "item": tf.gather(items, rows)},
                tf.gather(ratings, rows),
                share,
            )
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    steps_per_epoch = n_rows // batch_size + (n_rows % batch_size >= replicas)
    batches = iter(strategy.distribute_datasets_from_function(dataset_fn))
    variables = model.trainable_variables

    def replica_step(x: Any, y: Any, share: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            # Keras divides the compiled loss and the L2 penalties by the replica count (for
            # equal local batches); undone, then weighed by this replica's share of the batch.
            # As (batch, 1): a rank-1 target makes the MSE a scalar before Keras' reduction,
            # which then skips that division (tensorflow#72388's scalar case) but not the
            # penalties', and the two would be weighed apart.
            loss = model.compute_loss(x, column(y), column(y_pred), training=True)
            loss = loss * (share * replicas)
        grads = tape.gradient(loss, variables)
        model.optimizer.apply_gradients(zip(grads, variables, strict=True))
        errors = tf.reduce_sum(tf.square(tf.reshape(y_pred, [-1]) - tf.reshape(y, [-1])))
        return loss, errors, tf.cast(tf.size(y), tf.float32)

    @tf.function
    def train_step(iterator: Any) -> Any:
        x, y, share = next(iterator)
        per_replica = strategy.run(replica_step, args=(x, y, share))
        return [strategy.reduce("SUM", v, axis=None) for v in per_replica]

    @tf.function
    def across_workers(values: Any) -> Any:
        return strategy.reduce("MEAN", strategy.run(tf.identity, args=(values,)), axis=None)

    val_inputs = None
    if len(val):
        val_inputs = (
            val["user_idx"].to_numpy(np.int32),
            val["item_idx"].to_numpy(np.int32),
            val["rating"].to_numpy(np.float32),
        )

    @tf.function
    def val_step(x: Any, y: Any) -> Any:
        y_pred = model(x, training=False)
        loss = model.compute_loss(x, column(y), column(y_pred), training=False)
        return loss, tf.reduce_sum(tf.square(tf.reshape(y_pred, [-1]) - y))

    def validate() -> dict[str, float]:
        # Outside the strategy's scope: Keras would divide the loss by the replica count.
        assert val_inputs is not None
        loss_sum = errors = 0.0
        n = len(val_inputs[2])
        for start in range(0, n, VALIDATION_BATCH):
            part = slice(start, start + VALIDATION_BATCH)
            x = {"user": tf.constant(val_inputs[0][part]), "item": tf.constant(val_inputs[1][part])}
            y = tf.constant(val_inputs[2][part])
            loss, sse = val_step(x, y)
            loss_sum += float(loss) * int(y.shape[0])
            errors += float(sse)
        return {"val_loss": loss_sum / n, "val_rmse": math.sqrt(errors / n)}

    # What the single-process path's callbacks are, in its order: producers of log entries, then
    # (after the workers agree on them) the caller's callbacks and early stopping.
    producers: list[Any] = [epoch_timer(n_rows)]
    stopper: Any = None
    if val_inputs is not None:
        if monitor_of(cfg.model) == RANKING_MONITOR:
            producers.append(validation_ranking(processed, model.relevance_threshold))
        if hasattr(model, "stopping_heads"):
            stopper = head_stopping(model.stopping_heads(), patience=cfg.family_patience)
        else:
            monitor = monitor_of(cfg.model)
            stopper = keras.callbacks.EarlyStopping(
                monitor=monitor[0],
                mode=monitor[1],
                patience=cfg.family_patience,
                restore_best_weights=True,
            )
    elif head_epochs and hasattr(model, "stopping_heads"):
        stopper = head_stopping(model.stopping_heads(), stop_at=head_epochs)
    consumers = [*(callbacks if chief else ()), *([stopper] if stopper else [])]
    everyone = keras.callbacks.CallbackList([*producers, *consumers], model=model)

    history: dict[str, list[float]] = {}
    model.stop_training = False
    start = time.perf_counter()
    everyone.on_train_begin()
    for epoch in range(epochs):
        everyone.on_epoch_begin(epoch)
        loss_sum = errors = seen = 0.0
        for _ in range(steps_per_epoch):
            loss, sse, count = train_step(batches)
            loss_sum += float(loss) * float(count)
            errors += float(sse)
            seen += float(count)
        logs: dict[str, float] = {"loss": loss_sum / seen, "rmse": math.sqrt(errors / seen)}
        if val_inputs is not None:
            for callback in producers:
                callback.on_test_begin()
            logs.update(validate())
        for callback in producers:
            callback.on_epoch_end(epoch, logs)
        logs = agree(logs, across_workers, exclude=TIMING_KEYS)
        for callback in consumers:
            callback.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        if verbose and chief:
            print(
                f"Epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            )
        stop = across_workers(tf.constant([float(bool(model.stop_training))], tf.float64))
        if float(stop[0]) > 0:
            break
    everyone.on_train_end()
    seconds = time.perf_counter() - start

    epochs_run = len(history["loss"])
    best_epoch = best_epoch_of(history, monitor_of(cfg.model)) or epochs_run
    epochs_of = dict(getattr(stopper, "epochs", {}))
    speed = throughput(history, n_rows)
    return FitResult(model, history, best_epoch, epochs_run, seconds, n_rows, speed, epochs_of)


def agree(logs: dict[str, float], across_workers: Any, exclude: Sequence[str]) -> dict[str, float]:
    """``logs`` with every entry but ``exclude`` (each worker's own timings) averaged over the
    workers: identical inputs already give identical values; this makes it certain, so every
    worker takes the same early-stopping decision."""
    import tensorflow as tf

    keys = sorted(k for k in logs if k not in exclude)
    mean = across_workers(tf.constant([logs[k] for k in keys], tf.float64)).numpy()
    return {**logs, **{k: float(v) for k, v in zip(keys, mean, strict=True)}}


def rating_rmse(model: Any, frame: Any) -> float:
    """RMSE of the model's (clipped) predictions on a ratings frame, computed locally."""
    import tensorflow as tf

    errors = 0.0
    for start in range(0, len(frame), VALIDATION_BATCH):
        part = frame.iloc[start : start + VALIDATION_BATCH]
        x = {
            "user": tf.constant(part["user_idx"].to_numpy(np.int32)),
            "item": tf.constant(part["item_idx"].to_numpy(np.int32)),
        }
        y_pred = np.asarray(model(x, training=False)).reshape(-1)
        errors += float(np.sum((y_pred - part["rating"].to_numpy(np.float32)) ** 2))
    return math.sqrt(errors / max(len(frame), 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Train one worker's part from the command line and report it (tests, benchmarks).

    Each process writes ``<out>/<task>.json`` (replicas, history, best epoch, seconds, validation
    and test RMSE) and ``<out>/<task>.npz`` (its weights, to compare workers); ``<task>`` is
    ``worker-<index>``, ``chief`` or ``local`` (no ``TF_CONFIG``). With ``train.distribute:
    none`` it is Keras' ``model.fit`` path, for comparison.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", required=True, help="the preprocess stage's folder")
    parser.add_argument("--params", required=True, help="a params.yaml (its seed and train)")
    parser.add_argument("--out", required=True, help="folder for this worker's report")
    args = parser.parse_args(argv)

    from recommender.core.config import load_params
    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    params = load_params(args.params)
    cfg = params.train
    replicas = 1
    task = "local"
    if cfg.distribute != "none":
        replicas = strategy_for(cfg.distribute).num_replicas_in_sync
        if cfg.distribute == "multi_worker":
            spec = cluster_spec()["task"]
            task = "chief" if spec["type"] == "chief" else f"worker-{spec['index']}"

    from recommender.preprocess.processed import load_processed
    from recommender.training.fit import fit as fit_any

    processed = load_processed(args.data)
    result = fit_any(processed, cfg, params.seed, verbose=0)
    history = result.history
    report = {
        "task": task,
        "chief": is_chief(cfg.distribute),
        "distribute": cfg.distribute,
        "model": cfg.model,
        "num_replicas_in_sync": replicas,
        "train_rows": result.train_rows,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "ratings_per_second": result.ratings_per_second,
        "best_val_rmse": history["val_rmse"][result.best_epoch - 1]
        if "val_rmse" in history
        else None,
        "val_rmse": rating_rmse(result.model, processed.val) if len(processed.val) else None,
        "test_rmse": rating_rmse(result.model, processed.test),
        "history": history,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"{task}.npz", *result.model.get_weights())
    (out / f"{task}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    # ``python -m`` runs this file as ``__main__``, a second copy of the module beside the
    # ``recommender.training.distributed`` that ``fit`` imports, each with its own
    # ``_strategies``: this copy's main() and that copy's fit() would make a strategy each. A
    # second MultiWorkerMirroredStrategy gives the running gRPC server a new collective state
    # (TensorFlow's UpdateServerDef, with no barrier with the peers), so a peer's first collective
    # that reached the old one is lost and both workers wait in their first broadcast forever.
    # So main() runs from the imported module, whose cache fit() shares.
    from recommender.training.distributed import main as imported_main

    sys.exit(imported_main())
