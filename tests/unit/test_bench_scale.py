"""benchmarks/scale.py's pure parts: sizes, the params per size, the stage order, throughput,
the ratios and the targets table (on made-up numbers; nothing runs a stage)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from recommender.core.config import parse_params

ROOT = Path(__file__).resolve().parents[2]


def _load_scale():
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    heavy = {"tensorflow", "keras", "mlflow", "matplotlib", "pyarrow"} & (set(sys.modules) - before)
    assert not heavy, f"importing benchmarks/scale.py loads {heavy}"
    return module


scale = _load_scale()
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_parse_sizes():
    assert [s.name for s in scale.parse_sizes("1m,100k")] == ["100k", "1m"]  # smallest first
    assert [s.name for s in scale.parse_sizes(" 10M ")] == ["10m"]
    assert [s.name for s in scale.parse_sizes("100k", with_25m=True)] == ["100k", "25m"]
    assert [s.name for s in scale.parse_sizes("25m", with_25m=True)] == ["25m"]
    with pytest.raises(ValueError, match="--with-25m"):
        scale.parse_sizes("1m,25m")
    with pytest.raises(ValueError, match="unknown size"):
        scale.parse_sizes("1m,2m")
    with pytest.raises(ValueError, match="no sizes"):
        scale.parse_sizes(",")


def test_shapes_are_the_real_sets():
    one, ten, big = scale.SIZES["1m"], scale.SIZES["10m"], scale.SIZES["25m"]
    assert (one.n_users, one.n_items) == (6_040, 3_706)
    assert (ten.n_users, ten.n_items) == (69_878, 10_677)
    assert (big.n_users, big.n_items) == (162_541, 59_047)
    assert scale.SIZES["100k"].n_ratings is None  # params.yaml's own synthetic section


def test_scale_params_changes_only_the_data_shape():
    raw = scale.scale_params(PARAMS, scale.SIZES["10m"])
    assert raw["synthetic"] == {
        **PARAMS["synthetic"],
        "n_users": 69_878,
        "n_items": 10_677,
        "n_ratings": 10_000_054,
    }
    assert raw["data"]["source"] == "synthetic"
    for section in PARAMS:
        if section not in ("synthetic", "data"):
            assert raw[section] == PARAMS[section], section
    assert PARAMS["synthetic"]["n_ratings"] == 100_000  # the base is not modified
    parse_params(raw)  # what the stages' strict loader accepts
    assert scale.scale_params(PARAMS, scale.SIZES["100k"])["synthetic"] == PARAMS["synthetic"]


def test_scale_params_model_and_epoch_cap():
    raw = scale.scale_params(PARAMS, scale.SIZES["1m"], model="biased_mf", epochs=3)
    assert raw["train"]["model"] == "biased_mf" and raw["train"]["epochs"] == 3
    assert raw["train"]["biased_mf"]["epochs"] == 3  # the family's own count would win
    parse_params(raw)
    default = scale.scale_params(PARAMS, scale.SIZES["1m"], epochs=2)
    family = PARAMS["train"]["model"]
    assert default["train"][family]["epochs"] == 2
    parse_params(default)


def test_stage_order_follows_dvc_yaml():
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    order = scale.stage_order(dvc_yaml)
    names = [name for name, _ in order]
    assert names == list(dvc_yaml["stages"])
    assert names[0] == "check_params" and names[-1] == "package"
    assert dict(order)["train"].startswith("python pipeline/train.py")

    swapped = {"stages": dict(reversed(list(dvc_yaml["stages"].items())))}
    with pytest.raises(ValueError, match="written by a later"):
        scale.stage_order(swapped)


def test_throughput_leaves_out_the_first_epoch():
    assert scale.throughput(1000, [9.0, 2.0, 2.0]) == pytest.approx(1000 * 2 / 4.0)
    assert scale.throughput(1000, [9.0]) is None
    assert scale.throughput(1000, []) is None
    assert scale.epoch_seconds_from_timestamps([1000, 3500, 4500]) == [None, 2.5, 1.0]


def _stages(seconds: float, gb: float) -> dict[str, Any]:
    names = ["ingest", "validate", "train"]
    return {
        n: {
            "wall_s": seconds * (i + 1),
            "cpu_s": seconds,
            "peak_gb": gb * (i + 1),
            "tree_peak_gb": gb * (i + 1),
            "returncode": 0,
            "dvc": {"wall_s": 1.0, "cpu_s": 1.0, "peak_gb": 0.1, "tree_peak_gb": 0.1},
        }
        for i, n in enumerate(names)
    }


def _size(n_ratings: int, seconds: float, gb: float, ours: float, surprise: float) -> dict:
    stages = _stages(seconds, gb)
    return {
        "label": "fake",
        "complete": True,
        "data": {"n_users": 10, "n_items": 20, "n_ratings": n_ratings, "train_rows": n_ratings},
        "stages": stages,
        "total_s": sum(m["wall_s"] + m["dvc"]["wall_s"] for m in stages.values()),
        "cpu_s": 1.0,
        "train": {
            "model": "two_tower",
            "epochs_run": 5,
            "best_epoch": 3,
            "fit_seconds": 10.0,
            "refit_seconds": 5.0,
            "refit_epochs": 3,
            "train_rows": n_ratings,
            "refit_rows": n_ratings,
            "throughput": ours,
            "refit_throughput": ours,
            "test_rmse": 0.9,
            "test_ndcg": 0.3,
        },
        "surprise": {
            "factors": 64,
            "epochs": 20,
            "train_rows": n_ratings,
            "fit_seconds": 20.0,
            "throughput": surprise,
            "rmse": 0.9,
            "wall_s": 30.0,
            "peak_gb": 1.0,
        },
    }


def _result(**sizes: dict) -> dict[str, Any]:
    return {
        "date": "2026-12-01 12:00",
        "commit": "abc1234",
        "run": {
            "command": "python benchmarks/scale.py --sizes 1m,10m",
            "make": "make bench-scale SCALE_SIZES=1m,10m",
            "model": "two_tower",
            "model_source": "params.yaml's train.model",
            "epochs_cap": None,
            "epochs_source": "params.yaml's",
            "throughput_source": "fake",
            "plot": "reports/bench_scale.png",
        },
        "machine": {
            "cpus": 2,
            "ram_gb": 23.4,
            "available_gb": 20.0,
            "load_before": [1.0],
            "load_after": [2.0],
        },
        "versions": {"python": "3.11"},
        "sizes": sizes,
    }


def test_targets_and_ratios_from_made_up_numbers():
    # 1M: stages 10/20/30 s; 10M: 100/200/400 s (train grows 13.3x), 1/2/3 GB (all <= 4 GB).
    small = _size(1_000_000, 10.0, 0.1, ours=2e6, surprise=5e6)
    large = _size(10_000_000, 100.0, 1.0, ours=1e6, surprise=5e6)
    large["stages"]["train"]["wall_s"] = 400.0
    large["total_s"] = 100 + 200 + 400 + 3.0
    result = _result(**{"1m": small, "10m": large})

    ratios = scale.growth(result)
    assert ratios["ingest"] == pytest.approx(10.0)
    assert ratios["train"] == pytest.approx(400 / 30)
    assert ratios["total"] == pytest.approx(703 / 63)

    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows["every stage's peak RSS <= 4 GB at 10M"]["met"] is True
    assert "train 3.00 GB" in rows["every stage's peak RSS <= 4 GB at 10M"]["measured"]
    assert rows["every stage's peak RSS <= 8 GB at 25M"]["met"] is None  # not run
    assert rows["whole pipeline <= 10 min at 10M"]["met"] is False  # 703 s
    growth_row = rows["time(10M) / time(1M) <= 12 for every stage"]
    assert growth_row["met"] is False and "train 13.3x" in growth_row["measured"]
    assert rows["throughput >= 0.5x Surprise SVD's at 1M"]["met"] is False  # 0.4x
    assert rows["throughput >= 0.5x Surprise SVD's at 10M"]["met"] is False  # 0.2x
    train_row = rows["train stage <= 5x Surprise SVD's 20-epoch fit at 10M"]
    assert train_row["met"] is False and train_row["measured"].startswith("20.0x")

    result["targets"] = scale.targets(result)
    text = scale.report_markdown(result)
    assert "`make bench-scale SCALE_SIZES=1m,10m`" in text
    assert "| train | 30.0 | 400.0 | 13.3x | 10.0x |" in text
    assert "**no**" in text


def test_targets_on_a_small_run_say_not_run():
    result = _result(**{"100k": _size(100_000, 1.0, 0.1, ours=3e6, surprise=2e6)})
    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows["throughput >= 0.5x Surprise SVD's at 100K"]["met"] is True
    for name in (
        "every stage's peak RSS <= 4 GB at 10M",
        "whole pipeline <= 10 min at 10M",
        "time(10M) / time(1M) <= 12 for every stage",
        "throughput >= 0.5x Surprise SVD's at 10M",
        "train stage <= 5x Surprise SVD's 20-epoch fit at 10M",
    ):
        assert rows[name]["met"] is None, name
    assert scale.growth(result) == {}
    result["targets"] = scale.targets(result)
    assert "## Growth" not in scale.report_markdown(result)


def test_the_report_names_the_command_that_reproduces_it():
    parser_defaults = {
        "out": "reports/bench_scale.md",
        "json": "reports/bench_scale.json",
        "plot": "reports/bench_scale.png",
        "with_25m": False,
        "model": None,
        "epochs": None,
        "no_surprise": False,
    }
    args = argparse.Namespace(sizes="100k,1m,10m", **parser_defaults)
    assert scale.make_command(args) == "make bench-scale"
    assert "--surprise-python .venv-surprise/bin/python" in scale.command_line(args)
    args = argparse.Namespace(**{**parser_defaults, "sizes": "100k,1m", "with_25m": True})
    assert scale.make_command(args) == "make bench-scale SCALE_SIZES=100k,1m SCALE_25M=1"
    args = argparse.Namespace(**{**parser_defaults, "sizes": "1m", "epochs": 3})
    assert scale.make_command(args) is None  # a harness test: no make line
    assert "--epochs 3" in scale.command_line(args)
    args = argparse.Namespace(**{**parser_defaults, "sizes": "1m", "out": "/elsewhere/x.md"})
    assert "--out x.md" in scale.command_line(args)  # no machine path in a report
    args.out = str(ROOT / "reports" / "x.md")
    assert "--out reports/x.md" in scale.command_line(args)
