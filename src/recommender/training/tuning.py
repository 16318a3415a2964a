"""Hyperparameter search on the validation split, every trial recorded in MLflow.

An Optuna study (TPE, seeded) proposes a family's main knobs; each trial trains that family with
:func:`recommender.training.fit` (early stopping on the validation part, never the test split) and
scores it by the metric early stopping watches: the best validation RMSE, or the best validation
NDCG@10 for families trained to rank (:func:`~recommender.training.fit.monitor_of`). MLflow gets
one parent run per search and one nested child run per trial (its parameters, that metric, best
epoch, state), so searches can be compared in the UI. Trials clearly worse than the median of
earlier trials at the same epoch are pruned early (``tune.prune``).

The best trial's values are written back into ``params.yaml``'s ``train.<family>`` section
(the family's knobs and its own ``learning_rate``, so tuning one family never moves another's)
with ruamel.yaml, so comments and layout survive, after the result has passed the same strict
validation as every stage's params. ``dvc repro`` then retrains with them.

Example:
    >>> params = load_params("params.yaml")
    >>> result = tune(load_processed("data/processed"), params)
    >>> write_best_params(result, "params.yaml")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recommender import tracking
from recommender.core.config import Params, TrainConfig, TuneConfig, parse_params
from recommender.core.errors import ConfigError, RecommenderError
from recommender.core.io import staged_file
from recommender.dataset.processed import Processed

log = logging.getLogger("recommender")

#: A knob's search range: ``("log", low, high)`` (log-uniform float), ``("float", low, high)``,
#: ``("int", low, high)`` or ``("choice", [values...])``.
Range = tuple[Any, ...]

#: Searched for every family: Adam's step size (written as ``train.<family>.learning_rate``).
COMMON_SPACE: dict[str, Range] = {"learning_rate": ("log", 1e-3, 2e-2)}

#: Each family's main knobs (``train.<family>``). Ranges bracket the defaults by a decade or more,
#: wide enough to find a better corner, narrow enough for a 20-trial search to cover. (A first
#: hybrid search on ML-100K ended at the edges, l2 0.014 and content_l2 0.009: hence its wider
#: ranges.)
FAMILY_SPACE: dict[str, dict[str, Range]] = {
    "mf": {"embedding_dim": ("choice", [16, 32, 64, 128]), "l2": ("log", 1e-3, 1.0)},
    "biased_mf": {
        "embedding_dim": ("choice", [16, 32, 64, 128]),
        "l2": ("log", 1e-2, 1.0),
        "bias_l2": ("log", 1e-3, 1e-1),
    },
    "ncf": {
        "embedding_dim": ("choice", [16, 32, 64]),
        "l2": ("log", 1e-2, 1.0),
        "dropout": ("float", 0.0, 0.5),
        "mlp_layers": ("choice", ["64-32-16", "128-64-32", "64-32"]),
    },
    "hybrid": {
        "embedding_dim": ("choice", [16, 32, 64, 128]),
        "l2": ("log", 1e-3, 1.0),
        "bias_l2": ("log", 1e-3, 1e-1),
        "content_l2": ("log", 1e-6, 1e-1),
    },
    "autorec": {
        "hidden_units": ("choice", [100, 200, 300, 500]),
        "l2": ("log", 1e-5, 1e-2),
        "dropout": ("float", 0.0, 0.5),
    },
    "ensemble": {"blend": ("float", 0.2, 0.8)},
    "two_tower": {
        "embedding_dim": ("choice", [32, 64, 128]),
        "l2": ("log", 1e-2, 1.0),
        "rating_loss_weight": ("log", 0.1, 10.0),
    },
}


@dataclass
class Trial:
    """One trial: its number, proposed values, best value of the watched validation metric (None
    if it failed) and state."""

    number: int
    params: dict[str, Any]
    value: float | None
    best_epoch: int | None
    state: str


@dataclass
class TuneResult:
    """What a search found: the best values (``train`` overrides) and every trial."""

    family: str
    best_params: dict[str, Any]
    #: The validation metric the trials were scored on (``val_rmse``, ``val_ndcg_at_10``).
    metric: str
    best_value: float
    parent_run_id: str
    trials: list[Trial] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the report ``pipeline/tune.py`` writes)."""
        return {
            "family": self.family,
            "best_params": self.best_params,
            "metric": self.metric,
            "best_value": self.best_value,
            "parent_run_id": self.parent_run_id,
            "trials": [t.__dict__ for t in self.trials],
        }


def suggest(trial: Any, family: str) -> dict[str, Any]:
    """Draw one point of ``family``'s search space: ``{"learning_rate": .., "<knob>": ..}``."""
    if family not in FAMILY_SPACE:
        raise ConfigError(
            f"tune.family {family!r} has no search space; expected one of {', '.join(FAMILY_SPACE)}"
        )
    values: dict[str, Any] = {}
    for name, spec in {**COMMON_SPACE, **FAMILY_SPACE[family]}.items():
        kind = spec[0]
        if kind == "log":
            values[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif kind == "float":
            values[name] = trial.suggest_float(name, spec[1], spec[2])
        elif kind == "int":
            values[name] = trial.suggest_int(name, spec[1], spec[2])
        else:
            values[name] = trial.suggest_categorical(name, spec[1])
    return values


def _as_hyper(name: str, value: Any) -> Any:
    """Search-space encodings back to config values (``"64-32"`` -> ``[64, 32]``)."""
    if name == "mlp_layers" and isinstance(value, str):
        return [int(n) for n in value.split("-")]
    return value


def train_overrides(family: str, values: dict[str, Any]) -> dict[str, Any]:
    """Proposed values as a partial ``train`` section: ``{family: {"learning_rate": .., ..}}``."""
    return {family: {k: _as_hyper(k, v) for k, v in values.items()}}


def trial_config(base: TrainConfig, family: str, values: dict[str, Any]) -> TrainConfig:
    """``base`` with ``model = family`` and the proposed values, validated like ``params.yaml``."""
    raw = base.model_dump()
    raw["model"] = family
    raw[family] = {**raw[family], **train_overrides(family, values)[family]}
    return TrainConfig.model_validate(raw)


def _round(value: Any) -> Any:
    """Four significant digits for floats written to ``params.yaml`` (more is noise)."""
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.4g}")
    return value


def _pruning_callback(trial: Any, seen: list[float], metric: str = "val_rmse") -> Any:
    """Report each epoch's ``metric`` to Optuna (and append it to ``seen``); stop when pruned."""
    import keras
    import optuna

    class Pruner(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs and metric in logs:
                seen.append(float(logs[metric]))
                trial.report(seen[-1], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch + 1}: {metric} {logs[metric]:.4f}")

    return Pruner()


def tune(processed: Processed, params: Params) -> TuneResult:
    """Search ``params.tune.family``'s knobs for ``params.tune.n_trials`` trials.

    Args:
        processed: The preprocess stage's output; needs a validation part.
        params: All params: ``tune`` drives the search, ``train`` gives the fixed settings (epochs
            cap, batch size, patience, the other knobs' values), ``seed`` seeds both the sampler
            and every trial's training, ``tracking.experiment`` names the MLflow experiment.

    Returns:
        The best values and every trial; the parent MLflow run's id.

    Raises:
        ConfigError: No validation rows to score trials on, or a family without a search space.
    """
    if len(processed.val) == 0:  # before the heavy imports: a config mistake fails in a blink
        raise ConfigError(
            "tuning needs a validation split to score trials on, but data/processed has none: "
            "set preprocess.val_fraction above 0 (e.g. 0.1) and rerun `dvc repro preprocess`"
        )
    try:
        import optuna
    except ImportError:  # an install without the extra: say which, not a traceback
        raise RecommenderError(
            "make tune needs Optuna, which the 'tune' extra installs: pip install -e '.[tune]' "
            "(make install has it)"
        ) from None
    import mlflow

    from recommender.training.fit import monitor_of

    cfg = params.tune
    family = cfg.family
    base = params.train
    if cfg.epochs is not None:
        base = base.model_copy(update={"model": family}).with_epochs(cfg.epochs)
    metric, mode = monitor_of(family)
    study = _study(cfg, params.seed, mode)

    tracking.connect()
    mlflow.set_experiment(params.tracking.experiment)
    tracking.end_stale_runs(params.tracking.experiment)
    trials: list[Trial] = []
    tags = {"tune.family": family, "data.source": processed.info.source, **tracking.tag_owner()}
    objective = _objective(processed, base, family, params.seed, metric, mode, tags, trials)

    with mlflow.start_run(run_name=f"tune-{family}", tags=tags) as parent:
        mlflow.log_params(
            tracking.flatten(
                {
                    "tune": cfg.model_dump(),
                    "train": {k: v for k, v in base.model_dump().items() if k == family}
                    | {"epochs": base.epochs, "batch_size": base.batch_size},
                    "seed": params.seed,
                }
            )
        )
        study.optimize(objective, n_trials=cfg.n_trials, catch=())
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            raise ConfigError(
                f"no trial of {family!r} completed (all {len(study.trials)} pruned or failed)"
            )
        best = study.best_trial
        best_params: dict[str, Any] = {
            family: {k: _round(v) for k, v in train_overrides(family, best.params)[family].items()}
        }
        mlflow.log_params(tracking.flatten({"best": best_params}))
        mlflow.log_metrics({f"best_{metric}": float(best.value), "best_trial": best.number})
        run_id = parent.info.run_id
    return TuneResult(family, best_params, metric, float(best.value), run_id, trials)


def _study(cfg: TuneConfig, seed: int, mode: str) -> Any:
    """An Optuna study in ``mode``'s direction: ``cfg.sampler`` seeded with ``seed``, and the
    median pruner when ``cfg.prune``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if cfg.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4)
        if cfg.prune
        else optuna.pruners.NopPruner()
    )
    direction = "maximize" if mode == "max" else "minimize"
    return optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)


def _objective(
    processed: Processed,
    base: TrainConfig,
    family: str,
    seed: int,
    metric: str,
    mode: str,
    tags: dict[str, str],
    trials: list[Trial],
) -> Callable[[Any], float]:
    """Optuna's objective: train one suggestion in a nested MLflow run, appending its record
    to ``trials``; its value is the best ``metric`` the fit reached."""
    import keras
    import mlflow
    import optuna

    from recommender.training.fit import fit

    best_of = max if mode == "max" else min

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, family)
        train_cfg = trial_config(base, family, values)
        record = Trial(trial.number, values, None, None, "FAIL")
        trials.append(record)
        pruned: optuna.TrialPruned | None = None
        seen: list[float] = []
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, tags=tags):
            mlflow.log_params(
                tracking.flatten({**train_overrides(family, values), "trial": trial.number})
            )
            try:
                callback = _pruning_callback(trial, seen, metric)
                result = fit(processed, train_cfg, seed, [callback])
            except optuna.TrialPruned as exc:
                # A pruned trial is a finished run (not a failure): it keeps the best value it
                # reached, and the exception is re-raised for Optuna once the run is closed.
                pruned = exc
                record.state = "PRUNED"
                if seen:
                    record.value = float(best_of(seen))
                    mlflow.log_metric(metric, record.value)
            finally:
                keras.backend.clear_session()  # trials must not pile up graphs and memory
            if pruned is None:
                record.value = float(best_of(result.history[metric]))
                record.best_epoch, record.state = result.best_epoch, "COMPLETE"
                mlflow.log_metrics(
                    {
                        metric: record.value,
                        "best_epoch": result.best_epoch,
                        "fit_seconds": result.seconds,
                    }
                )
            mlflow.set_tag("trial.state", record.state)
        if pruned is not None:
            raise pruned
        log.info("trial %d: %s %.4f with %s", trial.number, metric, record.value, values)
        assert record.value is not None  # set just above: the trial completed
        return record.value

    return objective


def write_best_params(result: TuneResult, path: str | Path) -> dict[str, Any]:
    """Write the best values into ``path`` (a ``params.yaml``) in place, keeping its comments.

    Sets the tuned keys of ``train.<family>`` (its knobs and its own ``learning_rate``); nothing
    else changes. The edited file is validated as a whole before it replaces the old one, so a
    bad value never reaches a stage.

    Returns:
        The ``train`` section as written.
    """
    from ruamel.yaml import YAML

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file to write the tuned params into")
    yaml = YAML()  # round-trip mode: comments, order and flow style are kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a line the user wrote on one line
    # ruamel writes None as nothing (`key:`); keep the file's explicit `null`s.
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    doc = yaml.load(path.read_text())
    train = doc.setdefault("train", {})
    for key, value in result.best_params.items():
        if isinstance(value, dict):
            section = train.setdefault(key, {})
            for k, v in value.items():
                section[k] = v
        else:
            train[key] = value
    parse_params(_plain(doc), str(path))  # raises ConfigError naming the bad key
    with staged_file(path) as tmp, open(tmp, "w") as fh:
        yaml.dump(doc, fh)
    return _plain(train)


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts, lists and scalars (for pydantic)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool | int | float | str) or node is None:
        # ruamel's ScalarFloat etc. subclass these; strict pydantic wants the exact types.
        for kind in (bool, int, float, str):
            if isinstance(node, kind):
                return kind(node)
    return node
