"""Canary: Keras 3's ``model.fit`` under ``MultiWorkerMirroredStrategy`` (the cluster in
``TF_CONFIG``), on a small seeded rating matrix. Exits 0 once Keras fixes it; at our pins it
fails (keras-team/keras#20585, #20329), which ``test_distributed.py`` expects."""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf


def main() -> int:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow op
    from recommender.core.config import RatingScale
    from recommender.models import build_model, compile_model, make_dataset

    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 101, 4096), rng.integers(1, 81, 4096)
    ratings = rng.integers(1, 6, 4096).astype(np.float32)
    with strategy.scope():
        model = compile_model(
            build_model("biased_mf", 100, 80, RatingScale(), global_mean=3.0), 0.01
        )
    model.fit(make_dataset(users, items, ratings, batch_size=512), epochs=2, verbose=0)
    print(f"model.fit ran under MultiWorkerMirroredStrategy ({strategy.num_replicas_in_sync})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
