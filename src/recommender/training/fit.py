"""Fit one model family on the preprocessed data.

Early stopping watches the validation part carved from train (never the test split) and restores
the best epoch's weights. Seeds cover weights, dropout and the ``tf.data`` shuffle, and TensorFlow's
op determinism is on, so the same data and params give the same model on a CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recommender.core.config import TrainConfig
from recommender.preprocess.features import item_feature_matrix, user_feature_matrix
from recommender.preprocess.processed import Processed, with_val_in_train

#: Monitored for early stopping: RMSE on the validation part, without the L2 penalty that
#: ``val_loss`` includes.
MONITOR = "val_rmse"

#: Batches per call into the compiled train function (at most; an epoch of fewer runs in one
#: call). Removes Python's per-step overhead, which dominates for models this small, while a
#: large dataset's progress bar still moves within an epoch.
STEPS_PER_EXECUTION = 100


@dataclass
class FitResult:
    """A trained model and how training went."""

    model: Any
    #: Per-epoch ``loss``, ``rmse`` and, with a validation part, ``val_loss`` and ``val_rmse``.
    history: dict[str, list[float]] = field(default_factory=dict)
    #: 1-based epoch whose weights the model holds.
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    #: Ratings the model was trained on.
    train_rows: int = 0


def model_kwargs(processed: Processed, family: str) -> dict[str, Any]:
    """Data-derived constructor arguments: the feature tables (hybrid, ensemble) and the train
    ratings (autorec, ensemble); nothing for the other families."""
    from recommender.models import FAMILY_CLASSES

    cls = FAMILY_CLASSES[family]
    kwargs: dict[str, Any] = {}
    if cls.needs_ratings:
        train = processed.train
        kwargs["train_ratings"] = (
            train["user_idx"].to_numpy(),
            train["item_idx"].to_numpy(),
            train["rating"].to_numpy(),
        )
    if not cls.needs_features:
        return kwargs
    items = item_feature_matrix(
        processed.item_features, processed.feature_spec, len(processed.item_vocab)
    )
    users, cardinalities = user_feature_matrix(
        processed.user_features, processed.feature_spec, len(processed.user_vocab)
    )
    kwargs["item_features"] = items
    if cardinalities:
        kwargs.update(user_features=users, user_cardinalities=cardinalities)
    return kwargs


def build(processed: Processed, cfg: TrainConfig) -> Any:
    """Build and compile ``cfg.model`` sized by the vocabularies, with the train mean as offset."""
    from recommender.models import build_model, compile_model

    model = build_model(
        cfg.model,
        n_users=len(processed.user_vocab) - 1,
        n_items=len(processed.item_vocab) - 1,
        scale=processed.info.rating_scale,
        global_mean=float(processed.train["rating"].mean()),
        **cfg.hyper(),
        **model_kwargs(processed, cfg.model),
    )
    n_batches = max(1, math.ceil(len(processed.train) / cfg.batch_size))
    return compile_model(model, cfg.family_learning_rate, min(n_batches, STEPS_PER_EXECUTION))


def fit(
    processed: Processed,
    cfg: TrainConfig,
    seed: int,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 0,
) -> FitResult:
    """Train ``cfg.model`` on ``processed.train``, early-stopping on ``processed.val``.

    Args:
        processed: The preprocess stage's output.
        cfg: The ``train`` params section.
        seed: Seeds weights, dropout and shuffling.
        callbacks: Extra Keras callbacks (e.g. the MLflow epoch logger).
        verbose: Keras' ``verbose`` (1 = progress bar, 2 = a line per epoch, 0 = quiet).
    """
    import keras
    import tensorflow as tf

    from recommender.models import make_dataset

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    model = build(processed, cfg)
    train = processed.train
    train_ds = make_dataset(
        train["user_idx"].to_numpy(),
        train["item_idx"].to_numpy(),
        train["rating"].to_numpy(),
        batch_size=cfg.batch_size,
        seed=seed,
    )
    val = processed.val
    val_ds = None
    all_callbacks = list(callbacks)
    if len(val):
        val_ds = make_dataset(
            val["user_idx"].to_numpy(),
            val["item_idx"].to_numpy(),
            val["rating"].to_numpy(),
            batch_size=8192,
            shuffle=False,
        )
        all_callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=MONITOR, mode="min", patience=cfg.patience, restore_best_weights=True
            )
        )
    start = time.perf_counter()
    # shuffle=False: the tf.data pipeline already reshuffles (seeded) every epoch.
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        callbacks=all_callbacks,
        shuffle=False,
        verbose=verbose,
    ).history
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in history.items()}
    epochs_run = len(history["loss"])
    best_epoch = int(np.argmin(history[MONITOR])) + 1 if MONITOR in history else epochs_run
    return FitResult(model, history, best_epoch, epochs_run, seconds, len(train))


def refit(
    processed: Processed,
    cfg: TrainConfig,
    seed: int,
    epochs: int,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 0,
) -> FitResult:
    """Train ``cfg.model`` afresh on train + validation for ``epochs`` epochs (no early stopping).

    ``epochs`` is the best epoch a :func:`fit` with early stopping found: the validation part
    chose how long to train, and now adds its ratings to what the model learns from.
    """
    return fit(
        with_val_in_train(processed),
        cfg.model_copy(update={"epochs": epochs}),
        seed,
        callbacks,
        verbose,
    )
