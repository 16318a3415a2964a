"""The register stage against a real MLflow registry (SQLite store), with real tiny models.

Four models are trained once for the module on the same tiny data: ``base`` (4 epochs), ``better``
(15 epochs, clearly lower RMSE), ``twin`` (``better``'s settings with another seed: a tiny
difference inside the noise) and ``worse`` (1 epoch, a huge L2: worse than the bias baseline).
Each test uses a registered model name of its own, so tests do not see each other's aliases.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from integration_helpers import unavailable_server
from support import ROOT, child_env, closed_port, make_scratch_repo, run_checked, tiny_params

from recommender import tracking
from recommender.core.config import Params
from recommender.registry.lineage import lock_digest, params_digest
from recommender.registry.register import register_and_gate
from recommender.tracking.registry import CHALLENGER, CHAMPION, RUN_TAG, RegistryError

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@dataclass(frozen=True)
class Trained:
    """One trained and evaluated model: the train and evaluate stages' outputs."""

    params: Params
    model_dir: Path
    metrics: Path
    run_id: str


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    data_dir: Path
    models: dict[str, Trained]


MODELS = {
    "base": {},
    "better": {"train": {"epochs": 15}},
    "twin": {"train": {"epochs": 15}, "seed": 43},
    "worse": {"train": {"epochs": 1, "biased_mf": {"l2": 100.0}}},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from recommender.data.synthetic import generate
    from recommender.dataset.processed import load_processed, write_processed
    from recommender.evaluation.run import evaluate_and_log
    from recommender.preprocess.split import preprocess
    from recommender.training.run import train_and_log

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in child_env().items():
            if key.startswith(("MLFLOW_", "TF_")) or key in ("DO_NOT_TRACK", "NO_PROXY"):
                mp.setenv(key, value)
        # Both, explicitly: MLflow writes them into os.environ when the stages configure it, and
        # the context must put back what was there before (nothing, usually) when it closes.
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.chdir(root)  # MLflow's default artifact root (./mlruns) lands in the temp folder

        base = tiny_params()
        data_dir = root / "processed"
        dataset = generate(base.synthetic, base.seed)
        write_processed(preprocess(dataset, base.preprocess, base.seed), data_dir)
        processed = load_processed(data_dir)

        models = {}
        for name, over in MODELS.items():
            seed = over.get("seed", base.seed)
            # Rating-only models: these tests pin down the RMSE-primary gate (the ranking gate's
            # rule is tested in tests/unit/test_gate.py, its wiring in tests/serving).
            train = {"model": "biased_mf", **over.get("train", {})}
            params = tiny_params(train=train).model_copy(update={"seed": seed})
            out = root / name
            history = out / "history.csv"
            record = train_and_log(processed, params, data_dir, out / "models", history)
            evaluate_and_log(
                params, data_dir, out / "models", out / "metrics.json", out / "plots", history
            )
            models[name] = Trained(params, out / "models", out / "metrics.json", record["run_id"])
        yield Store(root, uri, data_dir, models)


def _register(store: Store, model: str, name: str, out: Path, lock: Path | None = None) -> dict:
    trained = store.models[model]
    params = trained.params.model_copy(
        update={"tracking": trained.params.tracking.model_copy(update={"registered_model": name})}
    )
    return register_and_gate(
        params, trained.model_dir, store.data_dir, trained.metrics, out, lock, project_dir=ROOT
    )


def _client(store: Store):  # noqa: ANN202
    import mlflow

    return mlflow.MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


def _alias(store: Store, name: str, alias: str) -> int | None:
    from recommender.tracking.registry import alias_version

    mv = alias_version(_client(store), name, alias)
    return None if mv is None else int(mv.version)


def _versions(store: Store, name: str) -> list[int]:
    return sorted(int(mv.version) for mv in _client(store).search_model_versions(f"name='{name}'"))


def _bias_rmse(trained: Trained) -> float:
    return json.loads(trained.metrics.read_text())["baselines"]["bias"]["rmse"]


def test_models_trained_for_the_module_are_what_the_tests_assume(store: Store) -> None:
    rmse = {k: json.loads(t.metrics.read_text())["test"]["rmse"] for k, t in store.models.items()}
    bias = _bias_rmse(store.models["base"])
    assert rmse["better"] < rmse["base"] < bias < rmse["worse"]
    assert abs(rmse["twin"] - rmse["better"]) < 0.01


def test_first_model_is_promoted_then_a_clearly_better_one_replaces_it(
    store: Store, tmp_path: Path
) -> None:
    name = "clearly-better"
    first = _register(store, "base", name, tmp_path / "p1.json")
    assert first["decision"] == "promoted" and first["champion_version"] is None
    assert first["interval"] is None and "no champion yet" in first["reason"]
    assert first["candidate_rmse"] < first["bias_rmse"] == _bias_rmse(store.models["base"])
    assert _alias(store, name, CHAMPION) == first["candidate_version"] == 1

    second = _register(store, "better", name, tmp_path / "p2.json")
    assert second["decision"] == "promoted", second["reason"]
    assert second["champion_version"] == 1 and second["candidate_version"] == 2
    # The champion was re-scored on the same rows: its RMSE is what the first run measured.
    assert second["champion_rmse"] == pytest.approx(first["candidate_rmse"], abs=1e-6)
    interval = second["interval"]
    assert interval["low"] <= interval["delta"] <= interval["high"] < -second["min_delta"]
    expected = second["candidate_rmse"] - second["champion_rmse"]
    assert interval["delta"] == pytest.approx(expected, abs=1e-5)
    assert _alias(store, name, CHAMPION) == 2
    assert json.loads((tmp_path / "p2.json").read_text()) == second

    # The gate is on the training run too: metrics, tags and the record as an artifact.
    run = _client(store).get_run(store.models["better"].run_id)
    assert run.data.metrics["gate_promoted"] == 1.0
    assert run.data.metrics["gate_delta_high"] == pytest.approx(interval["high"])
    assert run.data.tags["gate.decision"] == "promoted"
    assert run.data.tags["registry.version"] == "2"


def test_worse_model_is_refused_and_becomes_challenger(store: Store, tmp_path: Path) -> None:
    name = "worse-refused"
    _register(store, "base", name, tmp_path / "p1.json")
    out = tmp_path / "p2.json"
    refused = _register(store, "worse", name, out)
    assert refused["decision"] == "rejected"
    assert refused["candidate_rmse"] > refused["champion_rmse"]
    assert refused["interval"]["low"] > 0  # clearly worse, not just "not better"
    assert "bias baseline" in refused["reason"] and "not entirely below" in refused["reason"]
    assert _alias(store, name, CHAMPION) == 1
    assert _alias(store, name, CHALLENGER) == 2
    assert _versions(store, name) == [1, 2]  # the loser keeps its version
    mv = _client(store).get_model_version(name, "2")
    assert mv.tags["gate.decision"] == "rejected"


def test_worse_than_bias_with_no_champion_is_not_promoted(store: Store, tmp_path: Path) -> None:
    name = "no-champion-worse"
    refused = _register(store, "worse", name, tmp_path / "p.json")
    assert refused["decision"] == "rejected" and "bias baseline" in refused["reason"]
    assert _alias(store, name, CHAMPION) is None
    assert _alias(store, name, CHALLENGER) == 1


def test_a_tiny_improvement_inside_the_noise_is_refused(store: Store, tmp_path: Path) -> None:
    name = "noise"
    _register(store, "better", name, tmp_path / "p1.json")
    result = _register(store, "twin", name, tmp_path / "p2.json")
    interval = result["interval"]
    assert result["decision"] == "rejected"
    assert abs(result["candidate_rmse"] - result["champion_rmse"]) < 0.01
    assert interval["high"] >= -result["min_delta"]
    assert interval["low"] < 0  # the interval admits an improvement: it is just not certain
    assert _alias(store, name, CHAMPION) == 1
    assert _alias(store, name, CHALLENGER) == 2


def test_version_carries_the_lineage(store: Store, tmp_path: Path) -> None:
    name = "lineage"
    lock = tmp_path / "dvc.lock"
    lock.write_text((ROOT / "dvc.yaml").read_text())  # any YAML stands in for a lock file
    result = _register(store, "base", name, tmp_path / "p.json", lock)
    trained = store.models["base"]
    mv = _client(store).get_model_version(name, "1")
    run = _client(store).get_run(trained.run_id)

    assert mv.run_id == trained.run_id and mv.tags[RUN_TAG] == trained.run_id
    assert mv.tags["lineage.data_hash"] == run.data.tags["data.hash"]
    assert mv.tags["lineage.data_hash"] == tracking.file_digest([store.data_dir])
    assert mv.tags["lineage.params_sha256"] == params_digest(
        trained.params.model_copy(
            update={
                "tracking": trained.params.tracking.model_copy(update={"registered_model": name})
            }
        )
    )
    # The lock's entries behind what register read (here: none, the stand-in's paths are others).
    reads = (trained.model_dir, store.data_dir, trained.metrics)
    assert mv.tags["lineage.dvc_lock_sha256"] == lock_digest(lock, reads)
    assert mv.tags["lineage.git_commit"] == tracking.git_commit(ROOT)
    assert (
        mv.tags["lineage.model_uri"]
        == json.loads((trained.model_dir / "run.json").read_text())["model_uri"]
    )
    assert mv.tags["gate.decision"] == "promoted"
    assert json.loads(mv.tags["gate.record"])["candidate_rmse"] == result["candidate_rmse"]
    assert result["lineage"] == {k: v for k, v in mv.tags.items() if k.startswith("lineage.")} | {
        RUN_TAG: trained.run_id
    }


def test_rerunning_for_the_same_run_creates_no_new_version(store: Store, tmp_path: Path) -> None:
    name = "rerun"
    _register(store, "base", name, tmp_path / "a1.json")
    _register(store, "base", name, tmp_path / "a2.json")
    assert _versions(store, name) == [1]
    # Byte-stable: a rerun after the promotion reports the same decision, byte for byte.
    assert (tmp_path / "a1.json").read_bytes() == (tmp_path / "a2.json").read_bytes()

    _register(store, "worse", name, tmp_path / "b1.json")
    _register(store, "worse", name, tmp_path / "b2.json")
    assert _versions(store, name) == [1, 2]
    assert (tmp_path / "b1.json").read_bytes() == (tmp_path / "b2.json").read_bytes()
    assert _alias(store, name, CHAMPION) == 1 and _alias(store, name, CHALLENGER) == 2


def test_a_champion_chosen_by_hand_is_left_in_place(store: Store, tmp_path: Path) -> None:
    name = "by-hand"
    _register(store, "worse", name, tmp_path / "p1.json")
    _client(store).set_registered_model_alias(name, CHAMPION, "1")  # a person overrides the gate
    again = _register(store, "worse", name, tmp_path / "p2.json")
    assert again["decision"] == "kept" and "outside this stage" in again["reason"]
    assert _alias(store, name, CHAMPION) == 1
    assert _alias(store, name, CHALLENGER) is None  # one version is not both


def test_unreachable_registry_fails_fast_and_leaves_the_champion(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "unreachable"
    _register(store, "base", name, tmp_path / "p1.json")
    with closed_port() as port:
        dead = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", dead)
        expected = "cannot use the MLflow tracking server / model registry at " + re.escape(dead)
        with pytest.raises(RegistryError, match=expected) as caught:
            _register(store, "better", name, tmp_path / "p2.json")
    assert "MLFLOW_TRACKING_URI" in str(caught.value)
    assert not (tmp_path / "p2.json").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", store.uri)
    assert _alias(store, name, CHAMPION) == 1 and _versions(store, name) == [1]


def test_a_failing_registry_is_asked_once_not_retried(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fast failure, measured without a clock: MLflow would retry a 503 for minutes; the stage
    # asks once and stops. A real HTTP server on loopback counts the requests it gets.
    with unavailable_server() as (uri, requests_seen):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        with pytest.raises(RegistryError, match="cannot use the MLflow tracking server"):
            _register(store, "better", "unavailable", tmp_path / "p.json")
    assert len(requests_seen) == 1, requests_seen
    assert not (tmp_path / "p.json").exists()


def test_a_store_without_the_training_run_is_named_in_the_error(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", other)
    run_id = store.models["base"].run_id
    with pytest.raises(RegistryError, match=f"training run {run_id} .* not in the tracking store"):
        _register(store, "base", "elsewhere", tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def _stage_args(trained: Trained, params_file: Path, data_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "pipeline" / "register.py"),
        "--params",
        str(params_file),
        "--model",
        str(trained.model_dir),
        "--data",
        str(data_dir),
        "--metrics",
        str(trained.metrics),
        "--out",
        str(out),
    ]


def _params_file(params: Params, path: Path, name: str | None = None) -> Path:
    raw = params.model_dump(mode="json", by_alias=True)
    if name:
        raw["tracking"]["registered_model"] = name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_killed_after_the_version_is_created_the_champion_still_loads(
    store: Store, tmp_path: Path
) -> None:
    from recommender.tracking.registry import load_version_bundle

    name = "killed"
    _register(store, "base", name, tmp_path / "p1.json")
    better = store.models["better"]
    args = _stage_args(
        better, _params_file(better.params, tmp_path / "params.yaml", name), store.data_dir,
        tmp_path / "p2.json",
    )  # fmt: skip
    proc = subprocess.Popen(args, cwd=tmp_path, env=child_env(MLFLOW_TRACKING_URI=store.uri))
    try:
        deadline = time.monotonic() + 300
        while _versions(store, name) == [1] and proc.poll() is None:
            assert time.monotonic() < deadline, "register never created the version"
            time.sleep(0.05)
        proc.kill()  # kill -9 as soon as version 2 exists
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # Whatever the moment, @champion is a complete model that loads: the old one, or the new one
    # only if the stage got as far as its very last write.
    champion = _alias(store, name, CHAMPION)
    assert champion in (1, 2)
    assert load_version_bundle(name, str(champion), tmp_path / "dl").n_users > 0
    if champion == 1:
        assert not (tmp_path / "p2.json").exists()

    # Run again: it resumes with the same version and finishes the job.
    rerun = _register(store, "better", name, tmp_path / "p3.json")
    assert rerun["decision"] == "promoted" and rerun["candidate_version"] == 2
    assert _versions(store, name) == [1, 2] and _alias(store, name, CHAMPION) == 2


def test_stage_reports_an_unreachable_registry_in_one_line(store: Store, tmp_path: Path) -> None:
    trained = store.models["base"]
    args = _stage_args(
        trained, _params_file(trained.params, tmp_path / "params.yaml"), store.data_dir,
        tmp_path / "p.json",
    )  # fmt: skip
    with closed_port() as port:
        dead = f"http://127.0.0.1:{port}"
        env = child_env(MLFLOW_TRACKING_URI=dead)
        proc = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    assert proc.returncode == 1
    assert "error: stage 'register' failed: cannot use the MLflow" in proc.stderr, proc.stderr
    assert dead in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.json").exists()


# --- the issue's check: dvc repro twice, the second time with a worse model ----------------------


def _set_params(repo: Path, **sections: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section] = {**(params.get(section) or {}), **values}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.e2e
def test_dvc_repro_twice_worse_params_leave_the_champion(tmp_path: Path) -> None:
    import mlflow

    repo = make_scratch_repo(tmp_path)
    _set_params(
        repo,
        **{
            k: v
            for k, v in tiny_params().model_dump(by_alias=True).items()
            if k in ("synthetic", "validate", "train", "register")
        },
    )
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"]["downstream"] = {
        "cmd": "python -c \"import shutil; shutil.copy('reports/promotion.json', 'copy.json')\"",
        "deps": ["reports/promotion.json"],
        "outs": [{"copy.json": {"cache": False}}],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    env = child_env(MLFLOW_TRACKING_URI=uri)
    dvc = [sys.executable, "-m", "dvc"]

    run_checked([*dvc, "repro", "register"], repo, env)
    first = json.loads((repo / "reports" / "promotion.json").read_text())
    assert first["decision"] == "promoted" and first["candidate_version"] == 1
    # The lineage hashes the lock as DVC wrote it for the stages upstream of register.
    assert first["lineage"]["lineage.dvc_lock_sha256"] == lock_digest(repo / "dvc.lock")
    assert first["lineage"]["lineage.git_commit"] == tracking.git_commit(repo)
    shown = run_checked([*dvc, "metrics", "show", "--json"], repo, env).stdout
    assert "reports/promotion.json" in shown

    # Forced reruns of register are byte-stable, with a stage downstream of it (as package is)
    # whose dvc.lock entry appears after the first run and changes with every register run.
    promotion = (repo / "reports" / "promotion.json").read_bytes()
    run_checked([*dvc, "repro", "downstream"], repo, env)
    for _ in range(2):
        forced = run_checked([*dvc, "repro", "--force", "--single-item", "register"], repo, env)
        assert (repo / "reports" / "promotion.json").read_bytes() == promotion, forced.stdout
    after = run_checked([*dvc, "repro", "downstream"], repo, env)
    assert "Stage 'downstream' didn't change, skipping" in after.stdout
    v1 = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("recommender", 1)
    assert v1.tags["lineage.dvc_lock_sha256"] == first["lineage"]["lineage.dvc_lock_sha256"]

    _set_params(repo, train={"epochs": 1, "biased_mf": {"l2": 100.0}})
    second_run = run_checked([*dvc, "repro", "register"], repo, env)
    second = json.loads((repo / "reports" / "promotion.json").read_text())
    assert second["decision"] == "rejected", second_run.stdout
    assert second["candidate_version"] == 2 and second["champion_version"] == 1

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "recommender"
    assert int(client.get_model_version_by_alias(name, CHAMPION).version) == 1
    assert int(client.get_model_version_by_alias(name, CHALLENGER).version) == 2

    # dvc.lock is not a dependency of register: a third repro has nothing to do.
    third = run_checked([*dvc, "repro", "register"], repo, env)
    assert "Stage 'register' didn't change, skipping" in third.stdout


# --- hardening: kills at named points, two stages at once, identical retrains, a broken champion --


def _running_runs(store: Store) -> list[str]:
    client = _client(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs]


def _scratch_debris(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("recommender-*")) + sorted(tmp.glob("register-*"))


@pytest.mark.parametrize("point", ["register.before_alias", "register.after_alias"])
def test_killed_around_the_alias_move_a_plain_rerun_converges(
    store: Store, tmp_path: Path, point: str
) -> None:
    from recommender.tracking.gate_lock import LOCK_SUFFIX
    from recommender.tracking.registry import load_version_bundle

    name = f"kill-{point.split('.')[1]}"
    _register(store, "base", name, tmp_path / "p1.json")
    better = store.models["better"]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args = _stage_args(
        better, _params_file(better.params, tmp_path / "params.yaml", name), store.data_dir,
        tmp_path / "p2.json",
    )  # fmt: skip
    env = child_env(MLFLOW_TRACKING_URI=store.uri, TMPDIR=str(scratch))
    killed = subprocess.run(
        args, cwd=tmp_path, env={**env, "RECOMMENDER_FAILPOINT": point}, timeout=300
    )
    assert killed.returncode == -9  # SIGKILL: no cleanup of any kind ran
    assert not (tmp_path / "p2.json").exists()
    assert _alias(store, name, CHAMPION) == (1 if point.endswith("before_alias") else 2)
    assert name + LOCK_SUFFIX in {m.name for m in _client(store).search_registered_models()}
    assert _scratch_debris(scratch)  # the killed stage's temporary folder is still there

    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((tmp_path / "p2.json").read_text())
    assert record["candidate_version"] == 2 and _versions(store, name) == [1, 2]
    assert _alias(store, name, CHAMPION) == 2
    # Promoted either way: over version 1, or (after the alias moved) a replay of that promotion.
    assert record["decision"] == "promoted" and record["champion_version"] == 1
    assert load_version_bundle(name, "2", tmp_path / "dl").n_users > 0
    assert name + LOCK_SUFFIX not in {m.name for m in _client(store).search_registered_models()}
    assert _scratch_debris(scratch) == []
    assert _running_runs(store) == []


def test_two_register_stages_at_once_promote_over_one_champion_at_most_once(
    store: Store, tmp_path: Path
) -> None:
    from recommender.tracking.gate_lock import LOCK_SUFFIX

    name = "race"
    _register(store, "base", name, tmp_path / "p0.json")  # version 1, the champion
    # ... and a register that crashed holding the lock: both stages find it and take it over.
    dead = subprocess.Popen(["true"])
    dead.wait()
    crashed = {"host": socket.gethostname(), "pid": str(dead.pid), "nonce": "crashed"}
    crashed.update(lease_s="120", lease_until=f"{time.time() + 120:.3f}")
    _client(store).create_registered_model(name + LOCK_SUFFIX, tags=crashed)
    procs, outs = [], []
    for model in ("better", "twin"):  # both clearly better than base
        trained = store.models[model]
        outs.append(tmp_path / f"{model}.json")
        args = _stage_args(
            trained, _params_file(trained.params, tmp_path / f"{model}.yaml", name),
            store.data_dir, outs[-1],
        )  # fmt: skip
        env = child_env(MLFLOW_TRACKING_URI=store.uri)
        procs.append(subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()

    records = [json.loads(out.read_text()) for out in outs]
    promoted_over = [r["champion_version"] for r in records if r["decision"] == "promoted"]
    assert len(promoted_over) == len(set(promoted_over))  # never two promotions over one champion
    assert promoted_over and promoted_over[0] == 1
    client = _client(store)
    for record in records:  # each report says what the registry holds
        version = str(record["candidate_version"])
        assert client.get_model_version(name, version).tags["gate.decision"] == record["decision"]
    # The champion is the end of the chain of promotions (a second one gated against the first).
    promoted = [r for r in records if r["decision"] == "promoted"]
    replaced = {r["champion_version"] for r in promoted}
    (last,) = [r for r in promoted if r["candidate_version"] not in replaced]
    assert _alias(store, name, CHAMPION) == last["candidate_version"]
    assert sorted(r["candidate_version"] for r in records) == [2, 3]  # one version per run
    left = _client(store).search_registered_models(f"name LIKE '{name}{LOCK_SUFFIX}%'")
    assert left == []  # neither the crashed lock nor any claim on it


def _retrain(store: Store, model: str, out: Path, name: str) -> tuple[Trained, Params]:
    """``model``'s settings trained again: a new MLflow run with artifacts of its own."""
    from recommender.dataset.processed import load_processed
    from recommender.evaluation.run import evaluate_and_log
    from recommender.training.run import train_and_log

    source = store.models[model]
    history = out / "history.csv"
    processed = load_processed(store.data_dir)
    record = train_and_log(processed, source.params, store.data_dir, out / "models", history)
    evaluate_and_log(
        source.params, store.data_dir, out / "models", out / "metrics.json", out / "plots", history
    )
    trained = Trained(source.params, out / "models", out / "metrics.json", record["run_id"])
    params = trained.params.model_copy(
        update={"tracking": trained.params.tracking.model_copy(update={"registered_model": name})}
    )
    return trained, params


def test_an_identical_retrain_reuses_the_version(store: Store, tmp_path: Path) -> None:
    name = "identical"
    first = _register(store, "base", name, tmp_path / "p1.json")
    trained, params = _retrain(store, "base", tmp_path / "again", name)
    assert trained.run_id != store.models["base"].run_id  # a new MLflow run ...

    second = register_and_gate(
        params, trained.model_dir, store.data_dir, trained.metrics, tmp_path / "p2.json", None,
        project_dir=ROOT,
    )  # fmt: skip

    # ... of the same model: no second version.
    assert _versions(store, name) == [1]
    assert second["candidate_version"] == first["candidate_version"] == 1
    digest = "lineage.content_sha256"
    assert second["lineage"][digest] == first["lineage"][digest]


def test_a_champion_that_cannot_load_is_named_with_the_way_out(
    store: Store, tmp_path: Path
) -> None:
    name = "broken"
    trained, params = _retrain(store, "base", tmp_path / "own", name)  # artifacts of its own
    register_and_gate(
        params, trained.model_dir, store.data_dir, trained.metrics, tmp_path / "p1.json", None,
        project_dir=ROOT,
    )  # fmt: skip
    source = _client(store).get_model_version_download_uri(name, "1")
    files = list(Path(source.removeprefix("file://")).rglob("model.keras"))
    assert files, source
    for path in files:  # truncated, as a full disk or an interrupted copy would leave it
        path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(RegistryError) as caught:
        _register(store, "better", name, tmp_path / "p2.json")

    message = str(caught.value)
    assert f"model version {name}/1 cannot be loaded" in message
    assert f"delete_registered_model_alias('{name}', 'champion')" in message
    assert not (tmp_path / "p2.json").exists()
    assert _alias(store, name, CHAMPION) == 1
    # The new version exists, and says its gate did not finish, and why.
    tags = _client(store).get_model_version(name, "2").tags
    assert tags["gate.decision"] == "failed"
    assert "current champion cannot be judged against" in tags["gate.reason"]


def test_a_register_that_fails_after_creating_the_version_marks_it_failed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recommender.registry import register

    name = "fails-late"
    _register(store, "base", name, tmp_path / "p1.json")

    def fall_over(*args: object) -> None:
        raise RuntimeError("the registry fell over")

    # The worst moment: the version is tagged promoted, and the alias move fails.
    monkeypatch.setattr(register, "_move_alias", fall_over)
    with pytest.raises(RuntimeError, match="fell over"):
        _register(store, "better", name, tmp_path / "p2.json")
    monkeypatch.undo()

    client = _client(store)
    tags = client.get_model_version(name, "2").tags
    assert tags["gate.decision"] == "failed"
    assert tags["gate.reason"] == (
        "register failed before the gate finished: RuntimeError: the registry fell over"
    )
    assert "gate.record" not in tags  # no tag says promoted of a version @champion never reached
    run = client.get_run(store.models["better"].run_id)
    assert run.data.tags["gate.decision"] == "failed"
    assert _alias(store, name, CHAMPION) == 1 and not (tmp_path / "p2.json").exists()

    # A rerun resumes with the same version and finishes the job; the tags follow.
    rerun = _register(store, "better", name, tmp_path / "p3.json")
    assert rerun["decision"] == "promoted" and rerun["candidate_version"] == 2
    assert client.get_model_version(name, "2").tags["gate.decision"] == "promoted"
    assert _alias(store, name, CHAMPION) == 2 and _versions(store, name) == [1, 2]
