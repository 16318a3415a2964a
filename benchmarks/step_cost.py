"""Where a training step's time goes: input pipeline, forward + gradient, the update, Keras.

Issue 13 asks where an epoch's time goes and where the floor is. This splits one epoch of a
family into what each layer of the step adds, measured in one process, side by side:

- ``input``: the ``tf.data`` pipeline alone (``make_dataset``: shuffle, slice, gather), run to
  the end inside the runtime (``Dataset.reduce``), no model;
- ``forward + gradient``: the model's loss and its gradient for every batch, in one
  ``tf.function`` per epoch (no Python per step), nothing applied;
- ``+ SGD scatter``: the same, each embedding gradient applied as a plain row update
  (``scatter_sub`` of the batch's rows): the least an update can cost in TensorFlow;
- ``+ optimizer``: the same with the optimizer the train stage uses (Adam, or lazy Adam);
- ``model.fit``: what the train stage runs (``compile_model`` with ``steps_per_execution``,
  op determinism on, metrics), epoch 2 onwards;
- ``scatter kernel``: one ``scatter_sub`` of ``batch x dim`` rows into a table, alone.

Data: uniform random users and Zipf-distributed items in ML-1M's shape (6,040 x 3,706), so
the tables and the batches have the sizes of the 1M benchmark; the numbers are per step and
per rating-epoch, so the row count only sets how long it runs::

    python benchmarks/step_cost.py --out reports/step_cost.md --json reports/step_cost.json

Surprise's SVD does the same work (64 factors) in compiled SGD, ~0.35 us per rating-epoch on
this machine (``reports/bench_scale.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from scale import SIZES  # noqa: E402

from recommender.core.telemetry import disable_telemetry  # noqa: E402

N_USERS, N_ITEMS = SIZES["1m"].n_users, SIZES["1m"].n_items  # the tables of the 1M benchmark


def knobs(family: str) -> dict[str, Any]:
    """``family``'s hyperparameters as params.yaml gives them to the train stage."""
    from recommender.core.config import load_params

    train = load_params(HERE.parent / "params.yaml").train
    return train.model_copy(update={"model": family}).hyper()


def data(n: int, seed: int = 0) -> tuple[Any, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    users = rng.integers(1, N_USERS + 1, n)
    items = rng.zipf(1.3, n) % N_ITEMS + 1
    ratings = rng.integers(1, 6, n).astype(np.float32)
    return users, items, ratings


def build(family: str, users: Any, items: Any, ratings: Any, optimizer: str) -> Any:
    from recommender.core.schema import RatingScale
    from recommender.models import build_model, compile_model

    model = build_model(family, N_USERS, N_ITEMS, RatingScale(), 3.0, **knobs(family))
    if hasattr(model, "set_training_positives"):
        model.set_training_positives(users, items, ratings)
    return compile_model(model, 0.003, 100, optimizer)


def timed(fn: Any, repeats: int = 2) -> tuple[float, float]:
    """Wall and CPU seconds of the best of ``repeats`` calls, after one warm-up call (tracing).

    CPU time (this process, all threads) moves less than wall time on a shared machine."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def measure(family: str, n: int, batch: int, optimizer: str) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from recommender.models import make_dataset

    tf.get_logger().setLevel("ERROR")  # one tf.function per variant: retracing is the point
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()  # as the train stage runs
    users, items, ratings = data(n)
    ds = make_dataset(users, items, ratings, batch_size=batch, seed=0)
    model = build(family, users, items, ratings, optimizer)
    tables = [w for w in model.trainable_weights if len(w.shape) == 2 and w.shape[0] > 1]

    def epoch_fn(update: str) -> Any:
        @tf.function
        def run() -> Any:
            total = tf.constant(0.0)
            for x, y in ds:
                with tf.GradientTape() as tape:
                    pred = model(x, training=True)
                    loss = model.compute_loss(x, y, pred) + tf.add_n(model.losses or [0.0])
                if update != "none":
                    grads = tape.gradient(loss, model.trainable_weights)
                    if update == "sgd":
                        for g, w in zip(grads, model.trainable_weights, strict=True):
                            if isinstance(g, tf.IndexedSlices):
                                w.value.scatter_sub(tf.IndexedSlices(1e-3 * g.values, g.indices))
                            elif g is not None:
                                w.assign_sub(1e-3 * g)
                    elif update == "optimizer":
                        model.optimizer.apply(grads, model.trainable_weights)
                    else:  # "gradient": computed and summed, so it is not pruned away
                        loss += tf.add_n([tf.reduce_sum(tf.convert_to_tensor(g)) for g in grads])
                total += loss
            return total

        return run

    steps = -(-n // batch)
    seconds = {
        "input": timed(lambda: ds.reduce(0, lambda s, _: s + 1)),
        "forward": timed(epoch_fn("none")),
        "forward + gradient": timed(epoch_fn("gradient")),
        "+ SGD scatter": timed(epoch_fn("sgd")),
        f"+ {optimizer}": timed(epoch_fn("optimizer")),
    }
    fit_model = build(family, users, items, ratings, optimizer)
    fit_model.fit(ds, epochs=1, verbose=0)  # tracing, as the benchmark's epoch 1
    seconds["model.fit (the train stage)"] = timed(lambda: fit_model.fit(ds, epochs=1, verbose=0))

    table = tables[0]
    rows = tf.random.stateless_uniform((steps, batch), (0, 1), 1, table.shape[0], tf.int32)
    values = tf.zeros((batch, table.shape[1]))

    @tf.function
    def scatters() -> Any:
        for b in tf.range(steps):
            table.value.scatter_sub(tf.IndexedSlices(values, rows[b]))
        return 0

    seconds[f"scatter kernel ({batch} x {table.shape[1]} rows, 1 table)"] = timed(scatters)
    return {
        "family": family,
        "rows": n,
        "batch": batch,
        "steps": steps,
        "optimizer": optimizer,
        "tables": [list(map(int, t.shape)) for t in tables],
        "seconds_per_epoch": seconds,
    }


def markdown(results: list[dict[str, Any]], command: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Where a training step's time goes",
        "",
        f"Reproduce: `{command}`. Generated {now} (load average before: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}); python {platform.python_version()}.",
        "",
        f"One epoch of random ratings in ML-1M's shape ({N_USERS:,} users x {N_ITEMS:,} items, "
        "Zipf items), each row adding one layer of the step (see the module docstring of "
        "`benchmarks/step_cost.py`). ms/step and rating-epochs per second; best of 2 epochs after "
        "one that traces.",
        "",
    ]
    for r in results:
        lines += [
            f"## {r['family']}, batch {r['batch']:,}, {r['optimizer']} "
            f"({r['rows']:,} rows, {r['steps']} steps; tables {r['tables']})",
            "",
            "| what runs | wall s/epoch | ms/step | rating-epochs/s | CPU s/epoch | CPU ms/step |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for what, (wall, cpu) in r["seconds_per_epoch"].items():
            lines.append(
                f"| {what} | {wall:.2f} | {1000 * wall / r['steps']:.2f} | "
                f"{r['rows'] / wall:,.0f} | {cpu:.2f} | {1000 * cpu / r['steps']:.2f} |"
            )
        kernel = next(v for k, v in r["seconds_per_epoch"].items() if k.startswith("scatter"))
        per_row = 1e6 * kernel[0] / (r["steps"] * r["batch"])
        lines += [
            "",
            f"The scatter kernel writes one {r['tables'][0][1]}-float row in {per_row:.2f} us "
            "(wall). An Adam step writes 3 rows (weights, 2 slots) of each table a rating "
            "touches.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--families", default="biased_mf,two_tower")
    parser.add_argument("--batches", default="1024,4096")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "lazy_adam"])
    parser.add_argument("--out", default="reports/step_cost.md")
    parser.add_argument("--json", default="reports/step_cost.json")
    args = parser.parse_args(argv)
    disable_telemetry()
    results = []
    for family in args.families.split(","):
        for batch in map(int, args.batches.split(",")):
            results.append(measure(family, args.rows, batch, args.optimizer))
            print(json.dumps(results[-1]), flush=True)
    command = "python benchmarks/step_cost.py " + " ".join(argv or sys.argv[1:])
    Path(args.out).write_text(markdown(results, command.strip()) + "\n")
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
