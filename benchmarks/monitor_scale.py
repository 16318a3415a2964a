"""``make monitor`` on a large inference log: wall time and peak memory of the reader and report.

    python benchmarks/monitor_scale.py --records 1000000 --out reports/bench_monitor.md

(``make bench-monitor`` runs exactly this.) In a scratch folder:

1. ``data/processed`` of params.yaml's synthetic data (ingest's generator and the preprocess
   stage's own code, in process);
2. ``--records`` log records in the contract's format (``/tmp/loop/contract.md``): half
   ``recommend`` (one of 20,000 top-10 lists drawn by popularity, 5% cold starts), 30%
   ``feedback`` (70% on an item of a list served to the same user up to an hour before: ratings,
   clicks, purchases, skips), 10% ``similar_items``, 10% ``predict``, over 7 days ending at a
   fixed ``until``, spread over two workers' live and rotated files, with a few malformed lines
   and a truncated last line in each live file;
3. ``pipeline/monitor.py`` as ``make monitor`` runs it (its own process: wall time from spawn to
   exit; peak RSS from ``os.wait4``), with an MLflow SQLite store in the scratch folder; its
   ``summary.json`` gives the phases (read, figures, Great Expectations);
4. the feedback stage's entry point alone, ``read_log(log_dir, "feedback")`` (a frame of every
   feedback column), in a process of its own: time and peak RSS.

The 1-minute load average (``uptime``) is printed at the start and the end: on a shared 2-core
machine a busy neighbour shows there, not in our figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The window's end (2026-11-08T00:00Z) and length: 7 days, as params.yaml's monitor section.
UNTIL = 1_794_096_000.0
DAYS = 7
MIX = {"recommend": 0.5, "feedback": 0.3, "similar_items": 0.1, "predict": 0.1}
WORKERS = 2
MALFORMED_EVERY = 100_000  # one malformed line per this many records


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def make_processed(folder: Path) -> Any:
    """params.yaml's synthetic data through the preprocess stage's code, into ``folder``."""
    from recommender.core.config import load_params
    from recommender.data.synthetic import generate
    from recommender.dataset.processed import write_processed
    from recommender.preprocess.split import preprocess

    params = load_params(ROOT / "params.yaml")
    processed = preprocess(generate(params.synthetic, params.seed), params.preprocess, params.seed)
    write_processed(processed, folder)
    return processed


class Files:
    """Each worker's two rotated days and live file of one endpoint; a record goes to worker
    ``j % 2`` and, by its place in time order, to the first, second or last third."""

    def __init__(self, log_dir: Path, endpoint: str, n: int) -> None:
        folder = log_dir / endpoint / "data"
        folder.mkdir(parents=True, exist_ok=True)
        names = ["data.{w}.log.2026-11-05", "data.{w}.log.2026-11-06", "data.{w}.log"]
        self.files = [[(folder / name.format(w=w)).open("w") for name in names]
                      for w in range(WORKERS)]  # fmt: skip
        self.n, self.written, self.last = n, 0, ""

    def write(self, record: dict[str, Any]) -> None:
        j = self.written
        f = self.files[j % WORKERS][min(3 * j // max(self.n, 1), 2)]
        self.last = json.dumps(record)
        f.write(self.last + "\n")
        if j % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            f.write('{"x_request_id": "oops", "time": \n')
        self.written += 1

    def close(self) -> None:
        for worker in self.files:
            worker[-1].write(self.last[: len(self.last) // 2])  # killed mid-write
            for f in worker:
                f.close()


def _base(rng: np.random.Generator, t: float, j: int) -> dict[str, Any]:
    return {"x_request_id": f"{j:08x}{int(rng.integers(1 << 30)):08x}", "time": t,
            "latency_ms": round(float(rng.gamma(2.0, 1.5)), 3), "model_name": "recommender",
            "model_version": "3"}  # fmt: skip


def _tail(j: int) -> dict[str, str]:
    return {"timestamp": "2026-11-07T12:00:00.000000", "request_id": str(j), "trace_id": str(j)}


def _times(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.sort(UNTIL - DAYS * 86_400 * rng.random(n))


def write_recommend(log_dir: Path, n: int, processed: Any, rng: np.random.Generator) -> Any:
    """``n`` recommend records; returns (time, user, items) of the served lists."""
    users = np.asarray(processed.user_vocab.ids)
    pop, weights = _popularity(processed)
    times = _times(rng, n)
    cold = rng.random(n) < 0.05
    user = np.where(cold, rng.choice(users, n) + 10_000_000, rng.choice(users, n))
    items = _list_pool(pop, weights, rng)[rng.integers(0, LIST_POOL, n)]
    scores = [round(4.5 - 0.1 * r, 4) for r in range(10)]
    files = Files(log_dir, "recommend", n)
    for j in range(n):
        files.write({**_base(rng, float(times[j]), j), "user_id": int(user[j]), "k": 10,
                     "exclude_rated": True, "genres": None, "items": items[j].tolist(),
                     "scores": scores, "cold_start": bool(cold[j]), **_tail(j)})  # fmt: skip
    files.close()
    return times, user, items


#: Distinct top-10 lists the synthetic service serves (each drawn by popularity, no repeats).
LIST_POOL = 20_000


def _list_pool(pop: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:data:`LIST_POOL` lists of 10 distinct items, popular ones likelier (Gumbel top-k)."""
    out = []
    for _ in range(0, LIST_POOL, 1000):
        keys = np.log(weights + 1e-12) + rng.gumbel(size=(1000, len(pop)))
        top = np.argpartition(-keys, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        out.append(pop[np.take_along_axis(top, order, axis=1)])
    return np.concatenate(out)


def _popularity(processed: Any) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(processed.train["item_idx"], minlength=len(processed.item_vocab))[1:]
    return np.asarray(processed.item_vocab.ids), counts / counts.sum()


def write_feedback(
    log_dir: Path, n: int, processed: Any, served: Any, rng: np.random.Generator
) -> None:
    """``n`` feedback records: 70% on an item of a list served to the same user 10 s to 1 h
    before, the rest on a random trained item; 60% ratings, else clicks, purchases, skips."""
    list_time, list_user, list_items = served
    pop, weights = _popularity(processed)
    users = np.asarray(processed.user_vocab.ids)
    follows = rng.random(n) < 0.7
    pick = rng.integers(0, len(list_time), n)
    rank = np.minimum(rng.geometric(0.3, n) - 1, 9)
    event_time = np.where(follows, list_time[pick] + rng.uniform(10, 3600, n),
                          UNTIL - DAYS * 86_400 * rng.random(n))  # fmt: skip
    user = np.where(follows, list_user[pick] % 10_000_000, rng.choice(users, n))
    item = np.where(follows, list_items[pick, rank], rng.choice(pop, n, p=weights))
    rated = rng.random(n) < 0.6
    rating = rng.integers(1, 6, n)
    events = rng.choice(["click", "purchase", "skip"], n)
    order = np.argsort(event_time, kind="stable")
    files = Files(log_dir, "feedback", n)
    for j in order:
        t = float(event_time[j])
        files.write({**_base(rng, t + 0.05, int(j)), "user_id": int(user[j]),
                     "item_id": int(item[j]), "rating": float(rating[j]) if rated[j] else None,
                     "event": "rate" if rated[j] else str(events[j]), "event_time": t,
                     "served_request_id": None, **_tail(int(j))})  # fmt: skip
    files.close()


def write_others(log_dir: Path, n: int, processed: Any, rng: np.random.Generator) -> None:
    """``n`` similar_items records (2% unknown items) and ``n`` predict records (3 pairs)."""
    pop, _ = _popularity(processed)
    catalog = processed.catalog["item_id"].to_numpy()
    users = np.asarray(processed.user_vocab.ids)
    files = Files(log_dir, "similar_items", n)
    for j, t in enumerate(_times(rng, n)):
        unknown = bool(rng.random() < 0.02)
        files.write({**_base(rng, float(t), j), "item_id": int(rng.choice(catalog)), "k": 10,
                     "items": [] if unknown else rng.choice(pop, 10).tolist(),
                     "scores": [] if unknown else [0.5] * 10, "unknown_item": unknown,
                     **_tail(j)})  # fmt: skip
    files.close()
    files = Files(log_dir, "predict", n)
    for j, t in enumerate(_times(rng, n)):
        files.write({**_base(rng, float(t), j), "user_ids": [int(rng.choice(users))] * 3,
                     "item_ids": rng.choice(pop, 3).tolist(), "scores": [3.5, 3.6, 3.7],
                     "unknown_users": 0, "unknown_items": 0, **_tail(j)})  # fmt: skip
    files.close()


def write_log(log_dir: Path, records: int, processed: Any, seed: int = 0) -> dict[str, int]:
    """``records`` lines over the endpoints of :data:`MIX`; returns the records per endpoint."""
    rng = np.random.default_rng(seed)
    n = {endpoint: int(round(records * share)) for endpoint, share in MIX.items()}
    served = write_recommend(log_dir, n["recommend"], processed, rng)
    write_feedback(log_dir, n["feedback"], processed, served, rng)
    write_others(log_dir, n["similar_items"], processed, rng)
    return n


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, exit code and peak RSS (MB) of the process.

    Its output goes to files, not pipes: waited for with ``os.wait4`` (for its rusage), a child
    that filled a pipe's 64 KiB would block forever with nobody reading."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(), stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "code": code, "stdout": out,
            "stderr": err}  # fmt: skip


READ_FEEDBACK = """
import sys, time
from recommender.monitoring import read_log
start = time.perf_counter()
frame, stats = read_log(sys.argv[1], "feedback")
print(len(frame), stats.malformed, round(time.perf_counter() - start, 2))
"""


def environment(scratch: Path) -> dict[str, str]:
    from recommender.core.telemetry import QUIET, TELEMETRY_OFF

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.update(TELEMETRY_OFF)
    env.update(QUIET)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    return env


def bench(records: int, scratch: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"records": records, "load_start": uptime()}
    start = time.perf_counter()
    processed = make_processed(scratch / "processed")
    result["train_rows"] = len(processed.train)
    written = write_log(scratch / "logs", records, processed)
    result["generate_s"] = round(time.perf_counter() - start, 1)
    result["written"] = written
    files = list((scratch / "logs").rglob("data.*.log*"))
    result["log_mb"] = round(sum(p.stat().st_size for p in files) / 2**20, 1)
    result["files"] = len(files)
    del processed
    env = environment(scratch)
    cmd = [sys.executable, str(ROOT / "pipeline" / "monitor.py"), "--params",
           str(ROOT / "params.yaml"), "--out", str(scratch / "report"), "--logs",
           str(scratch / "logs"), "--processed", str(scratch / "processed"),
           "--until", "2026-11-08T00:00:00Z", "--window-hours", str(DAYS * 24),
           "--metrics", str(scratch / "none.json")]  # fmt: skip
    result["monitor"] = run_measured(cmd, scratch, env)
    if result["monitor"]["code"] != 0:
        raise SystemExit(f"monitor failed:\n{result['monitor']['stderr']}")
    result["summary"] = json.loads((scratch / "report" / "summary.json").read_text())
    cmd = [sys.executable, "-c", READ_FEEDBACK, str(scratch / "logs")]
    result["read_feedback"] = run_measured(cmd, scratch, env)
    result["load_end"] = uptime()
    return result


def markdown(r: dict[str, Any]) -> str:
    m, s, f = r["monitor"], r["summary"], r["read_feedback"]
    rows, malformed, seconds = f["stdout"].split()
    t = s["timings"]
    written = ", ".join(f"{k} {v:,}" for k, v in r["written"].items())
    in_window = ", ".join(f"{k} {v:,}" for k, v in s["traffic"]["requests"].items())
    table = [
        "| what | wall s | CPU s | peak RSS MB |",
        "|---|---|---|---|",
        f"| `pipeline/monitor.py` (read, figures, GX Data Docs, MLflow run) | {m['seconds']} "
        f"| {m['cpu_s']} | {m['peak_rss_mb']} |",
        f'| `read_log(log_dir, "feedback")` alone (a frame of every column) | {f["seconds"]} '
        f"| {f['cpu_s']} | {f['peak_rss_mb']} |",
    ]
    online = s["online"]
    return f"""# make monitor on {r["records"]:,} log records

`python benchmarks/monitor_scale.py --records {r["records"]}` on {platform.machine()},
{os.cpu_count()} cores, Python {platform.python_version()}.

- Load at the start: `{r["load_start"]}`
- Load at the end: `{r["load_end"]}`

Log: {r["log_mb"]} MB in {r["files"]} files ({written}); training data: params.yaml's
synthetic set, {r["train_rows"]:,} train rows. Generating both took {r["generate_s"]} s.

{chr(10).join(table)}

Inside the monitor (its summary.json): read {t["read_s"]} s; traffic, drift and online figures
{t["figures_s"]} s; MLflow (import, connect, the @champion lookup) {t["tracking_s"]} s; Great
Expectations on the feedback ratings with Data Docs {t["validate_s"]} s. The rest is imports
(pandas, GX) and the MLflow run with its artifacts.
`read_log` alone: {int(rows):,} feedback rows ({malformed} malformed lines skipped) in {seconds} s
of reading.

Records in the window: {in_window}; malformed lines {s["traffic"]["malformed_lines"]} (of which
truncated last lines {s["traffic"]["truncated_lines"]}). Online: {online["followed_lists"]:,} of
{online["served_lists"]:,} lists followed, NDCG@{online["k"]} {online[f"ndcg@{online['k']}"]}.
Verdict: retrain = {s["retrain"]} ({s["reason"]}).
"""


def _record(result: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if k not in ("summary", "monitor", "read_feedback")}
    for name in ("monitor", "read_feedback"):
        out[name] = {k: v for k, v in result[name].items() if k not in ("stdout", "stderr")}
    out["monitor_timings"] = result["summary"]["timings"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--out", default="reports/bench_monitor.md")
    parser.add_argument("--keep", help="keep the scratch folder here instead of a temporary one")
    args = parser.parse_args(argv)
    from recommender.core.io import write_text
    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        scratch = Path(args.keep) if args.keep else Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        result = bench(args.records, scratch)
    text = markdown(result)
    write_text(text, args.out)
    Path(args.out).with_suffix(".json").write_text(
        # No process output: it names the scratch folder, a path of this machine.
        json.dumps(_record(result), indent=2, default=str) + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
