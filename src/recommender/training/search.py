"""Pick the chosen family's most telling knob on the validation part, within a time budget.

The families' knobs were tuned once, on ML-100K, and the L2 that suits ML-100K need not suit the
user's data; EASE, by contrast, picks its lambda on each dataset's validation part. So before the
model is kept, the train stage walks ``train.search.knob`` from the section's value on a log
scale: up by ``train.search.step`` while the validation metric early stopping watches (NDCG@10
for families trained to rank, else RMSE) improves, then down if the first step up did not help.
Every trial is an early-stopped :func:`~recommender.training.fit.fit` with the same seed (the
same start and the same batches, so trials differ only by the knob), and a trial that trails
the best one by more than :data:`PRUNE_MARGIN` at the same epoch stops there.

The walk ends when a direction stops improving or when the next trial, judged by the longest
so far, would overrun ``train.search.budget_seconds`` (the first fit, with the section's own
value, does not count: it is the fit a stage without a search runs). Its best trial is the model
the refit continues. Under an active MLflow run each trial is a nested run with its curves.

Example:
    >>> found = search(processed, params.train, seed=42)
    >>> found.chosen, found.fitted.best_epoch
    (0.15, 14)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from recommender.core.config import TrainConfig
from recommender.dataset.processed import Processed
from recommender.models.two_tower import NDCG_MIN_DELTA, RMSE_MIN_DELTA
from recommender.training.fit import FitResult, fit, monitor_of

log = logging.getLogger("recommender")

#: A trial stops once its best so far trails the best trial's best by the same epoch by more
#: than this share (NDCG: 20% lower; RMSE: 2% higher), after :data:`PRUNE_WARMUP` epochs. A
#: stronger L2 rises more slowly and may still end higher: on ML-100K u1, l2 0.06 sat 5% below
#: 0.03 at epoch 3 and ended 5% above it, while 0.2 sat 19% below 0.1 at epoch 3, 28% at 4,
#: and never caught up.
PRUNE_MARGIN = {"max": 0.20, "min": 0.02}
PRUNE_WARMUP = 3
#: A trial beats the best only by more than early stopping's least change: on a plateau (an L2
#: so strong that every vector is zero) the walk would otherwise follow the noise.
MIN_GAIN = {"max": NDCG_MIN_DELTA, "min": RMSE_MIN_DELTA}


@dataclass
class Trial:
    """One fit of the walk: the knob's value and how it did on the validation part."""

    value: float
    #: Best value of the watched validation metric (``SearchResult.metric``).
    score: float
    best_epoch: int
    epochs_run: int
    seconds: float
    #: Stopped early for trailing the best trial (its score is what it reached).
    pruned: bool = False


@dataclass
class SearchResult:
    """What the walk chose: the config with the chosen value and its early-stopped fit."""

    cfg: TrainConfig
    fitted: FitResult
    #: The knob walked; None when no search ran (``ended`` says why).
    knob: str | None
    metric: str
    trials: list[Trial] = field(default_factory=list)
    #: Why the walk stopped (or did not start), for the log and MLflow.
    ended: str = ""
    #: Seconds spent on trials after the first fit (the budget's share).
    seconds: float = 0.0

    @property
    def chosen(self) -> float | None:
        """The knob's chosen value (None without a search)."""
        return getattr(getattr(self.cfg, self.cfg.model), self.knob) if self.knob else None

    def to_json(self) -> dict[str, Any]:
        """The walk as JSON: knob, chosen value, metric, why it ended, every trial."""
        return {
            "knob": self.knob,
            "chosen": self.chosen,
            "metric": self.metric,
            "ended": self.ended,
            "seconds": round(self.seconds, 3),
            "trials": [vars(t) for t in self.trials],
        }


def search(
    processed: Processed,
    cfg: TrainConfig,
    seed: int,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 0,
) -> SearchResult:
    """Fit ``cfg.model``, walking ``cfg.search.knob`` on the validation part within its budget.

    Args:
        processed: The preprocess stage's output; without a validation part nothing is searched.
        cfg: The ``train`` section; ``cfg.search`` drives the walk.
        seed: The seed of every trial (the same for all: a paired comparison).
        callbacks: Keras callbacks of the fit when no search runs (the run's epoch logger);
            trials log to nested MLflow runs of their own instead.
        verbose: Keras' verbosity for every fit.

    Returns:
        The chosen config and its fit (the section's own when nothing beat it).
    """
    metric, mode = monitor_of(cfg.model)
    why_not = _why_no_search(processed, cfg)
    if why_not is not None:
        fitted = fit(processed, cfg, seed, callbacks, verbose)
        return SearchResult(cfg, fitted, None, metric, ended=why_not)
    knob = cfg.search.knob
    start = getattr(getattr(cfg, cfg.model), knob)
    walk = _Walk(processed, cfg, seed, verbose, metric, mode)
    walk.run(start)
    ended, spent = _walk_both_ways(walk, start, cfg.search.step, cfg.search.budget_seconds)
    assert walk.best_fit is not None  # the first trial always runs
    log.info(
        "search %s: chose %g of %d trial(s) (%s %.4f; %s; %.0f s beyond the first fit)",
        knob,
        getattr(getattr(walk.best_cfg, walk.best_cfg.model), knob),
        len(walk.trials),
        metric,
        walk.best_trial.score if walk.best_trial else float("nan"),
        ended,
        spent,
    )
    return SearchResult(walk.best_cfg, walk.best_fit, knob, metric, walk.trials, ended, spent)


class _Walk:
    """The trials so far, and the best of them: the first until an unpruned one beats it by
    more than :data:`MIN_GAIN`."""

    def __init__(
        self,
        processed: Processed,
        cfg: TrainConfig,
        seed: int,
        verbose: int | str,
        metric: str,
        mode: str,
    ) -> None:
        self.processed, self.cfg, self.seed, self.verbose = processed, cfg, seed, verbose
        self.knob, self.metric, self.mode = cfg.search.knob, metric, mode
        self.best_cfg: TrainConfig = cfg
        self.best_fit: FitResult | None = None
        self.best_trial: Trial | None = None
        self.trials: list[Trial] = []
        self.tried: set[float] = set()

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` by more than the least gain."""
        gain = MIN_GAIN[self.mode]
        return a > b + gain if self.mode == "max" else a < b - gain

    def run(self, value: float) -> Trial:
        """Fit with the knob at ``value`` (pruned when it trails the best fit's curve)."""
        knob, metric, mode = self.knob, self.metric, self.mode
        trial_cfg = self.cfg.with_knob(knob, value)
        best_curve = self.best_fit.history.get(metric, []) if self.best_fit else []
        pruner = _Pruner(metric, mode, best_curve)
        with _TrialRun(knob, value) as trial_run:
            start_s = time.perf_counter()
            result = fit(
                self.processed,
                trial_cfg,
                self.seed,
                [*trial_run.callbacks, pruner.callback()],
                self.verbose,
            )
            seconds = time.perf_counter() - start_s
            values = result.history.get(metric) or [float("nan")]
            score = max(values) if mode == "max" else min(values)
            trial = Trial(value, score, result.best_epoch, result.epochs_run, seconds, pruner.fired)
            trial_run.record(trial, metric)
        self.trials.append(trial)
        self.tried.add(value)
        log.info(
            "search %s=%g: %s %.4f at epoch %d of %d (%.1f s)%s",
            knob,
            value,
            metric,
            score,
            trial.best_epoch,
            trial.epochs_run,
            seconds,
            ", pruned: trailing the best trial" if trial.pruned else "",
        )
        if self.best_trial is None or (
            not trial.pruned and self.better(score, self.best_trial.score)
        ):
            self.best_cfg, self.best_fit, self.best_trial = trial_cfg, result, trial
        return trial


def _walk_both_ways(walk: _Walk, start: float, step: float, budget: float) -> tuple[str, float]:
    """Step up from ``start`` while each step improves, then down if up did not help, while
    the longest trial yet still fits in what is left of ``budget``.

    Returns:
        Why the walk ended, and the seconds its trials took (the first fit's not counted).
    """
    spent = 0.0
    ended, out_of_budget = "no further step improved", False
    for direction in (step, 1 / step):
        value = start
        while not out_of_budget:
            value = _next_value(value, direction, start)
            if value in walk.tried:
                break
            longest = max(t.seconds for t in walk.trials)
            out_of_budget = spent + longest > budget
            if out_of_budget:
                ended = (
                    f"budget: a trial takes up to {longest:.0f} s, {max(budget - spent, 0):.0f} s "
                    f"of train.search.budget_seconds ({budget:g}) left"
                )
                break
            before = walk.best_trial
            spent += walk.run(value).seconds
            if walk.best_trial is before:  # no better: this direction is done
                break
        if out_of_budget or (walk.best_trial is not None and walk.best_trial.value != start):
            break  # out of time, or up helped: no need to go down
    return ended, spent


def _why_no_search(processed: Processed, cfg: TrainConfig) -> str | None:
    """Why ``cfg`` trains once without a walk, or None when it walks."""
    if cfg.search.budget_seconds <= 0:
        return "off (train.search.budget_seconds: 0)"
    if len(processed.val) == 0:
        return "no validation part to score trials on"
    if cfg.distribute == "multi_worker":  # the followers replay one fit, not a walk
        return "not under distribute: multi_worker"
    if cfg.search.knob not in cfg.searchable_knobs():
        return f"train.{cfg.model} has no {cfg.search.knob} (train.search.knob) to walk"
    if not getattr(getattr(cfg, cfg.model), cfg.search.knob):
        return f"train.{cfg.model}.{cfg.search.knob} is 0: nothing to scale"
    return None


def _next_value(value: float, factor: float, like: float) -> float:
    """``value * factor``, an int again for an integer knob (at least one away from ``value``)."""
    moved = value * factor
    if isinstance(like, int):
        rounded = round(moved)
        if rounded == value:
            rounded = round(value) + (1 if factor > 1 else -1)
        return max(rounded, 1)
    return float(f"{moved:.4g}")  # four digits: what a params file would say


class _Pruner:
    """Stops a trial whose best so far trails the best trial's at the same epoch by more than
    :data:`PRUNE_MARGIN`, after :data:`PRUNE_WARMUP` epochs."""

    def __init__(self, metric: str, mode: str, leader: list[float]) -> None:
        self.metric, self.mode, self.fired = metric, mode, False
        pick = max if mode == "max" else min
        # The leader's best by each epoch; past its last epoch, its best overall.
        self.bests = [pick(leader[: i + 1]) for i in range(len(leader))]

    def trails(self, epoch: int, best: float) -> bool:
        if not self.bests or epoch < PRUNE_WARMUP:
            return False
        lead = self.bests[min(epoch, len(self.bests)) - 1]
        margin = PRUNE_MARGIN[self.mode]
        return best < lead * (1 - margin) if self.mode == "max" else best > lead * (1 + margin)

    def callback(self) -> Any:
        import keras

        pruner = self

        class Prune(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seen: list[float] = []

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if not logs or pruner.metric not in logs:
                    return
                self.seen.append(float(logs[pruner.metric]))
                best = max(self.seen) if pruner.mode == "max" else min(self.seen)
                if pruner.trails(epoch + 1, best):
                    pruner.fired = True
                    self.model.stop_training = True

        return Prune()


class _TrialRun:
    """A nested MLflow run for one trial, under the active run (nothing without one): the UI
    lists the trials under the train run, their curves side by side."""

    def __init__(self, knob: str, value: float) -> None:
        self.knob, self.value = knob, value
        self.run: Any = None
        #: The trial's epoch logger (none without an MLflow run).
        self.callbacks: list[Any] = []

    def __enter__(self) -> _TrialRun:
        import mlflow

        from recommender import tracking

        if mlflow.active_run() is not None:
            name = f"search {self.knob}={self.value:g}"
            self.run = mlflow.start_run(run_name=name, nested=True, tags=tracking.tag_owner())
            mlflow.log_param(f"search.{self.knob}", self.value)
            self.callbacks = [tracking.epoch_logger()]
        return self

    def record(self, trial: Trial, metric: str) -> None:
        """The trial's summary on its run."""
        if self.run is None:
            return
        import mlflow

        mlflow.log_metrics(
            {
                f"best_{metric}": trial.score,
                "best_epoch": trial.best_epoch,
                "epochs_run": trial.epochs_run,
                "fit_seconds": trial.seconds,
                "pruned": float(trial.pruned),
            }
        )

    def __exit__(self, kind: Any, *_: Any) -> None:
        if self.run is not None:
            import mlflow

            mlflow.end_run("FAILED" if kind else "FINISHED")
