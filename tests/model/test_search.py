"""The train stage's knob search (``train.search``): the walk, its budget, its MLflow record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recommender.core.config import Params, TrainConfig
from recommender.core.errors import ConfigError
from recommender.dataset.processed import Processed
from recommender.training.search import PRUNE_WARMUP, _next_value, _Pruner, search

pytestmark = pytest.mark.slow


def rating_cfg(params: Params, l2: float, **search: float) -> TrainConfig:
    """biased_mf (RMSE-watched, quick) starting at ``l2``, with ``train.search`` overrides."""
    raw = params.train.model_dump()
    raw["model"] = "biased_mf"
    raw["biased_mf"] = {**raw["biased_mf"], "l2": l2}
    raw["search"] = {**raw["search"], "budget_seconds": 1000.0, **search}
    return TrainConfig.model_validate(raw)


def test_the_walk_leaves_a_bad_start_for_a_better_value_and_keeps_its_fit(
    processed: Processed, params: Params
) -> None:
    # An L2 of 1 shrinks the vectors to nothing (the biases keep theirs, train.biased_mf.bias_l2).
    found = search(processed, rating_cfg(params, 1.0, step=10.0), params.seed)
    values = [t.value for t in found.trials]
    assert values[:3] == [1.0, 10.0, 0.1]  # up first; no better, so down
    assert found.knob == "l2" and found.metric == "val_rmse"
    assert found.chosen < 1.0
    scores = {t.value: t.score for t in found.trials if not t.pruned}
    assert found.chosen == min(scores, key=scores.get)  # the best unpruned trial
    assert found.cfg.biased_mf.l2 == found.chosen
    # Its fit is the model the refit continues: the chosen trial's own curve.
    assert min(found.fitted.history["val_rmse"]) == scores[found.chosen]
    # Well clear of the bad start (0.959 against 1.000 on the hash split's validation rows).
    assert scores[found.chosen] < scores[1.0] - 0.03
    assert json.loads(json.dumps(found.to_json()))["chosen"] == found.chosen


def test_no_trial_starts_that_would_overrun_the_budget(
    processed: Processed, params: Params
) -> None:
    found = search(processed, rating_cfg(params, 30.0, budget_seconds=1e-3), params.seed)
    assert [t.value for t in found.trials] == [30.0]  # the first fit only
    assert found.chosen == 30.0
    assert found.ended.startswith("budget")
    assert "train.search.budget_seconds" in found.ended


def test_a_zero_budget_trains_once_without_a_search(processed: Processed, params: Params) -> None:
    found = search(processed, rating_cfg(params, 0.1, budget_seconds=0.0), params.seed)
    assert found.knob is None and found.trials == [] and found.chosen is None
    assert "off" in found.ended
    assert found.cfg.biased_mf.l2 == 0.1


def test_a_knob_no_family_has_is_refused_by_name(params: Params) -> None:
    raw = params.model_dump(by_alias=True)
    raw["train"]["search"] = {"knob": "l3"}
    from recommender.core.config import parse_params

    with pytest.raises(ConfigError, match=r"search\.knob 'l3' is no family's.*\bl2\b"):
        parse_params(raw, "params.yaml")


def test_a_family_without_the_knob_trains_once_and_says_why(
    processed: Processed, params: Params
) -> None:
    cfg = rating_cfg(params, 0.1).model_copy(update={"model": "ensemble"})  # no l2 of its own
    cfg = cfg.with_epochs(1)
    found = search(processed, cfg, params.seed)
    assert found.trials == [] and found.knob is None
    assert found.ended == "train.ensemble has no l2 (train.search.knob) to walk"


def test_a_trial_trailing_the_leader_by_the_same_epoch_is_pruned_after_the_warmup() -> None:
    pruner = _Pruner("val_ndcg_at_10", "max", [0.10, 0.20, 0.30, 0.31])
    assert not pruner.trails(PRUNE_WARMUP - 1, 0.01)  # too early to judge
    assert pruner.trails(PRUNE_WARMUP, 0.30 * 0.79)  # more than 20% behind the leader's 0.30
    assert not pruner.trails(PRUNE_WARMUP, 0.30 * 0.81)
    assert pruner.trails(10, 0.31 * 0.79)  # past the leader's last epoch: its best, 0.31
    rmse = _Pruner("val_rmse", "min", [1.0, 0.95, 0.90])
    assert rmse.trails(3, 0.92) and not rmse.trails(3, 0.915)


def test_the_train_run_records_the_walk_with_a_nested_run_per_trial(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    processed: Processed,
    processed_dir: Path,
    params: Params,
) -> None:
    import mlflow

    from recommender.training.run import train_and_log

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    searched = params.model_copy(update={"train": rating_cfg(params, 1.0, step=10.0)})
    summary = train_and_log(processed, searched, processed_dir, tmp_path / "m", tmp_path / "h.csv")

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(summary["run_id"])
    record = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "search.json")).read_text()
    )
    assert float(parent.data.params["hyper.l2"]) == record["chosen"] < 1.0
    assert summary["search_trials"] == len(record["trials"]) >= 3
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(float(c.data.params["search.l2"]) for c in children) == sorted(
        t["value"] for t in record["trials"]
    )
    assert all(c.info.status == "FINISHED" for c in children)
    # The train run's curves are the chosen trial's, one point per epoch.
    chosen = next(c for c in children if float(c.data.params["search.l2"]) == record["chosen"])
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "val_rmse")] == [
        m.value for m in client.get_metric_history(chosen.info.run_id, "val_rmse")
    ]


def test_steps_keep_a_float_knob_to_four_digits_and_an_integer_knob_whole() -> None:
    assert _next_value(0.1, 2.0, 0.1) == 0.2 and _next_value(0.1, 0.5, 0.1) == 0.05
    assert _next_value(0.3, 1 / 1.5, 0.3) == 0.2  # not 0.19999999999999998
    assert _next_value(64, 2.0, 64) == 128 and _next_value(64, 0.5, 64) == 32
    assert _next_value(2, 1.2, 2) == 3  # at least one away
    assert _next_value(1, 0.5, 1) == 1  # never below 1 (then the walk stops: tried)
