"""``pipeline/monitor.py`` end to end: a log in the contract's format and the tiny processed
data give ``reports/monitor/`` (summary, an offline page, the feedback's Data Docs) and a run in
MLflow's ``monitoring`` experiment; a failed run keeps the previous report.

Real Great Expectations, a real MLflow SQLite store in ``tmp_path``, no mocks.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monitor_support import record, write_log
from support import child_env, closed_port, tiny_raw
from test_datadocs import problems

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "pipeline" / "monitor.py"
T0 = 1_793_491_200.0  # 2026-11-01T00:00Z
UNTIL = "2026-11-08T00:00:00Z"
MODEL = "recommender"

pytestmark = pytest.mark.slow  # Great Expectations' Data Docs and MLflow runs: ~10 s


def write_project(folder: Path, processed, with_bad_lines: bool = True) -> None:
    """params.yaml, reports/metrics.json and a week of log: served lists, feedback, the rest."""
    import yaml

    raw = tiny_raw(monitor={"min_feedback": 50, "min_served": 5, "min_drift_rows": 50})
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    (folder / "reports").mkdir(exist_ok=True)
    metrics = {"ranking": {"ndcg@10": 0.35}}
    (folder / "reports" / "metrics.json").write_text(json.dumps(metrics))
    rng = np.random.default_rng(0)
    train = processed.train
    users = train["user_id"].unique()[:60]
    items = train["item_id"].value_counts().index.to_numpy()
    log = folder / "logs" / "inference"
    served, feedback = [], []
    for n, user in enumerate(users):
        t = T0 + n * 3600.0
        top = [int(i) for i in rng.choice(items[:50], 10, replace=False)]
        served.append(record("recommend", t, user_id=int(user), items=top))
        for i in top[:2] + [int(items[-1 - n])]:  # two served items and a tail item
            rating = float(rng.integers(1, 6))
            feedback.append(record("feedback", t + 60, user_id=int(user), item_id=i, rating=rating))
    feedback.append(record("feedback", T0 + 99, user_id=99_999, item_id=int(items[0]), rating=5.0))
    # An item the catalog does not have yet: new data, not a validation failure.
    feedback.append(record("feedback", T0 + 98, user_id=99_999, item_id=88_888, rating=4.0))
    write_log(log, "recommend", served[:30], rotated="2026-11-03")
    write_log(log, "recommend", served[30:], tail='{"x_request_id": "cut' if with_bad_lines else "")
    write_log(log, "feedback", feedback)
    write_log(log, "similar_items", [record("similar_items", T0 + 5, unknown_item=True),
                                     record("similar_items", T0 + 6, items=[1, 2])])  # fmt: skip
    write_log(log, "predict", [record("predict", T0 + 7, user_ids=[1, 2], item_ids=[3, 4],
                                      scores=[3.0, 4.0], unknown_items=1)])  # fmt: skip


def run_monitor(folder: Path, processed_dir: Path, *extra: str) -> tuple[int, str]:
    """``pipeline/monitor.py`` in this process, as ``make monitor`` runs it (from ``folder``)."""
    import contextlib
    import io
    import os

    from recommender.core.stage import run_stage

    stage = runpy.run_path(str(SCRIPT))  # not as __main__: its function and arguments
    argv = ["--out", "reports/monitor", "--processed", str(processed_dir), "--until", UNTIL,
            "--logs", "logs/inference", *extra]  # fmt: skip
    stderr, cwd = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr):
            code = run_stage("monitor", stage["monitor"], stage["configure"], argv)
    finally:
        os.chdir(cwd)
    return code, stderr.getvalue()


def add_champion(uri: str, ndcg: float) -> str:
    """A registered model whose ``@champion`` version's run logged ``ranking_ndcg_at_10``."""
    import mlflow

    # Both URIs: MlflowClient(uri) alone registers in the process-wide registry URI, which an
    # earlier test in this worker may have set to its own store.
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("recommender")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "ranking_ndcg_at_10", ndcg)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL)
    version = client.create_model_version(
        MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(MODEL, "champion", version.version)
    return run.info.run_id


@pytest.fixture
def project(tmp_path: Path, processed, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # MLflow resolves a store's artifact root (./mlruns) from the folder it is first used in.
    monkeypatch.chdir(tmp_path)
    write_project(tmp_path, processed)
    return tmp_path, uri


def test_the_report_its_data_docs_and_the_mlflow_run(
    project: tuple[Path, str], processed_dir: Path
) -> None:
    import mlflow

    folder, uri = project
    champion_run = add_champion(uri, 0.42)
    code, err = run_monitor(folder, processed_dir)
    assert code == 0, err
    out = folder / "reports" / "monitor"
    summary = json.loads((out / "summary.json").read_text())

    assert isinstance(summary["retrain"], bool) and summary["reason"]
    assert summary["window"]["until"] == "2026-11-08T00:00:00Z"
    assert summary["window"]["since"] == "2026-11-01T00:00:00Z"
    traffic = summary["traffic"]
    assert traffic["requests"] == {"recommend": 60, "similar_items": 2, "predict": 1,
                                   "feedback": 182}  # fmt: skip
    assert traffic["malformed_lines"] == 1 and traffic["truncated_lines"] == 1
    assert traffic["unknown_item_share"] == 0.5 and traffic["cold_start_share"] == 0.0
    assert traffic["predict_unknown_item_share"] == 0.5
    assert traffic["latency_ms"]["recommend"] == {"p50": 2.5, "p95": 2.5}
    drift = summary["drift"]
    assert drift["feedback_ratings"] == 182 and drift["new_users"] == 1
    assert drift["new_items"] == 1
    for name in ("ratings", "item_popularity", "user_activity"):
        assert drift[name]["psi"] >= 0 and 0 <= drift[name]["js"] <= 1
    online = summary["online"]
    assert online["served_lists"] == 60 and online["followed_lists"] > 0
    assert online["offline_ndcg@10"] == 0.42
    assert online["offline_source"].startswith(f"registry: {MODEL}@champion (version 1")
    assert 0 < online["coverage"] <= 1 and 50 < online["popularity_percentile"] <= 100
    # Volume alone passes min_feedback (50): a reason of kind "volume".
    assert summary["retrain"] is True
    assert "volume" in [r["kind"] for r in summary["reasons"]]
    assert summary["validation"]["success"] is True and summary["validation"]["rows"] == 182

    # The page and the Data Docs load nothing from another host, and every local file exists.
    assert (out / "index.html").is_file() and (out / "validation" / "index.html").is_file()
    assert problems(out) == []
    page = (out / "index.html").read_text()
    assert "<link" not in page and "<script" not in page and "Retrain" in page

    run = mlflow.MlflowClient(uri).get_run(summary["mlflow"]["run_id"])
    experiment = mlflow.MlflowClient(uri).get_experiment(run.info.experiment_id)
    assert experiment.name == "monitoring" and run.info.status == "FINISHED"
    assert run.data.tags["retrain"] == "true"
    assert run.data.params["window.until"] == "2026-11-08T00:00:00Z"
    assert run.data.params["monitor.psi_threshold"] == "0.2"
    metrics = run.data.metrics
    assert metrics["retrain"] == 1.0 and metrics["traffic_requests_recommend"] == 60
    assert metrics["online_offline_ndcg_at_10"] == 0.42
    assert "drift_item_popularity_psi" in metrics and "online_ndcg_at_10" in metrics
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run.info.run_id, "report")}
    assert {"report/index.html", "report/summary.json", "report/validation"} <= artifacts
    assert champion_run != run.info.run_id


def test_without_a_champion_the_offline_figure_comes_from_metrics_json(
    project: tuple[Path, str], processed_dir: Path
) -> None:
    folder, _ = project
    code, err = run_monitor(folder, processed_dir, "--window-hours", "all")
    assert code == 0, err
    summary = json.loads((folder / "reports" / "monitor" / "summary.json").read_text())
    assert summary["window"]["since"] is None
    assert summary["online"]["offline_ndcg@10"] == 0.35
    source = summary["online"]["offline_source"]
    assert source.startswith("reports/metrics.json (ranking.ndcg@10), since ")
    assert "@champion" in source


def test_a_failed_run_keeps_the_previous_report(
    project: tuple[Path, str], processed_dir: Path
) -> None:
    folder, uri = project
    assert run_monitor(folder, processed_dir)[0] == 0
    out = folder / "reports" / "monitor"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    missing = folder / "data" / "processed"
    failed = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", "reports/monitor", "--processed", str(missing),
         "--logs", "logs/inference"],
        cwd=folder, env=child_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"error: stage 'monitor' failed: {missing}: no such folder")
    assert "Traceback" not in failed.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json", "monitor"]


def test_with_the_tracking_server_down_the_report_says_so_and_uses_metrics_json(
    project: tuple[Path, str],
    processed_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder, _ = project
    with closed_port() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        code, err = run_monitor(folder, processed_dir)
    assert code == 0, err
    summary = json.loads((folder / "reports" / "monitor" / "summary.json").read_text())
    assert summary["mlflow"]["run_id"] is None
    assert (
        f"cannot reach the MLflow tracking store at http://127.0.0.1:{port}"
        in (summary["mlflow"]["error"])
    )
    assert summary["online"]["offline_ndcg@10"] == 0.35
    assert summary["online"]["offline_source"].startswith("reports/metrics.json (ranking.ndcg@10)")
    assert "no MLflow run: cannot reach the MLflow tracking store" in caplog.text
    assert (folder / "reports" / "monitor" / "index.html").is_file()
