"""Where a step of the real training loop goes: the default with one part changed at a time.

``benchmarks/step_cost.py`` splits a step into layers it builds itself; this times the train
stage's own step (``training/loop.py`` over a family built by ``models.build_model`` with
params.yaml's knobs and compiled as the stage compiles it) on random ratings in a real set's
shape, with one part changed per row, side by side in one process:

- ``two_tower``: the default as the train stage runs it (lazy Adam, sampled softmax, mask);
- ``two_tower, sparse SGD``: Keras' SGD instead of lazy Adam (a plain row update: what the
  optimizer's moments cost);
- ``two_tower, no mask``: users' other positives not masked out of the sampled softmax;
- ``two_tower, 128 negatives``: half the shared negatives;
- ``biased_mf`` and ``biased_mf, sparse SGD``: the rating head alone.

Each row trains 4 epochs over ``--rows`` ratings (uniform users, Zipf items, the size's tables)
and reports the median of epochs 2-4 (the first traces)::

    python benchmarks/step_ablation.py --size 1m --out reports/step_ablation_1m.md

The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from scale import SIZES  # noqa: E402

from recommender.core.telemetry import disable_telemetry  # noqa: E402

#: (label, family, optimizer, two_tower knobs, mask of other positives)
WAYS: tuple[tuple[str, str, str, dict[str, Any], bool], ...] = (
    ("two_tower", "two_tower", "lazy_adam", {}, True),
    ("two_tower, sparse SGD", "two_tower", "sgd", {}, True),
    ("two_tower, no mask", "two_tower", "lazy_adam", {}, False),
    ("two_tower, 128 negatives", "two_tower", "lazy_adam", {"negatives": 128}, True),
    ("biased_mf", "biased_mf", "lazy_adam", {}, False),
    ("biased_mf, sparse SGD", "biased_mf", "sgd", {}, False),
)
EPOCHS = 4


def ratings(n_users: int, n_items: int, n: int, seed: int = 0) -> Any:
    """``n`` random ratings: uniform users, Zipf(0.8) items, rounded normal ratings."""
    import numpy as np

    from recommender.training import loop

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    users = rng.integers(1, n_users + 1, n).astype(np.int32)
    items = (rng.choice(n_items, n, p=popularity / popularity.sum()) + 1).astype(np.int32)
    stars = np.clip(np.round(rng.normal(3.6, 1.0, n)), 1, 5).astype(np.float32)
    return loop.Ratings(users, items, stars)


def measure(way: tuple[str, str, str, dict[str, Any], bool], size: str, rows: Any) -> float:
    """Median seconds of epochs 2..4 of ``way`` over ``rows``."""
    import keras
    import tensorflow as tf

    from recommender.core.config import RatingScale, load_params
    from recommender.models import build_model, compile_model
    from recommender.training import loop
    from recommender.training.fit import epoch_timer

    label, family, optimizer, overrides, masked = way
    train = load_params(HERE.parent / "params.yaml").train.model_copy(update={"model": family})
    keras.utils.set_random_seed(0)
    shape = SIZES[size]
    hyper = {**train.hyper(), **overrides}
    model = build_model(family, shape.n_users, shape.n_items, RatingScale(), 3.6, **hyper)
    if optimizer == "sgd":
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=False)
    else:
        compile_model(model, train.family_learning_rate, optimizer=optimizer)
    if hasattr(model, "set_training_positives"):
        model.set_training_positives(*rows.columns())
        if not masked:
            model._positives = None  # the loss then skips the mask
    history, _ = loop.train(
        model,
        tf.distribute.get_strategy(),
        rows,
        None,
        epochs=EPOCHS,
        batch_size=train.family_batch_size,
        seed=0,
        producers=[epoch_timer(len(rows))],
        user_block=train.user_block,  # as the train stage batches them
    )
    seconds = history["epoch_seconds"]
    print(f"[step_ablation] {label}: epochs {', '.join(f'{s:.2f}' for s in seconds)} s",
          file=sys.stderr)  # fmt: skip
    return statistics.median(seconds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1m", choices=("1m", "10m", "25m"))
    parser.add_argument("--rows", type=int, default=720_000, help="ratings per epoch")
    parser.add_argument("--out", required=True, help="Markdown report")
    args = parser.parse_args(argv)
    disable_telemetry()
    load_before = os.getloadavg()
    shape = SIZES[args.size]
    rows = ratings(shape.n_users, shape.n_items, args.rows)
    batch = 4096
    lines = []
    for way in WAYS:
        median = measure(way, args.size, rows)
        steps = -(-args.rows // batch)
        lines.append(
            f"| {way[0]} | {median:.2f} | {median / steps * 1e3:.1f} | {args.rows / median:,.0f} |"
        )
    load_after = os.getloadavg()
    command = (
        f"python benchmarks/step_ablation.py --size {args.size} --rows {args.rows} --out {args.out}"
    )
    busy = (
        " **Busy machine (above 1.5 at the start): the times overstate.**"
        if load_before[0] > 1.5
        else ""
    )
    report = "\n".join(
        [
            f"# Where a step of the training loop goes ({args.size.upper()} shape)",
            "",
            f"Reproduce: `{command}`. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Load "
            f"average at the start {load_before[0]:.2f}, at the end {load_after[0]:.2f} (this "
            f"run adds about 2).{busy}",
            "",
            f"{args.rows:,} random ratings (uniform users, Zipf items) in {shape.label}'s tables "
            f"({shape.n_users:,} users x {shape.n_items:,} items), batch {batch}, params.yaml's "
            f"knobs; the loop of the train stage, {EPOCHS} epochs, median of epochs 2-{EPOCHS}. "
            "Each row changes one thing against the first; the differences are what that part "
            "costs (see the module docstring of `benchmarks/step_ablation.py`).",
            "",
            "| what runs | s/epoch | ms/step | rating-epochs/s |",
            "|---|---:|---:|---:|",
            *lines,
            "",
        ]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
