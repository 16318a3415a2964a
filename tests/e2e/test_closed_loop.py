"""The closed loop end to end, on small data and real tools (issue 23).

A scratch git + DVC repository (the project's pipeline and code) trains v1 on the older part of a
seeded synthetic dataset; a real ``bentoml serve`` of the packaged Bento answers requests and takes
the newer ratings as ``POST /feedback``; ``pipeline/monitor.py`` reads the log and says retrain;
``dvc repro`` snapshots the feedback, trains v2 on both, gates it against v1 on its test rows
and packages it only on promotion; v2 is then served.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import child_env, make_scratch_repo, run_checked, tiny_raw

from recommender.core import processes
from recommender.core.config import SyntheticConfig
from recommender.data.synthetic import generate

pytestmark = pytest.mark.e2e

#: The seeded synthetic data (more ratings than the other pipeline tests' tiny set, so that a
#: model trained on half of it beats popularity and one trained on all of it clearly beats that).
DATA = {"n_users": 150, "n_items": 200, "n_ratings": 12_000}
#: The share of the ratings (a random draw) v1 is trained on; the rest comes back as feedback.
BASE_SHARE = 0.5


def _post(port: int, path: str, body: dict) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}"), resp.getheader("x-request-id") or ""
    finally:
        conn.close()


@contextmanager
def _serving(repo: Path, env: dict[str, str], bento: str, log: Path) -> Iterator[int]:
    port = processes.free_port()
    proc = processes.start_in_group(
        ["bentoml", "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=env,
        cwd=repo,
    )
    try:
        try:
            processes.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=240, proc=proc)
        except processes.NotReady as exc:
            pytest.fail(f"{exc}:\n{log.read_text()[-4000:]}")
        yield port
    finally:
        processes.stop_group(proc)


def _model_version(port: int) -> str:
    status, info, _ = _post(port, "/model_info", {})
    assert status == 200, info
    return str(info["version"])


def test_served_feedback_retrains_through_the_gate_and_v2_is_served(tmp_path: Path) -> None:
    ratings = generate(SyntheticConfig(**DATA), seed=5).ratings
    ratings = ratings.sample(frac=1.0, random_state=5).reset_index(drop=True)
    cut = int(len(ratings) * BASE_SHARE)
    base, later = ratings.iloc[:cut], ratings.iloc[cut:].sort_values("timestamp", kind="stable")

    repo = make_scratch_repo(tmp_path)
    (repo / "inputs").mkdir()
    base.to_csv(repo / "inputs" / "base.csv", index=False)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for name, values in tiny_raw(
        data={"source": "csv", "path": "inputs/base.csv"},
        synthetic=DATA,
        monitor={"min_feedback": 500},
    ).items():
        raw[name] = {**(raw.get(name) or {}), **values}
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = child_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", BENTOML_HOME=str(repo / "bentoml")
    )
    dvc = [sys.executable, "-m", "dvc"]

    # v1: the whole pipeline on the older ratings; the first model to beat popularity is champion.
    run_checked([*dvc, "repro"], repo, env)
    v1 = json.loads((repo / "reports" / "package.json").read_text())
    assert v1["packaged"] and str(v1["version"]) == "1"
    snapshot = json.loads((repo / "data" / "feedback" / "summary.json").read_text())
    assert snapshot["ratings"] == 0  # nothing served yet

    # Served: one list per user, then each of the user's newer ratings as feedback on it.
    with _serving(repo, env, v1["bento"], tmp_path / "serve-v1.log") as port:
        assert _model_version(port) == "1"
        for user, rows in later.groupby("user_id", sort=False):
            status, answer, request_id = _post(port, "/recommend", {"user_id": int(user), "k": 10})
            assert status == 200 and len(answer["items"]) == 10, answer
            for row in rows.itertuples():
                body = {
                    "user_id": int(user),
                    "item_id": int(row.item_id),
                    "rating": float(row.rating),
                    "timestamp": int(row.timestamp),
                    "request_id": request_id,
                }
                status, answer, _ = _post(port, "/feedback", body)
                assert status == 200, answer

    # The monitor reads the log: enough new feedback says retrain.
    run_checked([sys.executable, "pipeline/monitor.py", "--out", "reports/monitor"], repo, env)
    summary = json.loads((repo / "reports" / "monitor" / "summary.json").read_text())
    assert summary["retrain"] is True, summary
    assert summary["reason"]
    assert (repo / "reports" / "monitor" / "index.html").is_file()

    # Retrain: the snapshot holds every logged rating, ingest merges them, the gate decides.
    run_checked([*dvc, "repro"], repo, env)
    snapshot = json.loads((repo / "data" / "feedback" / "summary.json").read_text())
    assert snapshot["ratings"] == len(later)
    interim = pd.read_parquet(repo / "data" / "interim" / "ratings.parquet")
    assert len(interim) == len(ratings)
    promotion = json.loads((repo / "reports" / "promotion.json").read_text())
    assert (promotion["candidate_version"], promotion["champion_version"]) == (2, 1)
    v2 = json.loads((repo / "reports" / "package.json").read_text())
    # v2 learnt from twice the ratings; the gate re-scores v1 on v2's test rows. The random
    # split is a hash of each rating's ids, so a rating keeps its side as the data grows: none
    # of v2's test rows is one v1 trained on, and the two are compared on all of them.
    assert 0 < promotion["compared_rows"] == promotion["test_rows"]
    assert promotion["decision"] == "promoted", promotion["reason"]
    assert str(v2["version"]) == "2" and v2["bento"] != v1["bento"]
    with _serving(repo, env, v2["bento"], tmp_path / "serve-v2.log") as port:
        assert _model_version(port) == "2"

    # Nothing new logged: the next repro leaves everything after the feedback stage as it was.
    again = run_checked([*dvc, "repro"], repo, env)
    assert "Running stage 'train'" not in again.stdout
