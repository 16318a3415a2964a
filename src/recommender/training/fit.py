"""Fit one model family on the preprocessed data.

Early stopping watches the validation part carved from train (never the test split) and restores
the best epoch's weights: its RMSE for rating families, its NDCG@10 for families trained to rank
(:attr:`~recommender.models.RatingModel.ranking_trained`), computed after each epoch through the
same top-K path evaluation uses. Seeds cover weights, dropout and the ``tf.data`` shuffle, and
TensorFlow's op determinism is on, so the same data and params give the same model on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recommender.core.config import TrainConfig
from recommender.dataset.features import item_feature_matrix, user_feature_matrix
from recommender.dataset.processed import Processed, with_val_in_train
from recommender.training import loop
from recommender.training.strategy import is_chief, strategy_for

#: Monitored for early stopping, with the better direction: RMSE on the validation part (without
#: the L2 penalty that ``val_loss`` includes), or NDCG@10 for families trained to rank.
RATING_MONITOR = ("val_rmse", "min")
RANKING_MONITOR = ("val_ndcg_at_10", "max")
#: The cut-off of the validation NDCG that ranking families early-stop and are tuned on.
RANKING_K = 10
#: Validation users ranked after each epoch, at most (a seeded sample beyond): ranking every
#: user against the catalog each epoch would cost ML-25M's 162k x 59k scores an epoch, while
#: 20k users already pin NDCG@10 to about +-0.002.
VALIDATION_MAX_USERS = 20_000


def monitor_of(family: str) -> tuple[str, str]:
    """``(metric, "min" | "max")`` that early stopping and tuning watch for ``family``."""
    from recommender.models.factory import FAMILY_CLASSES

    return RANKING_MONITOR if FAMILY_CLASSES[family].ranking_trained else RATING_MONITOR


def best_epoch_of(history: dict[str, list[float]], monitor: tuple[str, str]) -> int | None:
    """1-based epoch with the best monitored value (the first among ties); None if unmonitored."""
    values = history.get(monitor[0])
    if not values:
        return None
    best = np.argmax(values) if monitor[1] == "max" else np.argmin(values)
    return int(best) + 1


def validation_ranking(processed: Processed, threshold: float, k: int = RANKING_K) -> Any:
    """A Keras callback adding ``val_ndcg_at_<k>`` to each epoch's logs (before early stopping).

    The model's retrieval factors rank every validation user's unseen items (train items
    masked), through :func:`recommender.scoring.ranking.rank`; relevant = their validation items
    rated at least ``threshold``. Beyond :data:`VALIDATION_MAX_USERS` users, the same seeded
    sample of them every epoch.
    """
    import keras

    from recommender.scoring import metrics
    from recommender.scoring.ranking import SeenItems, rank

    train, val = processed.train, processed.val
    n_users = len(processed.user_vocab) - 1
    seen = SeenItems(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), n_users)
    users = np.unique(val["user_idx"].to_numpy())
    users = users[users > 0]
    if users.size > VALIDATION_MAX_USERS:
        pick = np.random.default_rng(0).choice(users.size, VALIDATION_MAX_USERS, replace=False)
        users = users[np.sort(pick)]
    relevant = metrics.relevant_sets(val, users, threshold)  # the rule evaluate measures by
    n_cols = len(processed.item_vocab)
    name = f"val_ndcg_at_{k}"

    class ValidationRanking(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            factors = self.model.retrieval_factors()
            top = rank(factors.score, users, k, n_cols, seen=seen).items
            if logs is not None:
                logs[name] = metrics.ndcg_at_k(top, relevant, k)

    return ValidationRanking()


def head_stopping(
    heads: dict[str, tuple[tuple[str, str, float], list[Any]]],
    patience: int | None = None,
    stop_at: dict[str, int] | None = None,
) -> Any:
    """Early stopping for a model whose parts answer different questions, each on its metric.

    ``two_tower``'s towers rank and its rating head rates; their best epochs differ. Each head
    keeps the weights of its own best epoch on its own validation metric, and training stops
    once the first head (the one the model is for: ranking) has gone ``patience`` epochs without
    improving: the others keep their best so far. Waiting for every head let the rating head's
    RMSE creep on to the epoch cap: at ML-1M's shape the towers' best epoch was 10, and 35 more
    epochs bought the rating head 0.8% of validation RMSE (0.7234 at epoch 18, 0.7174 at 45).
    With ``stop_at`` instead (a refit), each head keeps its weights from that epoch.

    Args:
        heads: name -> ((metric, "min" | "max", least change that counts as better), the
            head's variables).
        patience: Epochs without improvement, per head (fit with a validation part).
        stop_at: name -> the 1-based epoch whose weights the head keeps (refit).
    """
    import keras

    class HeadStopping(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best: dict[str, float] = {}
            self.epochs: dict[str, int] = {}
            self.saved: dict[str, list[Any]] = {}

        def _save(self, name: str, epoch: int) -> None:
            self.saved[name] = [v.numpy().copy() for v in heads[name][1]]
            self.epochs[name] = epoch

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            done = epoch + 1
            if stop_at is not None:
                for name, at in stop_at.items():
                    if done == at:
                        self._save(name, done)
                return
            logs = logs or {}
            waiting = []  # in the heads' order: the first decides
            for name, ((metric, mode, min_delta), _) in heads.items():
                value = logs.get(metric)
                if value is None:
                    continue
                best = self.best.get(name)
                if best is None or (value - best if mode == "max" else best - value) > min_delta:
                    self.best[name] = float(value)
                    self._save(name, done)
                waiting.append(done - self.epochs.get(name, done) >= (patience or 0))
            if waiting and waiting[0]:
                self.model.stop_training = True

        def on_train_end(self, logs: dict | None = None) -> None:
            for name, values in self.saved.items():
                for variable, value in zip(heads[name][1], values, strict=True):
                    variable.assign(value)

    return HeadStopping()


def epoch_timer(n_rows: int) -> Any:
    """A Keras callback adding ``epoch_seconds`` (the training pass, validation excluded) and
    ``ratings_per_second`` (rating-epochs per second) to each epoch's logs, so the progress line
    shows the speed and the history and MLflow keep it."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()
            self.seconds: float | None = None

        def on_test_begin(self, logs: dict | None = None) -> None:
            if self.seconds is None:  # validation starts: the training pass is over
                self.seconds = time.perf_counter() - self.start

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds = self.seconds or time.perf_counter() - self.start
            if logs is not None:
                logs["epoch_seconds"] = seconds
                logs["ratings_per_second"] = n_rows / max(seconds, 1e-9)

    return EpochTimer()


def throughput(history: dict[str, list[float]], n_rows: int) -> float | None:
    """Rating-epochs per second over the epochs after the first (which traces the graph)."""
    seconds = history.get("epoch_seconds", [])[1:]
    return n_rows * len(seconds) / sum(seconds) if seconds and sum(seconds) > 0 else None


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
    #: Rating-epochs per second of the training passes after the first (None: one epoch).
    ratings_per_second: float | None = None
    #: For a model whose parts stop on their own metrics (:meth:`stopping_heads`), the 1-based
    #: epoch each part's weights come from (a refit replays them); empty otherwise.
    head_epochs: dict[str, int] = field(default_factory=dict)


def model_kwargs(processed: Processed, family: str) -> dict[str, Any]:
    """Data-derived constructor arguments: the feature tables (hybrid, ensemble) and the train
    ratings (autorec, ensemble); nothing for the other families."""
    from recommender.models.factory import FAMILY_CLASSES

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
    from recommender.models.factory import build_model, compile_model

    model = build_model(
        cfg.model,
        n_users=len(processed.user_vocab) - 1,
        n_items=len(processed.item_vocab) - 1,
        scale=processed.info.rating_scale,
        global_mean=float(processed.train["rating"].mean()),
        **cfg.hyper(),
        **model_kwargs(processed, cfg.model),
    )
    return compile_model(model, cfg.family_learning_rate, optimizer=cfg.optimizer)


def fit(
    processed: Processed,
    cfg: TrainConfig,
    seed: int,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 0,
    head_epochs: dict[str, int] | None = None,
    model: Any = None,
) -> FitResult:
    """Train ``cfg.model`` on ``processed.train``, early-stopping on ``processed.val``.

    Args:
        processed: The preprocess stage's output.
        cfg: The ``train`` params section.
        seed: Seeds weights, dropout and shuffling.
        callbacks: Extra Keras callbacks (e.g. the MLflow epoch logger).
        verbose: Keras' ``verbose`` (1 = progress bar, 2 = a line per epoch, 0 = quiet).
        head_epochs: Without a validation part, the epoch each head of a multi-head model keeps
            (what a :func:`fit` with one chose; see :func:`head_stopping`).
        model: Continue training this model (its weights and optimizer state) instead of
            building a new one (a refit from the fitted model).
    """
    strategy = strategy_for(cfg.distribute)  # first: before any TensorFlow op
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if model is None:
        with strategy.scope():
            model = build(processed, cfg)
            model.optimizer.build(model.trainable_variables)
    train, val = processed.train, processed.val
    if hasattr(model, "set_training_positives"):  # masked out of each other's softmax
        model.set_training_positives(
            train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train["rating"].to_numpy()
        )
    # Producers add to each epoch's logs (the timer first: it stops the clock as validation
    # starts); consumers read them once the workers agree. Only the chief logs.
    producers: list[Any] = [epoch_timer(len(train))]
    stopper: Any = None
    if len(val):
        monitor = monitor_of(cfg.model)
        if monitor == RANKING_MONITOR:
            producers.append(validation_ranking(processed, model.relevance_threshold))
        if hasattr(model, "stopping_heads"):
            stopper = head_stopping(model.stopping_heads(), patience=cfg.family_patience)
        else:
            stopper = keras.callbacks.EarlyStopping(
                monitor=monitor[0],
                mode=monitor[1],
                patience=cfg.family_patience,
                restore_best_weights=True,
            )
    elif head_epochs and hasattr(model, "stopping_heads"):
        stopper = head_stopping(model.stopping_heads(), stop_at=head_epochs)
    chief = is_chief(cfg.distribute)
    history, seconds = loop.train(
        model,
        strategy,
        loop.Ratings.of(train),
        loop.Ratings.of(val) if len(val) else None,
        epochs=cfg.family_epochs,
        batch_size=cfg.family_batch_size,
        seed=seed,
        producers=producers,
        consumers=[*(callbacks if chief else ()), *([stopper] if stopper else [])],
        verbose=verbose if chief else 0,
        across_workers=cfg.distribute == "multi_worker",
        user_block=cfg.user_block,
    )
    epochs_run = len(history["loss"])
    epochs_of = dict(getattr(stopper, "epochs", {}))
    # Heads that stop apart keep the epoch of their last change beyond the least that counts.
    best_epoch = epochs_of.get("ranking") or best_epoch_of(history, monitor_of(cfg.model))
    speed = throughput(history, len(train))
    return FitResult(
        model, history, best_epoch or epochs_run, epochs_run, seconds, len(train), speed, epochs_of
    )


def refit(
    processed: Processed,
    cfg: TrainConfig,
    seed: int,
    chosen: FitResult | int,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 0,
) -> FitResult:
    """Train ``cfg.model`` on train + validation for what a :func:`fit` chose.

    The validation part chose how long to train (``chosen``: the early-stopped fit, or its best
    epoch count), and now adds its ratings to what the model learns from. ``cfg.refit_from``:

    - ``scratch``: a new model for the chosen epochs; a model with heads that stopped apart
      keeps each head's weights from its own epoch.
    - ``fitted``: the early-stopped model goes on from its best weights and optimizer state,
      for the chosen epochs times the validation part's size relative to train times
      ``cfg.refit_epochs_factor`` (at least one epoch; per head, for a model whose heads
      stopped apart): the validation ratings join without the work being done again.
    """
    both = with_val_in_train(processed)
    if cfg.refit_from == "fitted" and isinstance(chosen, FitResult):
        share = cfg.refit_epochs_factor * len(processed.val) / max(len(processed.train), 1)
        more = {head: max(1, round(at * share)) for head, at in chosen.head_epochs.items()}
        epochs = max(more.values()) if more else max(1, round(chosen.best_epoch * share))
        return fit(
            both,
            cfg.with_epochs(epochs),
            seed,
            callbacks,
            verbose,
            head_epochs=more or None,
            model=chosen.model,
        )
    if isinstance(chosen, int):
        epochs, heads = chosen, None
    else:
        heads = chosen.head_epochs or None
        epochs = max(heads.values()) if heads else chosen.best_epoch
    return fit(both, cfg.with_epochs(epochs), seed, callbacks, verbose, head_epochs=heads)
