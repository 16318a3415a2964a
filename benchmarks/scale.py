"""The pipeline on synthetic data of growing size: cost per stage, training throughput, Surprise.

    python benchmarks/scale.py --sizes 100k,1m,10m --surprise-python .venv-surprise/bin/python \\
        --out reports/bench_scale.md --json reports/bench_scale.json --plot reports/bench_scale.png

(``make bench-scale`` does exactly this; ``SCALE_SIZES=100k,1m`` picks sizes, ``SCALE_25M=1``
adds the ML-25M-like size.) The sizes have the shapes of real sets: ``100k`` is params.yaml's
own ``synthetic`` section, ``1m`` ML-1M's (6,040 users x 3,706 items, 1,000,209 ratings), ``10m``
ML-10M's (69,878 x 10,677, 10,000,054) and ``25m`` ML-25M's (162,541 x 59,047, 25,000,095; only
with ``--with-25m``, it takes long).

For each size, in a scratch git + DVC repository of its own (``tests/support.make_scratch_repo``:
dvc.yaml, params.yaml, pipeline/, src/, serving/; the code that runs is the installed
``recommender`` package), with its own MLflow store (a SQLite file) and ``BENTOML_HOME``, and
telemetry off (``tests/support.child_env``):

1. params.yaml becomes the project's with ``data.source: synthetic`` and the size's
   ``synthetic.n_users`` / ``n_items`` / ``n_ratings`` (``--model`` and ``--epochs`` change
   ``train`` too; ``--epochs`` is for testing the harness, never for a report).
2. Every stage's ``cmd`` from dvc.yaml runs in pipeline order, measured on its own: wall time
   from spawn to exit, CPU time and peak RSS from ``os.wait4`` (``ru_maxrss``: the largest
   process among the stage's process and the children it waited for; a small launcher starts
   each stage, see :data:`LAUNCHER`, so this harness's own peak does not leak into it), and the
   sum of RSS over the stage's live process tree sampled every 0.2 s. ``dvc commit -f <stage>``
   then records the stage's outputs (hashing, caching, dvc.lock, which register reads), timed
   apart.
3. Training throughput: rating-epochs per second of the fit loop without start-up and the first
   epoch: train rows x epochs 2..n / their seconds (the ``epoch_seconds`` column of
   ``reports/train_history.csv`` when the train stage writes it, else the spacing of the
   per-epoch metrics the run logged to MLflow, which includes each epoch's validation); the
   refit's from the run's ``refit_epoch_seconds`` in MLflow (the refit has no validation).
   Then ``biased_mf``'s fit loop alone, whatever ``train.model`` is (issue 21 sets it a target
   of its own): ``benchmarks/family_throughput.py`` builds it as the train stage would and
   trains it :data:`FAMILY_EPOCHS` epochs on the same train rows; train rows / the median of
   epochs 2..n (at the sizes Surprise fits; ``--no-family-throughput`` skips it).
4. Surprise SVD (``benchmarks/surprise_peer.py`` in its own venv) fits the same train rows
   (``data/processed/train.parquet``, in the order the split stores them) with 64 factors for
   20 epochs (issue 21's peer), timed by its own clock (fit only), scored on the test rows.
5. Test RMSE and NDCG@10 from evaluate's ``reports/metrics.json``, beside the popularity and
   EASE baselines' NDCG@10 from the same file (EASE skips catalogs over
   ``evaluate.ease_max_items``).

Writes the Markdown report (a table per size, side-by-side ratios, issue 21's targets; a warning
at the top when the load average at the start or the end was above 1.5; a fit that ran to its
epoch cap instead of stopping early is flagged), the raw numbers as JSON (with the machine:
cores, RAM, load before and after, and per size) and a log-log PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GB = 1024**3


@dataclass(frozen=True)
class Size:
    """One dataset shape. ``None`` sizes: params.yaml's own ``synthetic`` section."""

    name: str
    label: str
    n_users: int | None = None
    n_items: int | None = None
    n_ratings: int | None = None


SIZES: dict[str, Size] = {
    "100k": Size("100k", "params.yaml's synthetic default"),
    "1m": Size("1m", "ML-1M-like", 6_040, 3_706, 1_000_209),
    "10m": Size("10m", "ML-10M-like", 69_878, 10_677, 10_000_054),
    "25m": Size("25m", "ML-25M-like", 162_541, 59_047, 25_000_095),
}
DEFAULT_SIZES = "100k,1m,10m"
#: Sizes Surprise also fits (at 25M its Python-object trainset alone would need >10 GB).
SURPRISE_SIZES = ("100k", "1m", "10m")
SURPRISE_EPOCHS = 20

#: Surprise SVD's factors: issue 21's peer is SVD 64x20 whatever our model's size.
SURPRISE_FACTORS = 64

#: The issue's targets (issue 21; a quiet machine, real early stopping).
PIPELINE_LIMIT_S = {"1m": 5 * 60.0, "10m": 30 * 60.0, "25m": 2 * 3600.0}  # total_s
MEMORY_LIMITS_GB = {"10m": 4.0, "25m": 8.0}  # every stage's peak
THROUGHPUT_MIN = {"1m": 0.07, "10m": 0.07}  # our fit loop's rating-epochs/s / Surprise SVD's
#: A family measured alone (benchmarks/family_throughput.py) beside Surprise in the same run,
#: whatever train.model is: its fit loop's rating-epochs/s / Surprise SVD's.
FAMILY = "biased_mf"
FAMILY_THROUGHPUT_MIN = {"1m": 0.15}
FAMILY_EPOCHS = 4  # the median of epochs 2..4 (the first traces)
THROUGHPUT_KEPT_MIN = 0.8  # our fit loop's rate at 10M / at 1M
NDCG_VS_EASE_MIN = {"1m": 1.0}  # our test NDCG@10 / EASE's
NDCG_VS_POPULARITY_MIN = {"1m": 1.2, "10m": 1.2}  # our test NDCG@10 / popularity's
#: A 1-minute load average above this at the start or the end: the report warns that it ran on
#: a busy machine.
BUSY_LOAD = 1.5


# --- pure parts (tests/unit/test_bench_scale.py) ----------------------------------------------


def parse_sizes(text: str, with_25m: bool = False) -> list[Size]:
    """``"100k,1m"`` -> those sizes, smallest first; ``25m`` only with ``with_25m`` (which adds
    it)."""
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise ValueError(f"unknown size(s) {', '.join(unknown)}; expected some of {list(SIZES)}")
    if "25m" in names and not with_25m:
        raise ValueError("25m takes long: ask for it with --with-25m (make: SCALE_25M=1)")
    if with_25m and "25m" not in names:
        names.append("25m")
    if not names:
        raise ValueError("no sizes given")
    return [SIZES[n] for n in SIZES if n in names]


def scale_params(
    base: dict[str, Any], size: Size, model: str | None = None, epochs: int | None = None
) -> dict[str, Any]:
    """``base`` (params.yaml as a mapping) for ``size``: synthetic data of that shape, and
    ``train.model`` / the epoch cap (``train.epochs`` and the family's own) when given."""
    raw = json.loads(json.dumps(base))  # a deep copy of plain YAML data
    raw["data"] = {**(raw.get("data") or {}), "source": "synthetic"}
    synthetic = dict(raw.get("synthetic") or {})
    for key in ("n_users", "n_items", "n_ratings"):
        value = getattr(size, key)
        if value is not None:
            synthetic[key] = value
    raw["synthetic"] = synthetic
    train = dict(raw.get("train") or {})
    if model is not None:
        train["model"] = model
    if epochs is not None:
        train["epochs"] = epochs
        family = train.get("model")
        if isinstance(train.get(family), dict):
            train[family] = {**train[family], "epochs": epochs}
    raw["train"] = train
    return raw


def _paths(entries: Any) -> list[str]:
    out = []
    for entry in entries or []:
        out.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return [str(p) for p in out]


def stage_order(dvc_yaml: dict[str, Any]) -> list[tuple[str, str]]:
    """``(stage, cmd)`` in dvc.yaml's order, checked to be a pipeline order: every dependency
    that a stage writes (an out, a metric or a plot, or a file inside one) comes from a stage
    listed earlier."""
    stages = dvc_yaml["stages"]
    names = list(stages)
    written = {
        path: name
        for name, spec in stages.items()
        for key in ("outs", "metrics", "plots")
        for path in _paths(spec.get(key))
    }
    order = []
    for index, (name, spec) in enumerate(stages.items()):
        for dep in _paths(spec.get("deps")):
            for out, writer in written.items():
                inside = dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")
                if inside and writer != name and names.index(writer) > index:
                    raise ValueError(f"stage {name} depends on {dep}, written by a later {writer}")
        cmd = spec["cmd"]
        order.append((name, cmd if isinstance(cmd, str) else " && ".join(cmd)))
    return order


def throughput(rows: int, epoch_seconds: Sequence[float]) -> float | None:
    """Rating-epochs per second over epochs 2..n (the first, with its tracing, left out)."""
    later = list(epoch_seconds)[1:]
    if not later or sum(later) <= 0:
        return None
    return rows * len(later) / sum(later)


def epoch_seconds_from_timestamps(timestamps_ms: Sequence[int]) -> list[float | None]:
    """Per-epoch seconds from the times each epoch's metrics were logged: epoch 1 unknown (its
    start was not logged), epoch k the time since epoch k-1's."""
    ts = list(timestamps_ms)
    return [None] + [(b - a) / 1000.0 for a, b in zip(ts, ts[1:], strict=False)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def growth(result: dict[str, Any], small: str = "1m", large: str = "10m") -> dict[str, Any]:
    """time(large) / time(small) for every stage measured at both sizes, and for the total."""
    sizes = result["sizes"]
    if small not in sizes or large not in sizes:
        return {}
    a, b = sizes[small]["stages"], sizes[large]["stages"]
    out = {s: _ratio(b[s]["wall_s"], a[s]["wall_s"]) for s in a if s in b}
    out["total"] = _ratio(sizes[large]["total_s"], sizes[small]["total_s"])
    return out


def peak_gb(m: dict[str, Any]) -> float:
    """A stage's peak memory: the larger of its biggest process and its sampled process tree."""
    return max(m["peak_gb"], m.get("tree_peak_gb", 0.0))


def _fmt(x: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def quality(metrics: dict[str, Any]) -> dict[str, Any]:
    """Test RMSE and NDCG@10 from evaluate's ``reports/metrics.json``, with the popularity and
    EASE baselines' NDCG@10 (``None`` when a baseline did not run: EASE skips catalogs above
    ``evaluate.ease_max_items``; ``ease_skipped`` then says why)."""
    baselines = metrics.get("baselines") or {}
    popularity, ease = baselines.get("popularity") or {}, baselines.get("ease") or {}
    return {
        "test_rmse": (metrics.get("test") or {}).get("rmse"),
        "test_ndcg": (metrics.get("ranking") or {}).get("ndcg@10"),
        "popularity_ndcg": popularity.get("ndcg@10"),
        "ease_ndcg": ease.get("ndcg@10"),
        "ease_skipped": ease.get("skipped") if ease else "absent from metrics.json",
    }


def stopped_at_cap(train: dict[str, Any]) -> bool | None:
    """Whether the fit ran to its epoch cap (``epochs_run == epochs_cap``) instead of being
    stopped early; ``None`` when the cap is unknown."""
    cap = train.get("epochs_cap")
    return None if cap is None else train.get("epochs_run") == cap


def _first_load(load: Sequence[float] | None) -> float | None:
    return load[0] if load else None


def busy_warning(machine: dict[str, Any]) -> str | None:
    """One line when the 1-minute load average at the start or the end was above
    :data:`BUSY_LOAD` (other work shared the cores), else ``None``."""
    start, end = _first_load(machine.get("load_before")), _first_load(machine.get("load_after"))
    if not any(x is not None and x > BUSY_LOAD for x in (start, end)):
        return None
    return (
        f"**Ran on a busy machine: load {_fmt(start, '.1f')} at the start, "
        f"{_fmt(end, '.1f')} at the end (1-minute averages, above {BUSY_LOAD:g}); timings "
        "overstate the cost.**"
    )


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it is met (``None``: the
    size it needs was not run, or did not measure it)."""
    sizes = result["sizes"]
    rows: list[dict[str, Any]] = []

    def add(name: str, value: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": value, "met": met})

    def complete(size: str) -> dict[str, Any] | None:
        entry = sizes.get(size)
        return entry if entry and entry["complete"] else None

    for size, limit in PIPELINE_LIMIT_S.items():
        limit_text = f"{limit / 3600:g} h" if limit >= 3600 else f"{limit / 60:g} min"
        name = f"whole pipeline <= {limit_text} at {size.upper()}"
        entry = complete(size)
        if entry is None:
            add(name, "not run", None)
            continue
        total = entry["total_s"]
        train = entry.get("train") or {}
        capped = (
            f"; the fit stopped at its {train['epochs_cap']}-epoch cap, not by early stopping"
            if stopped_at_cap(train)
            else ""
        )
        add(name, f"{total:.0f} s ({total / 60:.1f} min){capped}", total <= limit)
    for size, limit in MEMORY_LIMITS_GB.items():
        name = f"every stage's peak RSS <= {limit:g} GB at {size.upper()}"
        entry = complete(size)
        if entry is None:
            add(name, "not run", None)
            continue
        stage, peak = max(((s, peak_gb(m)) for s, m in entry["stages"].items()), key=lambda x: x[1])
        add(name, f"largest: {stage} {peak:.2f} GB", peak <= limit)
    peer = f"Surprise SVD {SURPRISE_FACTORS}x{SURPRISE_EPOCHS}'s"
    for size, limit in THROUGHPUT_MIN.items():
        name = f"fit-loop throughput >= {limit:g}x {peer} at {size.upper()}"
        entry = sizes.get(size) or {}
        ours, svd = entry.get("train") or {}, entry.get("surprise") or {}
        ratio = _ratio(ours.get("throughput"), svd.get("throughput"))
        if ratio is None:
            alone = ours.get("throughput") is not None and not svd
            add(name, f"Surprise not run (ours {ours['throughput']:,.0f})" if alone else "not run",
                None)  # fmt: skip
            continue
        add(
            name,
            f"{ratio:.3f}x ({ours['throughput']:,.0f} vs {svd['throughput']:,.0f} rating-epochs/s)",
            ratio >= limit,
        )
    for size, limit in FAMILY_THROUGHPUT_MIN.items():
        name = f"{FAMILY} fit-loop throughput >= {limit:g}x {peer} at {size.upper()}"
        entry = sizes.get(size) or {}
        alone, svd = entry.get(FAMILY) or {}, entry.get("surprise") or {}
        ratio = _ratio(alone.get("throughput"), svd.get("throughput"))
        if ratio is None:
            if alone.get("failure"):
                measured = f"{FAMILY} failed ({alone['failure']})"
            elif alone.get("throughput") is not None and not svd:
                measured = f"Surprise not run ({FAMILY} {alone['throughput']:,.0f})"
            else:
                measured = "not run"
            add(name, measured, None)
            continue
        add(
            name,
            f"{ratio:.3f}x ({alone['throughput']:,.0f} vs {svd['throughput']:,.0f} "
            "rating-epochs/s)",
            ratio >= limit,
        )
    rates = {s: ((sizes.get(s) or {}).get("train") or {}).get("throughput") for s in ("1m", "10m")}
    name = f"fit-loop throughput at 10M >= {THROUGHPUT_KEPT_MIN:g}x at 1M"
    kept = _ratio(rates["10m"], rates["1m"])
    if kept is None:
        add(name, "not run", None)
    else:
        add(name, f"{kept:.2f}x ({rates['10m']:,.0f} vs {rates['1m']:,.0f} rating-epochs/s)",
            kept >= THROUGHPUT_KEPT_MIN)  # fmt: skip
    for key, label, limits in (
        ("ease_ndcg", "EASE's", NDCG_VS_EASE_MIN),
        ("popularity_ndcg", "popularity's", NDCG_VS_POPULARITY_MIN),
    ):
        for size, limit in limits.items():
            factor = "" if limit == 1 else f"{limit:g}x "
            name = f"test NDCG@10 >= {factor}{label} at {size.upper()}"
            train = ((complete(size) or {}).get("train")) or {}
            ours, base = train.get("test_ndcg"), train.get(key)
            if not train:
                add(name, "not run", None)
            elif ours is None or base is None:
                why = train.get("ease_skipped") if key == "ease_ndcg" else None
                add(name, f"{label[:-2]} not run" + (f" ({why})" if why else ""), None)
            else:
                add(name, f"{ours:.4f} vs {base:.4f} ({_fmt(_ratio(ours, base), '.2f', 'x')})",
                    ours >= limit * base)  # fmt: skip
    return rows


def portable(path: str) -> str:
    """``path`` as a report may name it: relative to the project, or only its name when it lies
    outside (a machine's paths stay out of tracked files)."""
    full = Path(path).absolute()
    try:
        return full.relative_to(ROOT).as_posix()
    except ValueError:
        return full.name if Path(path).is_absolute() else path


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces a report, with the same choices."""
    parts = ["python benchmarks/scale.py", f"--sizes {args.sizes}"]
    if args.with_25m:
        parts.append("--with-25m")
    if args.model:
        parts.append(f"--model {args.model}")
    if args.epochs is not None:
        parts.append(f"--epochs {args.epochs}")
    if getattr(args, "params", "params.yaml") != "params.yaml":
        parts.append(f"--params {portable(args.params)}")
    if args.no_surprise:
        parts.append("--no-surprise")
    else:
        parts.append("--surprise-python .venv-surprise/bin/python")
    if getattr(args, "no_family_throughput", False):
        parts.append("--no-family-throughput")
    parts += [f"--{k} {portable(getattr(args, k))}" for k in ("out", "json", "plot")]
    return " ".join(parts)


def make_command(args: argparse.Namespace) -> str | None:
    """The ``make`` line for the same run, when make can express it."""
    if args.model or args.epochs is not None or args.no_surprise:
        return None
    if getattr(args, "no_family_throughput", False):
        return None
    if getattr(args, "params", "params.yaml") != "params.yaml":
        return None
    default_out = (args.out, args.json, args.plot) == (
        "reports/bench_scale.md",
        "reports/bench_scale.json",
        "reports/bench_scale.png",
    )
    if not default_out:
        return None
    sizes = [s for s in args.sizes.split(",") if s and s != "25m"]
    extra = "" if ",".join(sizes) == DEFAULT_SIZES else f" SCALE_SIZES={','.join(sizes)}"
    return f"make bench-scale{extra}{' SCALE_25M=1' if args.with_25m else ''}"


def family_command(family: str = FAMILY, epochs: int = FAMILY_EPOCHS) -> str:
    """The command that measures ``family`` alone, as run in each size's scratch repository."""
    return (
        "python benchmarks/family_throughput.py --processed data/processed --params params.yaml "
        f"--family {family} --epochs {epochs}"
    )


def family_section(result: dict[str, Any]) -> list[str]:
    """The report's lines on :data:`FAMILY` measured alone beside Surprise (none when no size
    measured it)."""
    measured = {n: e[FAMILY] for n, e in result["sizes"].items() if e.get(FAMILY)}
    if not measured:
        return []
    first = next((f for f in measured.values() if "failure" not in f), {})
    knobs = (
        f" (batch {first['batch_size']}, {first['optimizer']})"
        if "batch_size" in first and "optimizer" in first
        else ""
    )
    epochs = first.get("epochs", FAMILY_EPOCHS)
    lines = [
        "",
        f"### `{FAMILY}` alone",
        "",
        f"`{family_command(FAMILY, epochs)}` in each size's scratch repository, after the "
        f"stages and before Surprise: `{FAMILY}` built and compiled as the train stage builds "
        f"it, whatever `train.model` is{knobs}, trained {epochs} epochs on the same train rows "
        "by the same loop, no validation pass. Throughput: train rows / the median of epochs "
        f"2..{epochs} (the first traces).",
        "",
        f"| size | epochs (s) | {FAMILY} (rating-epochs/s) | Surprise (rating-epochs/s) "
        f"| {FAMILY} / Surprise | load (1 min) before, after |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, f in measured.items():
        svd = (result["sizes"][name].get("surprise") or {}).get("throughput")
        if "failure" in f:
            lines.append(f"| {name.upper()} | failed: {f['failure']} | n/a | "
                         f"{_fmt(svd, ',.0f')} | n/a | |")  # fmt: skip
            continue
        seconds = ", ".join(f"{s:.2f}" for s in f["epoch_seconds"])
        load = f"{_fmt(_first_load(f.get('load_before')), '.1f')}, " + _fmt(
            _first_load(f.get("load_after")), ".1f"
        )
        lines.append(
            f"| {name.upper()} | {seconds} | {_fmt(f.get('throughput'), ',.0f')} | "
            f"{_fmt(svd, ',.0f')} | {_fmt(_ratio(f.get('throughput'), svd), '.3f', 'x')} | "
            f"{load} |"
        )
    return lines


def reproduce(run: dict[str, Any]) -> str:
    """How to reproduce a report: its command, and the ``make`` line that runs it if any."""
    how = f"`{run['command']}`"
    return f"`{run['make']}` (that is, {how})" if run.get("make") else how


def report_markdown(result: dict[str, Any]) -> str:
    """The report: how to reproduce it, a table per size, side-by-side ratios, targets, machine."""
    run = result["run"]
    how = reproduce(run)
    lines = [
        "# Scale benchmark: the pipeline on synthetic data of growing size",
        "",
        f"Reproduce: {how}. Generated on {result['date']} from commit `{result['commit']}`, "
        f"model `{run['model']}` ({run['model_source']}), epochs: {run['epochs_source']}.",
        "",
    ]
    warning = busy_warning(result["machine"])
    if warning:
        lines += [warning, ""]
    if run.get("epochs_cap") is not None:
        lines += [
            f"**Harness test, not a result: training capped at {run['epochs_cap']} epochs.**",
            "",
        ]
    lines += [
        "How it is measured: each size runs in a scratch git + DVC repository of its own (own "
        "MLflow SQLite store and `BENTOML_HOME`, telemetry off). Every stage's `cmd` from "
        "`dvc.yaml` runs in pipeline order as its own process: wall time from spawn to exit; "
        "CPU = user + system time; peak RSS = `ru_maxrss` from `os.wait4` (the largest process "
        "among the stage and the children it waited for; each stage is started by a fresh ~9 MB "
        "launcher process, since Linux counts a spawning parent's own peak into its child's); "
        "tree = the most the stage's live "
        "process tree held at once, sampled every 0.2 s. `dvc commit -f <stage>` (hashing, "
        "caching, dvc.lock) follows each stage, timed apart in the `dvc` column; the totals "
        "include it. Throughput is rating-epochs per second of the fit loop over epochs 2..n, "
        f"from {result['run']['throughput_source']}. Surprise SVD ({SURPRISE_FACTORS} factors, "
        f"{SURPRISE_EPOCHS} epochs) fits the same train rows, in the order the split stores "
        "them, in its own venv, timed by its own clock (fit only)."
        + (
            f" A stage whose process tree held more than {run['rss_limit_gb']:g} GB would have "
            "been stopped (the machine is shared)."
            if run.get("rss_limit_gb")
            else ""
        ),
        "",
        "| size | shape | users | items | ratings | train rows |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, entry in result["sizes"].items():
        d = entry["data"]
        lines.append(
            f"| {name.upper()} | {entry['label']} | {d['n_users']:,} | {d['n_items']:,} | "
            f"{d['n_ratings']:,} | {_fmt(d.get('train_rows'), ',')} |"
        )
    for name, entry in result["sizes"].items():
        d = entry["data"]
        lines += [
            "",
            f"## {name.upper()}: {d['n_ratings']:,} ratings ({d['n_users']:,} users x "
            f"{d['n_items']:,} items)",
            "",
        ]
        if not entry["complete"]:
            lines += [f"**Incomplete: {entry.get('failure', 'stopped')}**", ""]
        lines += [
            "| stage | wall (s) | CPU (s) | peak RSS (GB) | tree (GB) | dvc (s) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for stage, m in entry["stages"].items():
            lines.append(
                f"| {stage} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_gb']:.2f} | "
                f"{m['tree_peak_gb']:.2f} | {m['dvc']['wall_s']:.1f} |"
            )
        peak = max((peak_gb(m) for m in entry["stages"].values()), default=0.0)
        stages_s = sum(m["wall_s"] for m in entry["stages"].values())
        dvc_s = sum(m["dvc"]["wall_s"] for m in entry["stages"].values())
        lines += [
            f"| **stages** | **{stages_s:.1f}** | {entry['cpu_s']:.1f} | {peak:.2f} (max) | "
            f"| {dvc_s:.1f} |",
            "",
            f"Whole pipeline: **{entry['total_s']:.1f} s** ({entry['total_s'] / 60:.1f} min), "
            "the stages plus their `dvc commit`s (each of which pays DVC's start-up, ~1-2 s, "
            "that one `dvc repro` pays once). CPU includes the commits.",
        ]
        t = entry.get("train") or {}
        if t:
            cap = stopped_at_cap(t)
            stop = {
                True: f"; **stopped at the cap** of {t['epochs_cap']}, not by early stopping",
                False: f"; stopped early, below the cap of {t.get('epochs_cap')}",
                None: "",
            }[cap]
            ease = _fmt(t.get("ease_ndcg"), ".4f") if t.get("ease_ndcg") is not None else "not run"
            lines += [
                "",
                f"Training (`{t['model']}`): fit {t['epochs_run']} epochs (best {t['best_epoch']}"
                f"{stop}) on {t['train_rows']:,} rows in {_fmt(t.get('fit_seconds'), '.1f')} s; "
                f"refit {_fmt(t.get('refit_epochs'), 'd')} epochs on "
                f"{_fmt(t.get('refit_rows'), ',')} rows in "
                f"{_fmt(t.get('refit_seconds'), '.1f')} s. Throughput: fit loop "
                f"**{_fmt(t.get('throughput'), ',.0f')}** rating-epochs/s, refit "
                f"{_fmt(t.get('refit_throughput'), ',.0f')}/s. Test RMSE "
                f"{_fmt(t.get('test_rmse'), '.4f')}, NDCG@10 {_fmt(t.get('test_ndcg'), '.4f')} "
                f"(popularity {_fmt(t.get('popularity_ndcg'), '.4f')}, EASE {ease}).",
            ]
        s = entry.get("surprise")
        if s:
            lines += [
                "",
                f"Surprise SVD {s['factors']}x{s['epochs']}: fit {s['fit_seconds']:.1f} s on "
                f"{s['train_rows']:,} rows, **{s['throughput']:,.0f}** rating-epochs/s, test RMSE "
                f"{s['rmse']:.4f}; its process {s['wall_s']:.1f} s, peak RSS "
                f"{s['peak_gb']:.2f} GB.",
            ]
    lines += [
        "",
        "## Side by side",
        "",
        "| size | train stage (s) | Surprise fit (s) | ratio | ours (rating-epochs/s) "
        "| Surprise (rating-epochs/s) | ours / Surprise |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["sizes"].items():
        train_s = entry["stages"].get("train", {}).get("wall_s")
        s, t = entry.get("surprise") or {}, entry.get("train") or {}
        lines.append(
            f"| {name.upper()} | {_fmt(train_s, '.1f')} | {_fmt(s.get('fit_seconds'), '.1f')} | "
            f"{_fmt(_ratio(train_s, s.get('fit_seconds')), '.1f', 'x')} | "
            f"{_fmt(t.get('throughput'), ',.0f')} | {_fmt(s.get('throughput'), ',.0f')} | "
            f"{_fmt(_ratio(t.get('throughput'), s.get('throughput')), '.2f', 'x')} |"
        )
    lines += family_section(result)
    ratios = growth(result)
    if ratios:
        small, large = result["sizes"]["1m"], result["sizes"]["10m"]

        def cells(entry: dict[str, Any]) -> int:
            return entry["data"]["n_users"] * entry["data"]["n_items"]

        lines += [
            "",
            "## Growth: time(10M) / time(1M) per stage",
            "",
            f"10x the ratings, {cells(large) / cells(small):.0f}x the user x item cells. "
            "The CPU time ratio is less sensitive to other work on the machine.",
            "",
            "| stage | 1M (s) | 10M (s) | ratio | CPU ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for stage, r in ratios.items():
            if stage == "total":
                a, b = small, large
                cpu = _ratio(large["cpu_s"], small["cpu_s"])
            else:
                a, b = small["stages"][stage], large["stages"][stage]
                cpu = _ratio(b["cpu_s"], a["cpu_s"])
            wall_a = a["total_s"] if stage == "total" else a["wall_s"]
            wall_b = b["total_s"] if stage == "total" else b["wall_s"]
            lines.append(
                f"| {stage} | {wall_a:.1f} | {wall_b:.1f} | {_fmt(r, '.1f', 'x')} | "
                f"{_fmt(cpu, '.1f', 'x')} |"
            )
    lines += [
        "",
        "## Targets (issue 21)",
        "",
        "On a quiet machine with real early stopping. Throughput: our fit loop's rating-epochs/s "
        f"(the default model's in the train stage, {FAMILY}'s alone) "
        f"against Surprise SVD {SURPRISE_FACTORS}x{SURPRISE_EPOCHS}'s on the same train rows in "
        "the same run; quality: test NDCG@10 against the baselines evaluate scored on the same "
        "split."
        + (" This run's machine was busy (see the top): its timings overstate." if warning else ""),
        "",
        "| target | measured | met |",
        "|---|---|:---:|",
    ]
    for row in result["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    m = result["machine"]
    lines += [
        "",
        "## Machine",
        "",
        f"- {m['cpus']} CPUs, {m['ram_gb']:.1f} GB RAM ({m['available_gb']:.1f} GB available at "
        f"the start); load average (1, 5, 15 min) {m['load_before']} at the start and "
        f"{m['load_after']} at the end (per size in the JSON; the end's includes this run's "
        "last process, about 1). Other work on a shared machine slows every number here; the "
        "ratios to Surprise are measured within one run.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}.",
        "",
        f"![Stage wall time and peak RSS against ratings, log-log]({Path(run['plot']).name})",
    ]
    return "\n".join(lines) + "\n"


# --- measuring processes ----------------------------------------------------------------------


@dataclass
class Measured:
    """One process (and its children) from spawn to exit."""

    wall_s: float
    cpu_s: float
    peak_gb: float
    tree_peak_gb: float
    returncode: int
    #: Stopped by this harness: its process tree went over the memory limit.
    killed: bool = False


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """RSS summed over ``pid`` and its live descendants, now."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss(p)
        todo.extend(_children(p))
    return total


@contextlib.contextmanager
def _sampling(pid: int, limit: int | None = None, every: float = 0.2) -> Iterator[list[int]]:
    """Track the peak of :func:`tree_rss` while the block runs; past ``limit`` bytes, kill the
    process group (the machine is shared: better one stage stopped than the kernel's OOM killer
    choosing someone else's process). ``peak[1]`` is 1 once it has killed."""
    peak = [0, 0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(pid))
            if limit is not None and peak[0] > limit and not peak[1]:
                peak[1] = 1
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


#: Starts one command and reports how it ran. Linux counts the parent's peak RSS into a
#: spawned child's ``ru_maxrss`` (exec records the high-water mark of the memory it replaces,
#: which a vfork-spawned child shares with its parent), so children of this harness would
#: inherit its own peak. This launcher is a fresh, small interpreter (~9 MB, no site
#: packages): what its child reports is the child's own peak, or at most the launcher's.
LAUNCHER = """
import os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as fh:
    fh.write(repr((os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime,
                   usage.ru_maxrss)))
"""


def run_measured(
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    stdout: Path | None = None,
    limit_gb: float | None = None,
) -> Measured:
    """Run ``args`` to completion through :data:`LAUNCHER`: wall time, CPU time and peak RSS
    from ``os.wait4``, and the process tree's RSS sampled meanwhile (killed past ``limit_gb``).
    Its output goes to ``log`` (stdout to ``stdout`` if given)."""
    import ast

    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *args]
    with open(log, "ab") as err, open(stdout or log, "ab") as out:
        proc = subprocess.Popen(
            launcher, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )
        limit = None if limit_gb is None else int(limit_gb * GB)
        with _sampling(proc.pid, limit) as peak:
            proc.wait()
        if peak[1]:
            msg = f"\n[bench-scale] killed: the process tree held {peak[0] / GB:.1f} GB, over "
            err.write(f"{msg}the {limit_gb:.1f} GB limit (--rss-limit-gb)\n".encode())
    if proc.returncode != 0 or not report.is_file():  # killed, or could not start it
        return Measured(0.0, 0.0, 0.0, peak[0] / GB, proc.returncode or 127, bool(peak[1]))
    returncode, wall, cpu, maxrss_kib = ast.literal_eval(report.read_text())
    report.unlink()
    return Measured(
        wall_s=wall,
        cpu_s=cpu,
        peak_gb=maxrss_kib * 1024 / GB,  # Linux reports KiB
        tree_peak_gb=peak[0] / GB,
        returncode=returncode,
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- one size ---------------------------------------------------------------------------------


@dataclass
class SizeRun:
    size: Size
    repo: Path
    logs: Path
    env: dict[str, str]
    limit_gb: float | None = None
    entry: dict[str, Any] = field(default_factory=dict)


def prepare(
    size: Size, folder: Path, logs: Path, raw: dict[str, Any], limit_gb: float | None = None
) -> SizeRun:
    """A scratch repository for ``size`` with its params, store and Bento home."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from support import child_env, make_scratch_repo  # the e2e tests' scratch repos

    folder.mkdir(parents=True)
    repo = make_scratch_repo(folder)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "commit", "-qam", f"bench-scale {size.name}"], cwd=repo, check=True)
    env = child_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", BENTOML_HOME=str(repo / "bentoml")
    )
    return SizeRun(size, repo, logs, env, limit_gb)


def run_stages(run: SizeRun) -> bool:
    """Every stage in order, then ``dvc commit``; stops at the first failure."""
    order = stage_order(yaml.safe_load((run.repo / "dvc.yaml").read_text()))
    stages: dict[str, Any] = {}
    run.entry["stages"] = stages
    for name, cmd in order:
        print(f"[scale] {run.size.name}: {name} ...", file=sys.stderr, flush=True)
        log = run.logs / f"{name}.log"
        m = run_measured(shlex.split(cmd), run.repo, run.env, log, limit_gb=run.limit_gb)
        if m.returncode != 0:
            run.entry["failure"] = f"stage {name} exited with {m.returncode}" + (
                f" (killed by the harness: {m.tree_peak_gb:.1f} GB, over its "
                f"{run.limit_gb:.1f} GB limit)"
                if m.killed
                else ""
            )
            print(f"[scale] {name} failed ({m.returncode}):\n{_tail(log)}", file=sys.stderr)
            return False
        dvc = run_measured(
            [sys.executable, "-m", "dvc", "commit", "-f", "-q", name],
            run.repo,
            run.env,
            run.logs / f"{name}.dvc.log",
            limit_gb=run.limit_gb,
        )
        if dvc.returncode != 0:
            run.entry["failure"] = f"dvc commit {name} exited with {dvc.returncode}"
            print(f"[scale] {run.entry['failure']}:\n{_tail(run.logs / f'{name}.dvc.log')}")
            return False
        stages[name] = {**asdict(m), "dvc": asdict(dvc)}
        print(
            f"[scale] {run.size.name}: {name} {m.wall_s:.1f} s, {m.peak_gb:.2f} GB "
            f"(+ dvc {dvc.wall_s:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return True


def _read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def training_numbers(run: SizeRun, train_rows: int, epochs_cap: int) -> dict[str, Any]:
    """What the train stage did: epochs (and the cap it may have run to), seconds, throughput;
    test metrics and the baselines' NDCG@10 from evaluate."""
    import mlflow

    record = json.loads((run.repo / "models" / "run.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=run.env["MLFLOW_TRACKING_URI"])
    metrics = client.get_run(record["run_id"]).data.metrics
    history = _read_history(run.repo / "reports" / "train_history.csv")

    def logged(key: str) -> list[Any]:
        return sorted(client.get_metric_history(record["run_id"], key), key=lambda m: m.step)

    def seconds(prefix: str) -> tuple[list[float | None], str]:
        """Per-epoch seconds of the training passes (the train stage's ``epoch_seconds``); for
        runs that lack it, the spacing of the epochs' logged metrics (validation included)."""
        timed = logged(f"{prefix}epoch_seconds")
        if timed:
            return [m.value for m in timed], "the train stage's epoch_seconds (validation excluded)"
        stamps = [m.timestamp for m in logged(f"{prefix}loss")]
        return epoch_seconds_from_timestamps(stamps), (
            "spacing of the metrics MLflow logged per epoch, validation included"
        )

    if history and "epoch_seconds" in history[0]:
        fit_epochs: list[float | None] = [float(r["epoch_seconds"]) for r in history]
        source = "the train stage's epoch_seconds (validation excluded)"
    else:
        fit_epochs, source = seconds("")
    refit_epochs, _ = seconds("refit_")
    refit_rows = int(metrics["refit_train_rows"]) if "refit_train_rows" in metrics else None
    test = json.loads((run.repo / "reports" / "metrics.json").read_text())
    return {
        "model": record.get("model"),
        "epochs_run": int(metrics.get("epochs_run", len(history))),
        "best_epoch": int(metrics.get("best_epoch", 0)),
        "epochs_cap": epochs_cap,
        "fit_seconds": metrics.get("fit_seconds"),
        "refit_seconds": metrics.get("refit_seconds"),
        "refit_epochs": len(refit_epochs) or None,
        "train_rows": train_rows,
        "refit_rows": refit_rows,
        "epoch_seconds": fit_epochs,
        "refit_epoch_seconds": refit_epochs,
        "throughput": throughput(train_rows, [e or 0.0 for e in fit_epochs]),
        "refit_throughput": throughput(refit_rows or 0, [e or 0.0 for e in refit_epochs]),
        "throughput_source": source,
        "logged_fit_ratings_per_second": metrics.get("fit_ratings_per_second"),
        **quality(test),
    }


def run_surprise(run: SizeRun, python: str, factors: int, seed: int) -> dict[str, Any]:
    """Surprise SVD (``factors`` x 20 epochs) on the processed train rows, tested on test."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    folder = run.repo / "surprise"
    folder.mkdir(exist_ok=True)
    files = {}
    for part in ("train", "test"):
        table = pq.read_table(
            run.repo / "data" / "processed" / f"{part}.parquet",
            columns=["user_idx", "item_idx", "rating", "timestamp"],
        )
        files[part] = folder / f"{part}.tsv"
        options = pacsv.WriteOptions(include_header=False, delimiter="\t")
        pacsv.write_csv(table, files[part], options)
        if part == "train":
            train_rows = table.num_rows
        del table
    name = f"SVD {factors}x{SURPRISE_EPOCHS}"
    print(f"[scale] {run.size.name}: Surprise {name} ...", file=sys.stderr, flush=True)
    out = run.logs / "surprise.json"
    m = run_measured(
        [
            python,
            str(HERE / "surprise_peer.py"),
            "--train",
            str(files["train"]),
            "--test",
            str(files["test"]),
            "--seed",
            str(seed),
            "--svd",
            f"{factors},{SURPRISE_EPOCHS}",
            "--only",
            name,
        ],
        run.repo,
        run.env,
        run.logs / "surprise.log",
        stdout=out,
        limit_gb=run.limit_gb,
    )
    shutil.rmtree(folder)
    if m.returncode != 0:
        raise RuntimeError(f"surprise_peer.py failed:\n{_tail(run.logs / 'surprise.log')}")
    peer = json.loads(out.read_text())
    svd = peer["models"][name]
    return {
        "version": peer["surprise"],
        "factors": factors,
        "epochs": SURPRISE_EPOCHS,
        "train_rows": train_rows,
        "fit_seconds": svd["fit_seconds"],
        "throughput": train_rows * SURPRISE_EPOCHS / svd["fit_seconds"],
        "rmse": svd["rmse"],
        "wall_s": m.wall_s,
        "peak_gb": m.peak_gb,
    }


def run_family(run: SizeRun, family: str = FAMILY, epochs: int = FAMILY_EPOCHS) -> dict[str, Any]:
    """``family``'s fit loop alone on the size's processed data (``family_throughput.py``, this
    harness's python); a failure is recorded, not raised (the pipeline's numbers still count)."""
    print(f"[scale] {run.size.name}: {family} alone ...", file=sys.stderr, flush=True)
    out = run.logs / f"{family}_throughput.json"
    log = run.logs / f"{family}_throughput.log"
    m = run_measured(
        [
            sys.executable,
            str(HERE / "family_throughput.py"),
            "--processed",
            str(run.repo / "data" / "processed"),
            "--params",
            str(run.repo / "params.yaml"),
            "--family",
            family,
            "--epochs",
            str(epochs),
            "--out",
            str(out),
        ],
        run.repo,
        run.env,
        log,
        limit_gb=run.limit_gb,
    )
    if m.returncode != 0 or not out.is_file():
        failure = f"family_throughput.py exited with {m.returncode}" + (
            " (killed by the harness: over its memory limit)" if m.killed else ""
        )
        print(f"[scale] {failure}:\n{_tail(log)}", file=sys.stderr)
        return {"family": family, "failure": failure}
    measured = json.loads(out.read_text())
    print(
        f"[scale] {run.size.name}: {family} {measured['throughput']:,.0f} rating-epochs/s",
        file=sys.stderr,
        flush=True,
    )
    return {**measured, "wall_s": m.wall_s, "peak_gb": m.peak_gb}


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _meminfo() -> dict[str, float]:
    out = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024 / GB
    return {"ram_gb": out.get("MemTotal", 0.0), "available_gb": out.get("MemAvailable", 0.0)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("tensorflow-cpu", "keras", "numpy", "pandas", "dvc", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Log-log: each stage's wall time and peak RSS against the number of ratings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [e for e in result["sizes"].values() if e["stages"]]
    stages = list(dict.fromkeys(s for e in sizes for s in e["stages"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for stage in stages:
        points = [
            (e["data"]["n_ratings"], e["stages"][stage]) for e in sizes if stage in e["stages"]
        ]
        x = [p[0] for p in points]
        left.plot(x, [p[1]["wall_s"] for p in points], marker="o", label=stage)
        right.plot(x, [peak_gb(p[1]) for p in points], marker="o", label=stage)
    complete = [e for e in sizes if e["complete"]]
    left.plot(
        [e["data"]["n_ratings"] for e in complete],
        [e["total_s"] for e in complete],
        marker="s",
        color="black",
        linewidth=2,
        label="whole pipeline",
    )
    peers = [e for e in sizes if e.get("surprise")]
    if peers:
        left.plot(
            [e["data"]["n_ratings"] for e in peers],
            [e["surprise"]["fit_seconds"] for e in peers],
            marker="^",
            color="grey",
            linestyle="--",
            label=f"Surprise SVD fit ({SURPRISE_EPOCHS} epochs)",
        )
    if complete:  # a guide: cost growing in proportion to the ratings from the smallest size
        first = complete[0]
        x = [e["data"]["n_ratings"] for e in complete]
        left.plot(
            x,
            [first["total_s"] * n / x[0] for n in x],
            color="black",
            linestyle=":",
            linewidth=1,
            label="proportional to ratings",
        )
    for size, limit in MEMORY_LIMITS_GB.items():
        right.axhline(limit, color="grey", linestyle=":", linewidth=1)
        right.annotate(f"{limit:g} GB target at {size.upper()}", (0.02, limit), color="grey",
                       xycoords=("axes fraction", "data"), va="bottom", fontsize=8)  # fmt: skip
    for ax, title, unit in ((left, "wall time per stage", "seconds"),
                            (right, "peak RSS per stage", "GB")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ratings")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"Pipeline cost vs data size ({result['run']['model']}, {result['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"of {list(SIZES)} (%(default)s)")
    parser.add_argument("--with-25m", action="store_true", help="add the ML-25M-like size")
    parser.add_argument("--model", help="train.model for every size (default: params.yaml's)")
    parser.add_argument(
        "--epochs", type=int, help="cap training epochs (testing the harness only; not a result)"
    )
    parser.add_argument("--params", default="params.yaml", help="the params to scale")
    parser.add_argument("--surprise-python", help="python of the Surprise venv (its bin/python)")
    parser.add_argument("--no-surprise", action="store_true", help="skip Surprise")
    parser.add_argument(
        "--no-family-throughput",
        action="store_true",
        help=f"skip {FAMILY}'s fit loop measured alone (benchmarks/family_throughput.py)",
    )
    parser.add_argument("--workdir", help="where the scratch repositories go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    parser.add_argument(
        "--rss-limit-gb",
        type=float,
        help="stop a stage whose process tree holds more (default: 80%% of the machine's RAM)",
    )
    parser.add_argument("--out", default="reports/bench_scale.md")
    parser.add_argument("--json", default="reports/bench_scale.json")
    parser.add_argument("--plot", default="reports/bench_scale.png")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes, args.with_25m)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.no_surprise and not args.surprise_python:
        parser.error("--surprise-python is required (or --no-surprise)")
    if args.rss_limit_gb is None:
        args.rss_limit_gb = round(0.8 * _meminfo()["ram_gb"], 1) or None

    from recommender.core.config import parse_params
    from recommender.core.io import write_text
    from recommender.core.telemetry import disable_telemetry
    from recommender.tracking import git_commit

    disable_telemetry()
    base = yaml.safe_load(Path(args.params).read_text())
    raws = {s.name: scale_params(base, s, args.model, args.epochs) for s in sizes}
    caps = {  # every size's params pass the strict check before any work
        name: parse_params(raw, f"bench-scale params ({name})").train.family_epochs
        for name, raw in raws.items()
    }
    model = raws[sizes[0].name]["train"]["model"]
    seed = int(base.get("seed", 0))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[scale] scratch repositories and logs under {workdir}", file=sys.stderr)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(ROOT) or "unknown",
        "run": {
            "command": command_line(args),
            "make": make_command(args),
            "model": model,
            "model_source": "--model" if args.model else "params.yaml's train.model",
            "epochs_cap": args.epochs,
            "epochs_source": "params.yaml's (early stopping picks the count)"
            if args.epochs is None
            else f"capped at {args.epochs} (--epochs)",
            "throughput_source": "",
            "family_throughput": None if args.no_family_throughput else family_command(),
            "measurement": "stage cmd from dvc.yaml per process; os.wait4 ru_maxrss, "
            "sampled process-tree RSS (0.2 s); dvc commit -f timed apart",
            "plot": portable(args.plot),
            "rss_limit_gb": args.rss_limit_gb,
        },
        "machine": {"cpus": os.cpu_count(), **_meminfo(), "load_before": _load()},
        "versions": _versions(),
        "sizes": {},
    }
    failed = False
    for size in sizes:
        load_before = _load()
        logs = workdir / "logs" / size.name
        run = prepare(size, workdir / size.name, logs, raws[size.name], args.rss_limit_gb)
        entry = run.entry
        entry.update(label=size.label, load_before=load_before)
        complete = run_stages(run)
        syn = raws[size.name]["synthetic"]
        entry["data"] = {k: syn.get(k) for k in ("n_users", "n_items", "n_ratings")}
        entry["complete"] = complete
        stages = entry["stages"]
        entry["total_s"] = sum(m["wall_s"] + m["dvc"]["wall_s"] for m in stages.values())
        entry["cpu_s"] = sum(m["cpu_s"] + m["dvc"]["cpu_s"] for m in stages.values())
        data_json = run.repo / "reports" / "data.json"
        if data_json.is_file():
            rows = json.loads(data_json.read_text())["rows"]
            entry["data"]["train_rows"] = rows["train"]
        if complete:
            entry["train"] = training_numbers(run, entry["data"]["train_rows"], caps[size.name])
            result["run"]["throughput_source"] = entry["train"]["throughput_source"]
        measurable = "train_rows" in entry["data"] and size.name in SURPRISE_SIZES
        if measurable and not args.no_family_throughput:  # before Surprise, as the report says
            entry[FAMILY] = run_family(run)
        if measurable and not args.no_surprise:
            python = os.path.abspath(args.surprise_python)  # not resolve(): keep the venv's link
            entry["surprise"] = run_surprise(run, python, SURPRISE_FACTORS, seed)
        entry["load_after"] = _load()
        failed = failed or not complete
        result["sizes"][size.name] = entry
        if not args.keep:
            shutil.rmtree(run.repo.parent, ignore_errors=True)
    result["machine"]["load_after"] = _load()
    result["targets"] = targets(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # Not write_json: its sorted keys would lose the stages' pipeline order.
    write_text(json.dumps(result, indent=2, default=str) + "\n", args.json)
    plot(result, args.plot)
    write_text(report_markdown(result), args.out)
    print(report_markdown(result))
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"[scale] logs kept under {workdir}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
