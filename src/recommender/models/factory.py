"""Building and compiling a family by its ``train.model`` name, with its knobs from the config."""

from __future__ import annotations

from typing import Any

import keras

from recommender.core.config import FAMILIES, RatingScale, TrainConfig
from recommender.core.errors import ConfigError
from recommender.models.autorec import ItemAutoRec
from recommender.models.base import RatingModel, constructor_args
from recommender.models.biased_mf import BiasedMF
from recommender.models.ensemble import HybridAutoRecEnsemble
from recommender.models.hybrid import HybridRecommender
from recommender.models.lazy_adam import LazyAdam
from recommender.models.mf import MatrixFactorization
from recommender.models.ncf import NeuMF
from recommender.models.two_tower import TwoTower

#: The class of each family in ``config.FAMILIES`` (the one list of family names).
FAMILY_CLASSES: dict[str, type[RatingModel]] = {
    cls.family: cls
    for cls in (
        MatrixFactorization,
        BiasedMF,
        NeuMF,
        HybridRecommender,
        ItemAutoRec,
        HybridAutoRecEnsemble,
        TwoTower,
    )
}
if tuple(FAMILY_CLASSES) != FAMILIES:  # pragma: no cover (a family added to one list only)
    raise ImportError(f"model classes {tuple(FAMILY_CLASSES)} do not match FAMILIES {FAMILIES}")


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    scale: RatingScale,
    global_mean: float,
    **overrides: Any,
) -> RatingModel:
    """Build (not compile) a model of family ``name``.

    Its knobs are ``params.yaml``'s ``train.<name>`` section: the typed config's values (the
    mirror of ``params.yaml``), with ``overrides`` on top. The train stage passes the whole
    section it loaded (``TrainConfig.hyper()``); tests pass only what they change. A mapping
    (an ensemble member's knobs) is merged into the configured one, key by key.

    Args:
        name: One of ``config.FAMILIES``.
        n_users: Known users (tables get one more row, for unknown users).
        n_items: Known items.
        scale: The rating scale predictions are clipped to.
        global_mean: Mean train rating (ignored by ``mf``, which has no offset).
        **overrides: Knobs (``embedding_dim=64``) and data arguments: the hybrid needs
            ``item_features`` and optionally ``user_features``/``user_cardinalities``; AutoRec
            needs ``train_ratings``.

    Raises:
        ConfigError: An unknown family or a knob the family does not take (a typo must not
            silently train the default).
    """
    if name not in FAMILY_CLASSES:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(FAMILIES)}")
    cls = FAMILY_CLASSES[name]
    accepted = constructor_args(cls) - {"n_users", "n_items", "min_rating", "max_rating"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"model {name!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted - {'global_mean'}))}"
        )
    kwargs = TrainConfig(model=name).hyper()  # type: ignore[arg-type]
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key] = {**kwargs[key], **value}
        else:
            kwargs[key] = value
    if "global_mean" in accepted:
        kwargs["global_mean"] = float(global_mean)
    model = cls(n_users, n_items, min_rating=scale.min, max_rating=scale.max, **kwargs)
    model.build()
    return model


def compile_model(
    model: RatingModel,
    learning_rate: float,
    steps_per_execution: int = 1,
    optimizer: str = "adam",
) -> RatingModel:
    """Compile with Adam (``optimizer="lazy_adam"``: row-wise for embedding tables,
    :class:`LazyAdam`) and MSE (the loss), reporting RMSE.

    ``steps_per_execution`` runs that many batches per call into the compiled train function:
    these models are so small that Python's per-step overhead would otherwise dominate an epoch.
    """
    model.compile(
        optimizer=(LazyAdam if optimizer == "lazy_adam" else keras.optimizers.Adam)(learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        steps_per_execution=steps_per_execution,
        # XLA compiles for seconds on a CPU, longer than these models train.
        jit_compile=False,
    )
    return model
