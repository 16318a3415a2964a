"""Hyperparameter search, the parts that build Keras objects: the pruning callback and a trial's
model. Marked slow with the rest of ``tests/model`` for the Keras import, not for their own time."""

from __future__ import annotations

import optuna
import pytest

from recommender.core.config import parse_params
from recommender.training.tuning import _pruning_callback

pytestmark = pytest.mark.slow


def test_a_trailing_trial_is_pruned_and_its_values_kept():
    # A real pruner that prunes anything above 0.5: the callback must stop the trial.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.5))
    seen: list[float] = []
    callback = _pruning_callback(study.ask(), seen)
    callback.on_epoch_end(0, {"val_rmse": 0.4})  # under the threshold: training goes on
    with pytest.raises(optuna.TrialPruned):
        callback.on_epoch_end(1, {"val_rmse": 0.9})
    assert seen == [0.4, 0.9]


def test_a_family_keeps_its_own_learning_rate(processed):
    from recommender.training.fit import build

    params = parse_params(
        {
            "train": {
                "model": "biased_mf",
                "learning_rate": 0.003,
                "biased_mf": {"learning_rate": 0.02},
            }
        }
    ).train
    assert params.family_learning_rate == 0.02
    assert "learning_rate" not in params.hyper()  # a training knob, not a constructor argument
    hybrid = params.model_copy(update={"model": "hybrid"})
    assert hybrid.family_learning_rate == 0.003  # no value of its own: the shared one
    model = build(processed, params)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
