"""Load-test the packaged service against a no-op BentoML service, side by side, with wrk.

    python benchmarks/bench_serve.py [--duration 60] [--out reports/bench_serve.md]

Starts the Bento named in ``reports/package.json`` once per ``--workers`` count (a Bento built
from the same model and files with ``serve.workers`` set to it) and ``benchmarks/noop_service.py``
(one worker), all on 127.0.0.1, then drives ``predict`` (5 pairs) and ``recommend`` (top-10) on each
with ``wrk`` and a Lua script that POSTs JSON bodies cycling over real test-split users. Writes a
Markdown table of p50/p99 latency and requests/s with the ratios to the no-op, and checks the
targets (for the 1-worker service): recommend p50 within 1.3x of the no-op, its throughput at
least 0.8x, and no errors.

The inference log's cost: the 1-worker service logs every call (``serve.inference_log``, as
packaged); a Bento of the same model with the log off (``service 1w log off``) runs in the same
rounds, and a table sets the two side by side (p50 and req/s, and their ratios; the target: the
log costs at most 10% of recommend's p50 and req/s). ``--no-log-compare`` leaves it out. Every
server runs in a temporary folder, so their logs never mix with the project's ``logs/``.
Exit status 1 when a request failed (non-2xx, socket error or timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recommender.core.processes import NotReady, free_port, start_in_group, stop_group, wait_http

ROOT = Path(__file__).resolve().parents[1]
P50_TARGET, RPS_TARGET = 1.3, 0.8
#: The inference log may cost at most this share of recommend's p50 and req/s.
LOG_COST_TARGET = 0.10
LOG_OFF = "service 1w log off"

LUA = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", default="reports/package.json", help="the package record")
    parser.add_argument("--bento", help="Bento tag (default: the package record's)")
    parser.add_argument("--bentoml-home", default="bentoml", help="the BentoML store")
    parser.add_argument("--data", default="data/processed", help="test.parquet's folder")
    parser.add_argument("--duration", type=int, default=60, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--round", type=int, default=10, help="seconds per alternating round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", default="1,2", help="worker counts of the service to run")
    parser.add_argument(
        "--log-compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the 1-worker service with the inference log off, side by side",
    )
    parser.add_argument("--out", default="reports/bench_serve.md")
    args = parser.parse_args(argv)
    counts = sorted({int(w) for w in args.workers.split(",") if w.strip()})

    if not shutil.which("wrk"):
        print("error: wrk not found (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    record = json.loads(Path(args.package).read_text())
    bento = args.bento or record.get("bento")
    if not bento:
        print(f"error: {args.package} names no Bento (no champion yet?)", file=sys.stderr)
        return 2
    bodies = request_bodies(Path(args.data) / "test.parquet")
    env = server_env(Path(args.bentoml_home))
    bentos = {n: bento_with_workers(record, n, args) for n in counts}
    names = ["noop", *(service_name(n) for n in counts)]
    extra = {}
    if args.log_compare and 1 in counts and not args.bento:
        extra[LOG_OFF] = bento_with_workers(record, 1, args, inference_log=False)
        names.append(LOG_OFF)
    elif args.log_compare:
        print("no log on/off comparison: it needs --workers with 1 and no --bento", flush=True)
    # Each server's working folder: a relative serve.log_dir (the inference log) lands there.
    scratch = Path(tempfile.mkdtemp(prefix="bench_serve_"))

    servers = {}
    try:
        # Every server up at once, so they share the machine the same way during every run.
        # Started one after the other: a starting server picks free ports for its own sockets,
        # which could be the port the next one was given but has not bound yet.
        for n, tag in bentos.items():
            servers[service_name(n)] = start(["serve", tag], env, f"service{n}", scratch)
            wait_ready(servers[service_name(n)], service_name(n))
        for name, tag in extra.items():
            servers[name] = start(["serve", tag], env, "service1-nolog", scratch)
            wait_ready(servers[name], name)
        servers["noop"] = start(
            ["serve", "noop_service:Noop", "--working-dir", str(ROOT / "benchmarks")],
            env,
            "noop",
            scratch,
        )
        wait_ready(servers["noop"], "noop")
        rows = []
        for endpoint in ("predict", "recommend"):
            for name in names:
                check(f"{servers[name][0]}/{endpoint}", bodies[endpoint][0])
                run_wrk(f"{servers[name][0]}/{endpoint}", bodies[endpoint], args, args.warmup)
            # Alternate short rounds, so a neighbour's burst of CPU on this shared machine
            # lands on every server alike instead of on whichever ran at that moment.
            rounds: dict[str, list[dict]] = {name: [] for name in names}
            n_rounds = max(1, round(args.duration / args.round))
            for i in range(n_rounds):
                seconds = args.duration // n_rounds
                for name in names if i % 2 == 0 else names[::-1]:
                    url = f"{servers[name][0]}/{endpoint}"
                    rounds[name].append(run_wrk(url, bodies[endpoint], args, seconds))
            for name in names:
                result = combine(rounds[name])
                rows.append({"endpoint": endpoint, "server": name, **result})
                print(f"{endpoint:<9} {name:<10} {summary(result)}", flush=True)
    finally:
        for _, proc, _ in servers.values():
            stop_group(proc)
        logged = sum(1 for _ in scratch.glob("*/logs/inference/*/data/data.*.log*"))
        shutil.rmtree(scratch, ignore_errors=True)
    if LOG_OFF in names and not logged:
        print("warning: the service with the inference log on wrote no log file", flush=True)

    table = pd.DataFrame(rows)
    report, ok_errors = render(table, ", ".join(f"{n}w `{t}`" for n, t in bentos.items()), args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(f"wrote {args.out}")
    return 0 if ok_errors else 1


def service_name(workers: int) -> str:
    return f"service {workers}w"


def bento_with_workers(
    record: dict, workers: int, args: argparse.Namespace, **serve_overrides: object
) -> str:
    """The packaged Bento with ``serve.workers`` set to ``workers`` (and ``serve_overrides``):
    the same model, files and other arguments (the package stage's own build, reused when it
    exists already)."""
    from recommender.core.config import ServeConfig
    from recommender.serving.packaging import build_bento, use_bentoml_home

    if args.bento:
        return args.bento
    use_bentoml_home(args.bentoml_home)
    serve = ServeConfig(**{**record["serve"], "workers": workers, **serve_overrides})
    tag, _ = build_bento(ROOT / "serving", record["bento_model"], serve, ROOT / "requirements.lock")
    return tag


def request_bodies(test_path: Path) -> dict[str, list[str]]:
    """JSON bodies over real test users and items: 200 recommend calls, 100 predict calls."""
    test = pd.read_parquet(test_path, columns=["user_id", "item_id"])
    users = pd.unique(test["user_id"])[:200].tolist()
    pairs = test.head(500)[["user_id", "item_id"]].to_dict("records")
    recommend = [json.dumps({"user_id": _plain(u), "k": 10}) for u in users]
    predict = [
        json.dumps({"pairs": [{k: _plain(v) for k, v in p.items()} for p in pairs[i : i + 5]]})
        for i in range(0, len(pairs), 5)
    ]
    return {"recommend": recommend, "predict": predict}


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BENTOML_HOME=str(home.resolve()),
        BENTOML_DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_ENABLE_ONEDNN_OPTS="0",
        NO_PROXY="127.0.0.1,localhost",
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def start(
    cmd: list[str], env: dict[str, str], name: str, scratch: Path
) -> tuple[str, subprocess.Popen, Path]:
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"bench_serve_{name}_{port}.log"
    cwd = scratch / f"{name}_{port}"
    cwd.mkdir()
    proc = start_in_group(
        [sys.executable, "-m", "bentoml", *cmd, "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=env,
        cwd=cwd,
    )
    return f"http://127.0.0.1:{port}", proc, log


def wait_ready(server: tuple[str, subprocess.Popen, Path], name: str, timeout: float = 180) -> None:
    url, proc, log = server
    try:
        wait_http(f"{url}/readyz", timeout=timeout, proc=proc, interval=0.5, what=f"{name} server")
    except NotReady as exc:
        raise SystemExit(f"{exc}; its log: {log}") from None


def check(url: str, body: str) -> None:
    """One request before the load: a broken endpoint fails here, with its message."""
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 200:
            raise SystemExit(f"{url} answered {resp.status}: {resp.read()[:300]!r}")


def run_wrk(url: str, bodies: list[str], args: argparse.Namespace, seconds: int) -> dict:
    lua_bodies = ",".join(f"[==[{b}]==]" for b in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(LUA % lua_bodies)
        script = fh.name
    try:
        out = subprocess.run(
            ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s",
             "--timeout", "5s", "-s", script, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script)
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    raw = json.loads(line[len("BENCH ") :])
    return {
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "errors": raw["errors"],
    }


def combine(rounds: list[dict]) -> dict:
    """One figure per server: total requests over total time; median of the rounds' p50/p99."""
    seconds = sum(r["requests"] / r["rps"] for r in rounds)
    return {
        "p50_ms": float(pd.Series([r["p50_ms"] for r in rounds]).median()),
        "p99_ms": float(pd.Series([r["p99_ms"] for r in rounds]).median()),
        "rps": sum(r["requests"] for r in rounds) / seconds,
        "requests": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": len(rounds),
    }


def summary(r: dict) -> str:
    return (
        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  {r['rps']:.0f} req/s  "
        f"{r['requests']} requests, {r['errors']} errors"
    )


def render(table: pd.DataFrame, bentos: str, args: argparse.Namespace) -> tuple[str, bool]:
    lines = [
        "# Serving benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; the packaged model served with N BentoML "
        "workers (`service Nw`: a Bento of the same model and files, `serve.workers` = N: "
        f"{bentos}) "
        "vs the no-op BentoML service (`benchmarks/noop_service.py`, 1 worker), on 127.0.0.1; "
        f"`wrk -t{args.threads} -c{args.connections}`, {args.duration} s per server and "
        f"endpoint in {int(table.rounds.iloc[0])} alternating rounds (p50/p99: median over "
        f"rounds) after a {args.warmup} s warm-up; {os.cpu_count()} CPUs "
        f"({platform.processor() or 'x86_64'}), shared by wrk and every server.",
        "",
        "predict: 5 (user, item) pairs per request; recommend: top-10 for a test user "
        "(rated items excluded). Bodies cycle over the test split's users and pairs.",
        "",
        "| endpoint | server | p50 ms | p99 ms | req/s | requests | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.endpoint} | {r.server} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.rps:.0f} "
            f"| {r.requests} | {r.errors} |"
        )
    lines += ["", "| endpoint | p50 / no-op | p99 / no-op | req/s / no-op |"]
    lines += ["|---|---:|---:|---:|"]
    ratios = {}
    services = [s for s in dict.fromkeys(table.server) if s != "noop"]
    for endpoint, part in table.groupby("endpoint", sort=False):
        noop = part[part.server == "noop"].iloc[0]
        for name in services:
            svc = part[part.server == name].iloc[0]
            ratios[(endpoint, name)] = (svc.p50_ms / noop.p50_ms, svc.rps / noop.rps)
            lines.append(
                f"| {endpoint} ({name}) | {ratios[(endpoint, name)][0]:.2f}x "
                f"| {svc.p99_ms / noop.p99_ms:.2f}x | {ratios[(endpoint, name)][1]:.2f}x |"
            )
    p50, rps = ratios[("recommend", services[0])]
    errors = int(table[table.server != "noop"].errors.sum())
    checks = [
        (
            f"recommend p50 within {P50_TARGET}x of the no-op ({services[0]})",
            p50 <= P50_TARGET,
            f"{p50:.2f}x",
        ),
        (
            f"recommend req/s at least {RPS_TARGET}x the no-op's ({services[0]})",
            rps >= RPS_TARGET,
            f"{rps:.2f}x",
        ),
        ("no failed requests (every service)", errors == 0, str(errors)),
    ]
    log_lines, log_checks = log_cost(table)
    lines += log_lines
    checks += log_checks
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, ok, value in checks]
    return "\n".join(lines) + "\n", errors == 0


def log_cost(table: pd.DataFrame) -> tuple[list[str], list[tuple[str, bool, str]]]:
    """The table of the 1-worker service with the inference log on vs off, and its target."""
    on_name = service_name(1)
    if LOG_OFF not in set(table.server) or on_name not in set(table.server):
        return [], []
    lines = [
        "",
        f"Inference log on (`{on_name}`, as packaged: one JSON line per call) vs off "
        f"(`{LOG_OFF}`), same rounds:",
        "",
        "| endpoint | p50 ms on | p50 ms off | p50 on/off | req/s on | req/s off | req/s on/off |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {}
    for endpoint, part in table.groupby("endpoint", sort=False):
        on = part[part.server == on_name].iloc[0]
        off = part[part.server == LOG_OFF].iloc[0]
        ratios[endpoint] = (on.p50_ms / off.p50_ms, on.rps / off.rps)
        lines.append(
            f"| {endpoint} | {on.p50_ms:.2f} | {off.p50_ms:.2f} | {ratios[endpoint][0]:.2f}x "
            f"| {on.rps:.0f} | {off.rps:.0f} | {ratios[endpoint][1]:.2f}x |"
        )
    p50, rps = ratios["recommend"]
    ok = p50 <= 1 + LOG_COST_TARGET and rps >= 1 - LOG_COST_TARGET
    name = f"the inference log costs recommend at most {LOG_COST_TARGET:.0%} (p50, req/s)"
    return lines, [(name, ok, f"p50 {p50:.2f}x, req/s {rps:.2f}x")]


if __name__ == "__main__":
    sys.exit(main())
