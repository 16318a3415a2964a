"""The closed loop, replayed on MovieLens 100K: serve v1, log feedback, monitor, retrain, gate, v2.

    python benchmarks/loop.py --ml100k ../shared/data/ml-100k \\
        --out reports/bench_loop.md --json reports/bench_loop.json

(``make bench-loop``.) ML-100K's ratings sorted by time are cut in three: ``base`` (the first 80%),
window ``A`` (the next 10%) and window ``B`` (the last 10%). In a scratch git + DVC repository
(``tests/support.make_scratch_repo``: the project's dvc.yaml, params.yaml and code; its own MLflow
store and ``BENTOML_HOME``; telemetry off), with params.yaml's defaults except the data (``base``
as a CSV) and a temporal split whose test part is the newest 5% (so the gate's holdout is the
newest ratings, which after the retrain are the feedback):

1. ``dvc repro``: v1 is trained on ``base``, registered as champion and packaged.
2. v1 is served (``bentoml serve`` of its Bento on 127.0.0.1, inference log on). Window A is
   replayed in time order as a user's sessions (a session: one user's ratings with gaps under
   :data:`SESSION_GAP_S`): at a session's start the client asks ``/recommend`` (k=10), then sends
   each of the session's ratings to ``/feedback`` with that answer's ``X-Request-ID``.
3. ``pipeline/monitor.py`` reads the log (traffic, drift against the training data, online
   quality, the retrain verdict).
4. ``dvc repro`` again: the ``feedback`` stage snapshots the logged ratings, ``ingest`` merges
   them, v2 is trained on ``base`` + A and gated against v1 on the newest ratings; ``package``
   builds a new Bento only if v2 was promoted.
5. Window B is replayed (requests only) against v1 and, if promoted, v2.

Online figures, per served list of a session with at least one positive rating (>= 4): hit
rate@10 (a positive of the session is in the list) and NDCG@10 (the session's positives as the
relevant set). Wall time of every step. The report says the load average at its start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from recommender.core import processes  # noqa: E402
from recommender.scoring import metrics  # noqa: E402

K = 10
RELEVANT = 4.0
#: A gap longer than this between two ratings of one user starts a new session.
SESSION_GAP_S = 3600
BASE, WINDOW = 0.8, 0.1
BUSY_LOAD = 1.5


@dataclass
class Session:
    user: int
    items: list[int]
    ratings: list[float]

    @property
    def positives(self) -> set[int]:
        return {i for i, r in zip(self.items, self.ratings, strict=True) if r >= RELEVANT}


@dataclass
class Online:
    lists: int = 0
    judged: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    cold_start: int = 0
    feedback: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        judged = max(self.judged, 1)
        return {
            "lists": self.lists,
            "judged_lists": self.judged,
            f"hit_rate@{K}": round(self.hits / judged, 4),
            f"ndcg@{K}": round(self.ndcg_sum / judged, 4),
            "cold_start_lists": self.cold_start,
            "feedback_sent": self.feedback,
            "errors": self.errors[:5],
            "error_count": len(self.errors),
            "seconds": round(self.seconds, 1),
        }


def read_ml100k(folder: Path) -> pd.DataFrame:
    ratings = pd.read_csv(
        folder / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    )
    return ratings.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(
        drop=True
    )


def cut(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    a, b = int(len(ratings) * BASE), int(len(ratings) * (BASE + WINDOW))
    return ratings.iloc[:a], ratings.iloc[a:b], ratings.iloc[b:]


def sessions(window: pd.DataFrame) -> list[Session]:
    """The window's ratings as sessions, ordered by their first rating's time."""
    out: list[tuple[int, Session]] = []
    for user, rows in window.groupby("user_id", sort=False):
        times = rows["timestamp"].to_numpy()
        starts = np.flatnonzero(
            np.diff(times, prepend=times[0] - SESSION_GAP_S - 1) > SESSION_GAP_S
        )
        bounds = [*starts, len(rows)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            part = rows.iloc[lo:hi]
            session = Session(int(user), part["item_id"].tolist(), part["rating"].tolist())
            out.append((int(times[lo]), session))
    out.sort(key=lambda pair: pair[0])
    return [s for _, s in out]


def ndcg(served: list[int], relevant: set[int]) -> float:
    """NDCG@K of one served list (-1 pads a short one), as evaluate scores a ranking."""
    top = np.full((1, K), -1, np.int64)
    top[0, : min(len(served), K)] = served[:K]
    return float(metrics.ndcg_per_user(top, [relevant], K)[0])


class Client:
    """One keep-alive HTTP connection to the service."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        self.conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        payload = json.loads(data) if data else {}
        return resp.status, payload, resp.getheader("x-request-id") or ""


def replay(port: int, window: list[Session], send_feedback: bool) -> Online:
    """Ask for each session's list, judge it by the session's positives, optionally send them."""
    client, online = Client(port), Online()
    started = time.perf_counter()
    for session in window:
        status, answer, request_id = client.post("/recommend", {"user_id": session.user, "k": K})
        if status != 200:
            online.errors.append(f"/recommend {status}: {answer}")
            continue
        served = [int(entry["item_id"]) for entry in answer["items"]]
        online.lists += 1
        online.cold_start += bool(answer.get("cold_start"))
        if session.positives:
            online.judged += 1
            online.hits += bool(session.positives & set(served))
            online.ndcg_sum += ndcg(served, session.positives)
        if not send_feedback:
            continue
        for item, rating in zip(session.items, session.ratings, strict=True):
            body = {
                "user_id": session.user,
                "item_id": item,
                "rating": float(rating),
                "request_id": request_id,
            }
            status, answer, _ = client.post("/feedback", body)
            if status != 200:
                online.errors.append(f"/feedback {status}: {answer}")
            else:
                online.feedback += 1
    online.seconds = time.perf_counter() - started
    return online


def rank_in_process(bundle_dir: Path, window: list[Session]) -> Online:
    """The same judgement for a model that is not served: its bundle ranks each session's user
    through ``ModelBundle.recommend``, the code the service runs (cold start included)."""
    from recommender.scoring.bundle import ModelBundle

    bundle, online = ModelBundle.load(bundle_dir), Online()
    started = time.perf_counter()
    for session in window:
        users = bundle.user_index(np.array([session.user]))
        top = bundle.recommend(users, K).items[0]
        served = [int(i) for i in bundle.item_vocab.decode(top[top > 0])]
        online.lists += 1
        online.cold_start += bool(users[0] == 0)
        if session.positives:
            online.judged += 1
            online.hits += bool(session.positives & set(served))
            online.ndcg_sum += ndcg(served, session.positives)
    online.seconds = time.perf_counter() - started
    return online


# --- the scratch repository ----------------------------------------------------------------------


@dataclass
class Scratch:
    repo: Path
    env: dict[str, str]
    logs: Path
    steps: dict[str, float] = field(default_factory=dict)

    def run(self, step: str, args: list[str]) -> subprocess.CompletedProcess:
        print(f"[loop] {step} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        with open(self.logs / f"{step}.log", "w") as log:
            proc = subprocess.run(args, cwd=self.repo, env=self.env, stdout=log, stderr=log)
        self.steps[step] = round(time.perf_counter() - started, 1)
        if proc.returncode != 0:
            tail = (self.logs / f"{step}.log").read_text()[-3000:]
            raise SystemExit(f"[loop] {step} failed ({proc.returncode}):\n{tail}")
        print(f"[loop] {step} {self.steps[step]:.1f} s", file=sys.stderr, flush=True)
        return proc

    def read_json(self, path: str) -> dict[str, Any]:
        return json.loads((self.repo / path).read_text())

    @contextlib.contextmanager
    def serving(self, step: str, bento: str) -> Iterator[int]:
        port = processes.free_port()
        started = time.perf_counter()
        proc = processes.start_in_group(
            ["bentoml", "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
            self.logs / f"{step}.log",
            env=self.env,
            cwd=self.repo,
        )
        try:
            processes.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=300, proc=proc)
            self.steps[step] = round(time.perf_counter() - started, 1)
            yield port
        finally:
            processes.stop_group(proc)


def make_scratch(folder: Path, base: pd.DataFrame, logs: Path) -> Scratch:
    from support import child_env, make_scratch_repo

    repo = make_scratch_repo(folder)
    inputs = repo / "inputs"
    inputs.mkdir()
    base.to_csv(inputs / "base.csv", index=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source="csv", path="inputs/base.csv")
    params["preprocess"].update(split="temporal", test_fraction=0.05)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "bench-loop"], cwd=repo, check=True)
    env = child_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", BENTOML_HOME=str(repo / "bentoml")
    )
    return Scratch(repo, env, logs)


def offline(scratch: Scratch) -> dict[str, Any]:
    metrics = scratch.read_json("reports/metrics.json")
    return {
        "rmse": metrics["test"]["rmse"],
        f"ndcg@{K}": metrics["ranking"][f"ndcg@{K}"],
        f"popularity_ndcg@{K}": metrics["baselines"]["popularity"][f"ndcg@{K}"],
    }


# --- the loop ----------------------------------------------------------------------------------


def run_loop(ml100k: Path, work: Path) -> dict[str, Any]:
    base, window_a, window_b = cut(read_ml100k(ml100k))
    logs = work / "logs"
    logs.mkdir(parents=True)
    scratch = make_scratch(work, base, logs)
    result: dict[str, Any] = {
        "rows": {"base": len(base), "A": len(window_a), "B": len(window_b)},
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    sessions_a, sessions_b = sessions(window_a), sessions(window_b)
    result["sessions"] = {"A": len(sessions_a), "B": len(sessions_b)}

    scratch.run("v1: dvc repro", ["dvc", "repro"])
    v1 = {"offline": offline(scratch), "package": scratch.read_json("reports/package.json")}
    v1["promotion"] = scratch.read_json("reports/promotion.json")
    with scratch.serving("v1: serve", v1["package"]["bento"]) as port:
        v1["window_A"] = replay(port, sessions_a, send_feedback=True).summary()
        scratch.steps["v1: replay A (requests + feedback)"] = v1["window_A"]["seconds"]
    scratch.run("monitor", [sys.executable, "pipeline/monitor.py", "--out", "reports/monitor"])
    result["monitor"] = scratch.read_json("reports/monitor/summary.json")

    scratch.run("v2: dvc repro (feedback, retrain, gate, package)", ["dvc", "repro"])
    v2 = {"offline": offline(scratch), "package": scratch.read_json("reports/package.json")}
    v2["promotion"] = scratch.read_json("reports/promotion.json")
    v2["feedback"] = scratch.read_json("data/feedback/summary.json")
    promoted = v2["package"]["bento"] != v1["package"]["bento"]
    with scratch.serving("v1: serve again", v1["package"]["bento"]) as port:
        v1["window_B"] = replay(port, sessions_b, send_feedback=False).summary()
    if promoted:
        with scratch.serving("v2: serve", v2["package"]["bento"]) as port:
            v2["window_B"] = replay(port, sessions_b, send_feedback=False).summary()
        v2["window_B"]["how"] = "served (bentoml serve)"
    else:  # not packaged: ranked by its bundle in this process, through the service's code
        v2["window_B"] = rank_in_process(scratch.repo / "models" / "bundle", sessions_b).summary()
        v2["window_B"]["how"] = "in process (ModelBundle.recommend): not promoted, not served"
    v1["window_B"]["how"] = "served (bentoml serve)"
    result.update(v1=v1, v2=v2, promoted=promoted, steps=scratch.steps)
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def report_markdown(result: dict[str, Any], command: str) -> str:
    v1, v2 = result["v1"], result["v2"]
    lines = [
        "# The closed loop on MovieLens 100K: serve, feedback, monitor, retrain, gate, serve",
        "",
        f"Reproduce: `{command}` (`make bench-loop`). Generated "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average (1, 5, 15 min) "
        f"at the start {result['load_start']}, at the end {result['load_end']}.",
    ]
    if max(result["load_start"][0], result["load_end"][0]) > BUSY_LOAD:
        lines.append(f"\n**The machine was busy (load above {BUSY_LOAD}): wall times are high.**")
    rows = result["rows"]
    lines += [
        "",
        f"ML-100K by time: base {rows['base']:,} ratings (v1's data), window A {rows['A']:,} "
        f"({result['sessions']['A']:,} sessions: replayed to v1 as requests and feedback), "
        f"window B {rows['B']:,} ({result['sessions']['B']:,} sessions: requests to v1 and v2). "
        f"Session: one user's ratings with gaps under {SESSION_GAP_S // 60} min; the client asks "
        f"/recommend (k={K}) at its start. A list is judged when its session has a rating >= "
        f"{RELEVANT:g}. The split is temporal (the newest 5% are the test part), so the gate "
        "compares v2 with v1 on the newest ratings: after the retrain, the logged feedback.",
        "",
        "## Online, the same later window (B)",
        "",
        f"| model | judged lists | hit rate@{K} | NDCG@{K} | cold-start lists | how |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, model in (("v1", v1), ("v2", v2)):
        b = model["window_B"]
        lines.append(
            f"| {name} | {b['judged_lists']:,} | {b[f'hit_rate@{K}']:.4f} | "
            f"{b[f'ndcg@{K}']:.4f} | {b['cold_start_lists']:,} | {b.get('how', '')} |"
        )
    a = v1["window_A"]
    lines += [
        "",
        f"v1 on window A (while feedback was logged): {a['judged_lists']:,} judged lists, hit "
        f"rate@{K} {a[f'hit_rate@{K}']:.4f}, NDCG@{K} {a[f'ndcg@{K}']:.4f}; {a['feedback_sent']:,} "
        f"feedback ratings sent, {a['error_count']} errors.",
        "",
        "## Offline (each model's own test part) and the gate",
        "",
        f"| model | test RMSE | test NDCG@{K} | popularity NDCG@{K} |",
        "|---|---:|---:|---:|",
    ]
    for name, model in (("v1", v1), ("v2", v2)):
        o = model["offline"]
        lines.append(
            f"| {name} | {o['rmse']:.4f} | {o[f'ndcg@{K}']:.4f} | {o[f'popularity_ndcg@{K}']:.4f} |"
        )
    promotion = v2["promotion"]
    outcome = (
        " (promoted: v2 packaged and served)"
        if result["promoted"]
        else " (v1 stays champion; no new Bento)"
    )
    lines += [
        "",
        f"Gate (v2 against v1 on v2's test rows): decision **{promotion.get('decision')}**"
        f"{outcome}"
        f". {promotion.get('reason', '')}",
        "",
        f"Feedback snapshot: {v2['feedback'].get('ratings')} ratings from "
        f"{v2['feedback'].get('files')} log files ({v2['feedback'].get('malformed_lines')} "
        "malformed lines).",
        "",
        "## Monitor (after window A)",
        "",
        "```json",
        json.dumps(_monitor_digest(result["monitor"]), indent=2),
        "```",
        "",
        "## Wall time of each step",
        "",
        "| step | s |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in result["steps"].items()]
    return "\n".join(lines) + "\n"


def _monitor_digest(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("retrain", "reason", "reasons", "window", "traffic", "drift", "online", "validation")
    return {k: summary[k] for k in keep if k in summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", type=Path, required=True, help="folder with ML-100K's u.data")
    parser.add_argument("--out", default="reports/bench_loop.md")
    parser.add_argument("--json", default="reports/bench_loop.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch repository")
    args = parser.parse_args(argv)
    if not (args.ml100k / "u.data").is_file():
        parser.error(f"{args.ml100k / 'u.data'}: not found (MovieLens 100K's ratings file)")
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    try:
        result = run_loop(args.ml100k.resolve(), work)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"[loop] scratch repository kept: {work}", file=sys.stderr)
    command = (
        f"python benchmarks/loop.py --ml100k {args.ml100k} --out {args.out} --json {args.json}"
    )
    Path(args.out).write_text(report_markdown(result, command))
    Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"[loop] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
