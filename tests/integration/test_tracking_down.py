"""Stages against a tracking server that is down, or dies while they run; train killed mid-epoch.

Every stage that needs MLflow probes it first with one request and no retries, so a server that
is down fails the stage at once with one line naming the (redacted) URI, before any work and
with every output as it was. A server that dies mid-stage costs two quick retries, then the
same kind of line. A train process killed outright leaves a RUNNING run and a staging folder;
the next train ends the run as KILLED and removes the folder.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from integration_helpers import start_mlflow_server, unavailable_server
from support import ROOT, child_env, closed_port, run_checked, stop, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@dataclass(frozen=True)
class Project:
    root: Path
    uri: str  # the SQLite store the model was trained against


STAGES = {
    "train": ["--data", "processed", "--out", "models", "--history", "history.csv"],
    "evaluate": [
        "--data", "processed", "--model", "models", "--metrics", "metrics.json",
        "--plots", "plots", "--history", "history.csv",
    ],
    "register": [
        "--data", "processed", "--model", "models", "--metrics", "metrics.json",
        "--out", "promotion.json",
    ],
    "package": [
        "--serving", str(ROOT / "serving"), "--bentoml-home", "bentoml", "--out", "package.json",
    ],
}  # fmt: skip


def _stage(name: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline" / f"{name}.py"), "--params", "params.yaml"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Processed data, a trained and evaluated tiny model, against a SQLite store."""
    from recommender.data.synthetic import generate
    from recommender.dataset.processed import write_processed
    from recommender.preprocess.split import preprocess

    root = tmp_path_factory.mktemp("down")
    params = tiny_params(train={"model": "biased_mf", "epochs": 2})
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    dataset = generate(params.synthetic, params.seed)
    write_processed(preprocess(dataset, params.preprocess, params.seed), root / "processed")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = child_env(MLFLOW_TRACKING_URI=uri)
    for name in ("train", "evaluate"):
        run_checked([*_stage(name), *STAGES[name]], root, env)
    return Project(root, uri)


def _outputs(root: Path) -> dict[str, bytes]:
    names = ("models/run.json", "metrics.json", "promotion.json", "package.json")
    return {n: (root / n).read_bytes() for n in names if (root / n).exists()}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_closed_port_fails_the_stage_in_one_line_naming_the_redacted_uri(
    project: Project, stage: str
) -> None:
    before = _outputs(project.root)
    with closed_port() as port:
        uri = f"http://alice:s3cret@127.0.0.1:{port}"
        started = time.monotonic()
        proc = subprocess.run(
            [*_stage(stage), *STAGES[stage]], cwd=project.root, capture_output=True, text=True,
            env=child_env(MLFLOW_TRACKING_URI=uri), timeout=300,
        )  # fmt: skip
        seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"error: stage '{stage}' failed: ")
    assert f"http://alice:***@127.0.0.1:{port}" in line
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr
    assert _outputs(project.root) == before
    print(f"{stage}: failed in {seconds:.1f} s")  # the note's figure (-s to see it)


@pytest.mark.parametrize("stage", ["train", "evaluate", "package"])
def test_a_failing_server_is_asked_once_not_for_minutes(project: Project, stage: str) -> None:
    # Fast, measured without a clock: MLflow alone retries a 503 seven times over ~4 minutes.
    with unavailable_server() as (uri, seen):
        proc = subprocess.run(
            [*_stage(stage), *STAGES[stage]], cwd=project.root, capture_output=True, text=True,
            env=child_env(MLFLOW_TRACKING_URI=uri), timeout=300,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert len(seen) == 1, seen
    assert f"cannot reach the MLflow tracking store at {uri}" in proc.stderr


def test_a_server_killed_mid_train_fails_the_stage_in_one_line(
    project: Project, tmp_path: Path
) -> None:
    import mlflow

    proc_server, server = start_mlflow_server(f"sqlite:///{tmp_path / 'srv.db'}", tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(
        yaml.safe_dump(
            tiny_params(train={"model": "biased_mf", "epochs": 400, "patience": 400}).model_dump(
                mode="json", by_alias=True
            )
        )
    )
    (work / "processed").symlink_to(project.root / "processed")
    train = subprocess.Popen(
        [*_stage("train"), *STAGES["train"]], cwd=work, stderr=subprocess.PIPE, text=True,
        env=child_env(MLFLOW_TRACKING_URI=server.uri),
    )  # fmt: skip
    try:
        client = mlflow.MlflowClient(server.uri)
        deadline = time.monotonic() + 300
        while True:  # kill the server once the run is logging epochs
            assert train.poll() is None and time.monotonic() < deadline, "train never logged"
            runs = client.search_runs(
                ["0", *[e.experiment_id for e in client.search_experiments()]]
            )
            if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                break
            time.sleep(0.5)
    finally:
        stop(proc_server)
    _, err = train.communicate(timeout=120)
    assert train.returncode == 1, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert f"lost the MLflow tracking server at {server.uri}" in line, err
    assert "Traceback" not in err
    assert not (work / "models").exists()
    assert not list(work.glob(".models.*.tmp"))


def test_train_killed_mid_epoch_leaves_nothing_a_rerun_does_not_clean(
    project: Project, tmp_path: Path
) -> None:
    import mlflow

    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text((project.root / "params.yaml").read_text())
    (work / "processed").symlink_to(project.root / "processed")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = child_env(MLFLOW_TRACKING_URI=uri, TMPDIR=str(scratch))
    args = [*_stage("train"), *STAGES["train"]]

    crashed = subprocess.run(
        args, cwd=work, env={**env, "RECOMMENDER_FAILPOINT": "train.batch@3"}, timeout=300
    )

    assert crashed.returncode == -9
    client = mlflow.MlflowClient(uri)
    experiment = yaml.safe_load((work / "params.yaml").read_text())["tracking"]["experiment"]
    # The train run and the nested run of the knob search's first trial (train.search).
    killed = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert killed and {r.info.status for r in killed} == {"RUNNING"}  # what a SIGKILL leaves
    assert list(work.glob(".models.*.tmp")) and list(scratch.iterdir())

    run_checked(args, work, env)

    assert {client.get_run(r.info.run_id).info.status for r in killed} == {"KILLED"}
    statuses = {r.info.status for r in client.search_runs([killed[0].info.experiment_id])}
    assert statuses == {"KILLED", "FINISHED"}
    assert not list(work.glob(".models.*.tmp")) and list(scratch.iterdir()) == []
    assert (work / "models" / "run.json").is_file()
