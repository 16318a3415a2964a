"""Train the configured family from a processed split's Parquet files, a window at a time.

    python benchmarks/stream_epoch.py --data data/processed --out stream_epoch.json [--epochs 1]

What ``make bench-spark`` runs on the Spark output of 100M ratings, where the rows do not fit the
train stage's in-memory path: the same model (``train.model`` of params.yaml, built and compiled
as the train stage builds it) and the same training loop, fed by
:class:`recommender.dataset.stream.ParquetRatings` instead of arrays of every row. What a process
holds: the model and its optimizer slots, the two-tower's mask of each user's training positives
(one bit per user x item cell, read here positives only, a row group at a time), and one window
of rows. Writes epochs, rows, seconds, rating-epochs/s and the loss, RMSE of each epoch, and this
process's peak RSS (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.config import load_params
from recommender.core.schema import DatasetInfo
from recommender.core.telemetry import disable_telemetry
from recommender.dataset.stream import ParquetRatings
from recommender.dataset.vocabulary import load_vocabularies


def column_pass(stream: ParquetRatings, threshold: float) -> dict[str, Any]:
    """The mean rating, and every positive's (user, item), reading a row group at a time."""
    total, count = 0.0, 0
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    for piece in stream.pieces:
        u, i, r = stream.read(piece)
        total += float(r.sum(dtype=np.float64))
        count += len(r)
        keep = r >= threshold
        users.append(u[keep])
        items.append(i[keep])
    return {
        "mean": total / max(count, 1),
        "users": np.concatenate(users),
        "items": np.concatenate(items),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the preprocess stage's output folder")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--window-rows", type=int, default=4_000_000)
    args = parser.parse_args(argv)
    disable_telemetry()
    params = load_params(args.params)
    cfg = params.train
    data = Path(args.data)
    began = time.perf_counter()

    import keras
    import tensorflow as tf

    from recommender.models.factory import build_model, compile_model
    from recommender.training import loop

    keras.utils.set_random_seed(params.seed)
    users, items = load_vocabularies(data / "vocab.json")
    stream = ParquetRatings(data / "train.parquet", window_rows=args.window_rows)
    threshold = cfg.two_tower.relevance_threshold
    seen = column_pass(stream, threshold)
    model = build_model(
        cfg.model,
        n_users=len(users) - 1,
        n_items=len(items) - 1,
        scale=DatasetInfo.read(data / "dataset.json").rating_scale,
        global_mean=seen["mean"],
        **cfg.hyper(),
    )
    model = compile_model(model, cfg.family_learning_rate, optimizer=cfg.optimizer)
    if hasattr(model, "set_training_positives"):
        ones = np.full(len(seen["users"]), threshold, np.float32)
        model.set_training_positives(seen["users"], seen["items"], ones)
    del seen
    setup = time.perf_counter() - began
    history, seconds = loop.train(
        model, tf.distribute.get_strategy(), stream, None,
        epochs=args.epochs, batch_size=cfg.family_batch_size, seed=params.seed,
    )  # fmt: skip
    result = {
        "model": cfg.model,
        "rows": len(stream),
        "epochs": len(history["loss"]),
        "setup_seconds": round(setup, 1),
        "train_seconds": round(seconds, 1),
        "ratings_per_second": round(len(stream) * len(history["loss"]) / seconds),
        "loss": history["loss"],
        "rmse": history["rmse"],
        "window_rows": args.window_rows,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
