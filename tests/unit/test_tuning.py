"""Hyperparameter search: search spaces, MLflow parent/child runs, and params written back.

The search itself runs for real (Optuna, Keras, a SQLite MLflow store in tmp_path) on a tiny
synthetic dataset; the cheap tests drive real Optuna trials without training anything. The
tests that build Keras objects are in ``tests/model/test_tuning_trials.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import optuna
import pytest
import yaml
from support import ROOT, tiny_params

from recommender.core.config import load_params, parse_params
from recommender.core.errors import ConfigError
from recommender.training.tuning import (
    FAMILY_SPACE,
    TuneResult,
    suggest,
    train_overrides,
    trial_config,
    tune,
    write_best_params,
)


def _tiny_params(**tune: object):
    return tiny_params(train={"epochs": 3}, tune={"family": "biased_mf", "n_trials": 3, **tune})


@pytest.mark.parametrize("family", sorted(FAMILY_SPACE))
def test_every_point_of_every_space_is_a_valid_train_section(family):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = parse_params({}).train
    for _ in range(5):
        values = suggest(study.ask(), family)
        cfg = trial_config(base, family, values)
        assert cfg.model == family
        assert cfg.family_learning_rate == values["learning_rate"]
        assert cfg.learning_rate == base.learning_rate  # other families' step is untouched
        section = getattr(cfg, family).model_dump()
        for name, value in train_overrides(family, values)[family].items():
            assert section[name] == value, name


def test_a_family_without_a_space_is_refused():
    study = optuna.create_study()
    with pytest.raises(ConfigError, match="tune.family 'svd'"):
        suggest(study.ask(), "svd")


def test_tune_config_is_strict():
    with pytest.raises(ConfigError, match="tune.n_trial: unknown key"):
        parse_params({"tune": {"n_trial": 3}})
    with pytest.raises(ConfigError, match="tune.family"):
        parse_params({"tune": {"family": "svd"}})


@pytest.mark.slow
def test_search_logs_parent_and_child_runs_and_writes_valid_params(
    processed, tmp_path, monkeypatch
):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts (none expected) stay in tmp_path
    params = _tiny_params()

    result = tune(processed, params)

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    assert len(children) == 3 == len(runs) - 1
    trial_rmse = {}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["trial.state"] == "COMPLETE"
        assert set(child.data.params) == {
            "trial",
            "biased_mf.learning_rate",
            "biased_mf.embedding_dim",
            "biased_mf.l2",
            "biased_mf.bias_l2",
        }
        trial_rmse[int(child.data.params["trial"])] = child.data.metrics[result.metric]
    assert sorted(trial_rmse) == [0, 1, 2]
    # The best is the lowest val RMSE among the children, and the parent records it.
    assert result.metric == "val_rmse"  # biased_mf is a rating family
    assert result.best_value == pytest.approx(min(trial_rmse.values()))
    parent = parents[0]
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(result.best_value)
    best = next(t for t in result.trials if t.value == result.best_value)
    assert parent.data.params["best.biased_mf.l2"] == str(result.best_params["biased_mf"]["l2"])
    assert result.best_params["biased_mf"]["embedding_dim"] == best.params["embedding_dim"]

    # Written back into a copy of the project's params.yaml: comments kept, values valid.
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    before = target.read_text()
    write_best_params(result, target)
    after = target.read_text()
    written = load_params(target)  # the stages' strict validation
    assert written.train.biased_mf.l2 == result.best_params["biased_mf"]["l2"]
    assert written.train.biased_mf.learning_rate == result.best_params["biased_mf"]["learning_rate"]
    assert written.train.biased_mf.embedding_dim == best.params["embedding_dim"]
    assert written.train.learning_rate == load_params(ROOT / "params.yaml").train.learning_rate
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(line in after.splitlines() for line in comments)
    # Line for line, only the family's line changed: layout, inline comments and nulls are kept.
    changed = [
        (old, new)
        for old, new in zip(before.splitlines(), after.splitlines(), strict=True)
        if old != new
    ]
    assert [old.split(":")[0].strip() for old, _ in changed] == ["biased_mf"]
    # Nothing but train.biased_mf changed.
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    for section in old:
        if section != "train":
            assert new[section] == old[section], section
    assert {k for k in old["train"] if old["train"][k] != new["train"][k]} == {"biased_mf"}


def test_invalid_values_are_not_written(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    before = target.read_text()
    bad = TuneResult("biased_mf", {"biased_mf": {"embeding_dim": 8}}, "val_rmse", 0.9, "run")
    with pytest.raises(ConfigError, match="train.biased_mf.embeding_dim: unknown key"):
        write_best_params(bad, target)
    negative = TuneResult(
        "biased_mf", {"biased_mf": {"learning_rate": -1.0}}, "val_rmse", 0.9, "run"
    )
    with pytest.raises(ConfigError, match="train.biased_mf.learning_rate"):
        write_best_params(negative, target)
    assert target.read_text() == before


def test_tuning_needs_a_validation_split(processed):
    import dataclasses

    no_val = dataclasses.replace(processed, val=processed.val.iloc[:0])
    with pytest.raises(ConfigError, match="preprocess.val_fraction"):
        tune(no_val, _tiny_params())


def test_tuning_without_the_tune_extra_names_it(processed, monkeypatch):
    from recommender.core.errors import RecommenderError

    monkeypatch.setitem(sys.modules, "optuna", None)  # what `import optuna` meets without it
    with pytest.raises(
        RecommenderError, match=r"'tune' extra installs: pip install -e '\.\[tune\]'"
    ):
        tune(processed, _tiny_params())


def test_cli_names_a_missing_data_folder(tmp_path):
    report = tmp_path / "tune.json"
    cmd = [
        sys.executable,
        str(ROOT / "pipeline" / "tune.py"),
        "--params",
        str(ROOT / "params.yaml"),
        "--data",
        str(tmp_path / "nowhere"),
        "--report",
        str(report),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "error: stage 'tune' failed" in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr
    assert not report.exists()
