"""benchmarks/spark.py's pure parts: sizes, params per engine, what runs where, the ratios and
issue 24's targets (each can fail on its own), how a stopped stage is told, process roles, the
busy-machine warning and the report rendered from fixed numbers (nothing runs a stage or a JVM)."""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import load_benchmark

from recommender.core.config import parse_params

ROOT = Path(__file__).resolve().parents[2]


HEAVY = frozenset({"tensorflow", "keras", "mlflow", "pyspark", "pyarrow"})


bench = load_benchmark("bench_spark", "spark.py", HEAVY)
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
GB = 1024**3


def test_parse_sizes():
    assert [s.name for s in bench.parse_sizes("100m,1m")] == ["1m", "100m"]  # smallest first
    assert [s.name for s in bench.parse_sizes(" 25M ")] == ["25m"]
    with pytest.raises(ValueError, match="unknown size"):
        bench.parse_sizes("1m,10m")
    with pytest.raises(ValueError, match="no sizes"):
        bench.parse_sizes(",")


def test_shapes_are_the_real_sets():
    big, netflix = bench.SPARK_SIZES["25m"], bench.SPARK_SIZES["100m"]
    assert (big.n_users, big.n_items, big.n_ratings) == (162_541, 59_047, 25_000_095)
    assert (netflix.n_users, netflix.n_items, netflix.n_ratings) == (480_189, 17_770, 100_480_507)
    assert bench.SPARK_SIZES["1m"].n_ratings == 1_000_209


def test_engine_params_change_only_the_data_engine_master_and_shape():
    raw = bench.engine_params(PARAMS, bench.SPARK_SIZES["25m"], "spark", "local[2]")
    assert raw["data"] == {**PARAMS["data"], "source": "synthetic", "engine": "spark"}
    assert raw["spark"] == {**PARAMS["spark"], "master": "local[2]"}
    assert raw["synthetic"]["n_ratings"] == 25_000_095
    for section in PARAMS:
        if section not in ("synthetic", "data", "spark"):
            assert raw[section] == PARAMS[section], section
    parse_params(raw)  # what the stages' strict loader accepts
    assert bench.engine_params(PARAMS, bench.SPARK_SIZES["1m"], "pandas", "x")["data"][
        "engine"
    ] == ("pandas")


def test_plan_runs_every_stage_of_the_chosen_engines():
    for size in ("25m", "100m"):
        assert bench.plan(bench.SPARK_SIZES[size]) == [
            ("pandas", bench.STAGES),
            ("spark", bench.STAGES),
        ]
    assert bench.plan(bench.SPARK_SIZES["100m"], ("pandas",)) == [("pandas", bench.STAGES)]


def test_a_merged_run_keeps_the_earlier_runs_not_run_again():
    old_runs = {"pandas": {"old": 1}, "spark": {"s": 1}}
    old = {"label": "x", "data": {}, "runs": old_runs, "train_epoch": {"rows": 5}}
    earlier = {"commit": "abcdef123", "date": "2026-12-07 22:44", "sizes": {"100m": old}}
    now = {"sizes": {"100m": {"label": "x", "data": {}, "runs": {"pandas": {"new": 1}}}}}
    bench.merged(now, earlier)
    runs = now["sizes"]["100m"]["runs"]
    assert runs == {"pandas": {"new": 1}, "spark": {"s": 1, "origin": "abcdef1, 2026-12-07 22:44"}}
    assert now["sizes"]["100m"]["train_epoch"] == {"rows": 5}
    assert now["merged"] == ["100m spark: from abcdef1, 2026-12-07 22:44"]
    # Merged again later, a kept run still names the run that made it.
    later = {"sizes": {"100m": {"label": "x", "data": {}, "runs": {"pandas": {"newer": 1}}}}}
    bench.merged(later, {**now, "commit": "9999999aa", "date": "2026-12-08 00:10"})
    assert later["merged"] == ["100m spark: from abcdef1, 2026-12-07 22:44"]


def _stage(wall: float, gb: float, returncode: int = 0, **extra: Any) -> dict[str, Any]:
    """A stage's measurement: its largest process holds ``gb`` (the driver JVM with ``jvm``,
    else the stage's own process)."""
    jvm = extra.pop("jvm", False)
    own = gb / 4 if jvm else gb
    processes = [
        {
            "pid": 1,
            "role": "launcher (harness)",
            "comm": "python",
            "peak_gb": 0.01,
            "hwm_gb": 0.01,
            "rss_gb": 0.01,
            "seconds": wall,
        },
        {
            "pid": 2,
            "role": "stage process (python)",
            "comm": "python",
            "peak_gb": own,
            "hwm_gb": own,
            "rss_gb": own * 0.9,
            "seconds": wall,
        },
    ]
    if jvm:
        processes.append(
            {
                "pid": 3,
                "role": "Spark driver JVM (local[N]: executors inside)",
                "comm": "java",
                "peak_gb": gb,
                "hwm_gb": gb,
                "rss_gb": gb * 0.9,
                "seconds": wall - 1,
            }
        )
    return {
        "wall_s": wall,
        "cpu_s": wall,
        "ru_maxrss_gb": gb,
        "returncode": returncode,
        "killed": None,
        "limit_gb": 18.8,
        "timeout_s": None,
        "error": None,
        "tree_peak_gb": gb * 1.3,
        "processes": processes,
        **extra,
    }


def _run(engine: str, seconds: float, gb: float, stages=bench.STAGES, load=0.5) -> dict:
    jvm = engine == "spark"
    return {
        "engine": engine,
        "master": "local[2]" if jvm else None,
        "load_before": [load, 0.5, 0.5],
        "load_after": [0.9, 0.6, 0.5],
        "complete": True,
        "disk_gb": 0.5,
        "stages": {
            s: _stage(seconds if s in bench.DATA_STAGES else 1.0, gb, jvm=jvm) for s in stages
        },
    }


REFUSAL = (
    "error: stage 'ingest' failed: not enough memory: the ingest stage needs about 18.7 GB but "
    "16.0 GB is available (MemAvailable in <proc>/meminfo); the estimate: synthetic ratings: "
    "100,480,507 ratings x 200 B = 18.7 GB."
)


def _result(ratio_25m: float = 1.2, spark_gb: float = 6.0, epoch_gb: float | None = 3.0) -> dict:
    probe = _run("pandas", 1.0, 0.1, stages=("check_params", "feedback", "ingest"))
    probe["stages"]["ingest"] = _stage(2.5, 0.1, returncode=1, error=REFUSAL)
    probe.update(complete=False, failure="ingest exited with 1")
    netflix = {
        "label": "Netflix-Prize-like",
        "data": {"n_users": 480_189, "n_items": 17_770, "n_ratings": 100_480_507},
        "runs": {"pandas": probe, "spark": _run("spark", 400.0, spark_gb)},
    }
    if epoch_gb is not None:
        netflix["train_epoch"] = {
            "command": "python benchmarks/stream_epoch.py --data data/processed --out <json>",
            "measured": _stage(60.0, epoch_gb),
            "fields": {"rows": 72_000_000, "ratings_per_second": 250_000.0, "loss": [7.1]},
        }
    return {
        "date": "2026-12-08 10:00",
        "commit": "abc1234",
        "run": {
            "command": "python benchmarks/spark.py --sizes 25m,100m",
            "make": "make bench-spark",
            "master": "local[2]",
            "sample_s": 0.2,
            "rss_limit_gb": 18.8,
        },
        "machine": {
            "cpus": 2,
            "ram_gb": 23.5,
            "available_gb": 20.0,
            "load_before": [0.4, 0.5, 0.6],
            "load_after": [0.9, 0.7, 0.6],
        },
        "versions": {"python": "3.11", "pyspark": "4.1.4"},
        "sizes": {
            "25m": {
                "label": "ML-25M-like",
                "data": {"n_users": 162_541, "n_items": 59_047, "n_ratings": 25_000_095},
                "runs": {
                    "pandas": _run("pandas", 20.0, 4.0),
                    "spark": _run("spark", 20.0 * ratio_25m, spark_gb),
                },
            },
            "100m": netflix,
        },
    }


def _met(result: dict) -> list[bool | None]:
    return [row["met"] for row in bench.targets(result)]


def test_totals_ratio_and_largest_process():
    result = _result(ratio_25m=1.2)
    runs = result["sizes"]["25m"]["runs"]
    assert bench.total_s(runs["pandas"]) == pytest.approx(60.0)  # the three data stages only
    assert bench.total_s(runs["spark"]) == pytest.approx(72.0)
    top = bench.max_process(runs["spark"])
    assert (top["gb"], top["role"]) == (6.0, "Spark driver JVM (local[N]: executors inside)")
    assert bench.total_s(result["sizes"]["100m"]["runs"]["pandas"]) is None  # stopped
    assert bench.ratio(None, 2.0) is None and bench.ratio(3.0, 0.0) is None


def test_targets_met_and_missed_on_their_own():
    # time ratio, 25M memory, 100M memory, where pandas stops (informs), the streamed epoch
    assert _met(_result()) == [True, True, True, None, True]
    assert _met(_result(ratio_25m=1.6)) == [False, True, True, None, True]
    assert _met(_result(spark_gb=9.0)) == [True, False, False, None, True]
    assert _met(_result(epoch_gb=9.0)) == [True, True, True, None, False]
    assert _met(_result(epoch_gb=None))[-1] is None
    broken = _result()
    broken["sizes"]["100m"]["runs"]["spark"]["stages"]["preprocess"]["returncode"] = 1
    assert _met(broken)[2] is False
    rows = bench.targets(_result(ratio_25m=1.6))
    assert rows[0]["measured"] == "1.60x (96.0 s vs 60.0 s)"
    assert "not enough memory" in rows[3]["measured"]


def test_targets_not_run():
    result = _result()
    del result["sizes"]["25m"]
    result["sizes"]["100m"]["runs"].pop("spark")
    rows = bench.targets(result)
    assert [r["measured"] for r in rows[:3]] == ["not run"] * 3
    assert [r["met"] for r in rows[:3]] == [None] * 3


def test_epoch_below_100m_only_informs():
    result = _result()
    result["sizes"]["1m"] = result["sizes"].pop("100m")
    row = bench.targets(result)[-1]
    assert row["met"] is None and row["measured"].startswith("not run at 100M; 1M: ran")
    result["sizes"]["1m"]["train_epoch"] = {"command": "x", "skipped": "not there yet"}
    assert bench.targets(result)[-1]["measured"] == "1M: not there yet"


def test_outcome_tells_how_a_stage_stopped():
    assert bench.outcome(_stage(3.0, 1.0)).startswith("ran to the end after 3.0 s")
    refused = bench.outcome(_stage(2.5, 0.1, returncode=1, error=REFUSAL))
    assert refused.startswith("exited with 1 after 2.5 s: `error: stage 'ingest' failed: not")
    memory = bench.outcome(_stage(90.0, 19.0, returncode=-9, killed="memory"))
    assert "killed by this harness after 90.0 s" in memory and "18.8 GB limit" in memory
    late = bench.outcome(_stage(3600.0, 5.0, returncode=-9, killed="timeout", timeout_s=3600.0))
    assert late.startswith("killed by this harness at its 3600 s wall clock limit")
    assert "SIGKILL" in bench.outcome(_stage(50.0, 20.0, returncode=-9))  # not this harness


def test_scrub_leaves_no_machine_path():
    text = "at /tmp/bench-spark-x/1m-pandas/project/data, MemAvailable in /proc/meminfo, /a/b/c"
    out = bench.scrub(text, "/tmp/bench-spark-x")
    assert out == "at <scratch>/1m-pandas/project/data, MemAvailable in <proc>/meminfo, <a>/c"
    assert bench.scrub(str(ROOT / "src" / "x.py")) == "<project>/src/x.py"


def test_roles():
    assert bench.role("python", "python -I -S -c ...", 0) == "launcher (harness)"
    assert bench.role("python", "python pipeline/ingest.py", 1) == "stage process (python)"
    driver = "java -cp x org.apache.spark.deploy.SparkSubmit pyspark-shell"
    assert bench.role("java", driver, 2).startswith("Spark driver JVM")
    assert bench.role("bash", f"bash spark-class {driver}", 2).startswith("shell (bash")
    assert bench.role("java", "java -Xmx128m org.apache.spark.launcher.Main", 3).startswith(
        "Spark launcher JVM"
    )
    assert bench.role("python3", "python3 -m pyspark.daemon", 3) == "PySpark worker"


def test_busy_runs_name_each_loaded_run():
    result = _result()
    assert bench.busy_runs(result) == []
    result["sizes"]["25m"]["runs"]["spark"]["load_before"] = [2.4, 1.0, 1.0]
    assert bench.busy_runs(result) == ["25M spark (load 2.4 before, 0.9 after)"]


def test_report_renders_the_fixed_result():
    result = _result(ratio_25m=1.6)
    result["targets"] = bench.targets(result)
    text = bench.report_markdown(result)
    assert "busy machine" not in text
    assert "Reproduce: `make bench-spark` (that is, `python benchmarks/spark.py" in text
    assert (
        "| 25M: Spark local[2] total time <= 1.5x pandas' | 1.60x (96.0 s vs 60.0 s) | **no** |"
        in text
    )
    assert "| **ingest + validate + preprocess** | **60.0** | **96.0** | **1.60x** |" in text
    assert "| spark | ingest | Spark driver JVM (local[N]: executors inside) | 6.000 |" in text
    assert "**pandas at 100M**: ingest exited with 1 after 2.5 s" in text
    assert "| ingest | 2.5 (stopped) | 400.0 |" in text  # the stage where pandas stopped
    assert "| validate | n/a | 400.0 | n/a |" in text  # pandas never reached it
    assert "| ratings_per_second | 250000.0 |" in text and "| loss | [7.1] |" in text
    absolute = re.compile(r"""(?:^|[\s"'`(=,\[])(/(?:[\w.-]+/)+[\w.-]*)""")
    assert absolute.findall(text) == []  # the same rule as test_no_machine_paths.py
    busy = copy.deepcopy(result)
    busy["sizes"]["100m"]["runs"]["pandas"]["load_after"] = [3.2, 2.0, 1.0]
    assert "**Ran on a busy machine: 1-minute load above 1.5 around 100M pandas" in (
        bench.report_markdown(busy)
    )


def test_command_lines():
    args = argparse.Namespace(
        sizes="25m,100m",
        master="local[2]",
        probe_timeout=3600.0,
        train_epoch=False,
        engines="pandas,spark",
        merge=None,
        out="reports/bench_spark.md",
        json="reports/bench_spark.json",
    )
    assert bench.make_command(args) == "make bench-spark"
    assert bench.command_line(args) == (
        "python benchmarks/spark.py --sizes 25m,100m "
        "--out reports/bench_spark.md --json reports/bench_spark.json"
    )
    args.sizes, args.train_epoch = "1m", True
    assert bench.make_command(args) == "make bench-spark SPARK_SIZES=1m SPARK_TRAIN_EPOCH=1"
    args.probe_timeout = 60.0
    assert bench.make_command(args) is None
    assert "--probe-timeout 60 --train-epoch" in bench.command_line(args)
    args.probe_timeout, args.engines, args.merge = 3600.0, "pandas", "reports/bench_spark.json"
    assert bench.make_command(args) is None
    assert "--engines pandas --merge reports/bench_spark.json" in bench.command_line(args)
