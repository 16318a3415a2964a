"""benchmarks/scale.py's pure parts: sizes, the params per size, the stage order, throughput,
the ratios, issue 21's targets (each can fail on its own), biased_mf's fit loop measured alone
(its target and report section; benchmarks/family_throughput.py's median), the baselines read
from evaluate's metrics, the epoch-cap flag and the busy-machine warning (on made-up numbers;
nothing runs a stage or trains a model)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import load_benchmark

from recommender.core.config import parse_params

ROOT = Path(__file__).resolve().parents[2]


HEAVY = frozenset({"tensorflow", "keras", "mlflow", "matplotlib", "pyarrow"})


scale = load_benchmark("bench_scale", "scale.py", HEAVY)
family_throughput = load_benchmark("bench_family_throughput", "family_throughput.py", HEAVY)
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


def test_family_throughput_takes_the_median_of_the_later_epochs():
    median = family_throughput.median_throughput
    assert median(1000, [9.0, 2.0, 4.0, 100.0]) == pytest.approx(1000 / 4.0)  # a slow outlier
    assert median(1000, [9.0, 2.0, 3.0]) == pytest.approx(1000 / 2.5)
    assert median(1000, [9.0]) is None  # only the traced epoch
    assert median(1000, []) is None


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


def _size(
    n_ratings: int,
    seconds: float,
    gb: float,
    ours: float,
    surprise: float,
    ndcg: float = 0.40,
    ease: float | None = 0.39,
    popularity: float = 0.30,
    alone: float | None = None,
) -> dict:
    stages = _stages(seconds, gb)
    entry = {
        "label": "fake",
        "complete": True,
        "data": {"n_users": 10, "n_items": 20, "n_ratings": n_ratings, "train_rows": n_ratings},
        "stages": stages,
        "total_s": sum(m["wall_s"] + m["dvc"]["wall_s"] for m in stages.values()),
        "cpu_s": 1.0,
        "load_before": [0.5, 0.5, 0.5],
        "load_after": [1.0, 0.8, 0.6],
        "train": {
            "model": "two_tower",
            "epochs_run": 5,
            "best_epoch": 3,
            "epochs_cap": 45,
            "fit_seconds": 10.0,
            "refit_seconds": 5.0,
            "refit_epochs": 3,
            "train_rows": n_ratings,
            "refit_rows": n_ratings,
            "throughput": ours,
            "refit_throughput": ours,
            "test_rmse": 0.9,
            "test_ndcg": ndcg,
            "popularity_ndcg": popularity,
            "ease_ndcg": ease,
            "ease_skipped": None if ease is not None else "20 items > evaluate.ease_max_items (10)",
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
    if alone is not None:  # biased_mf's fit loop alone, as family_throughput.py writes it
        entry["biased_mf"] = {
            "family": "biased_mf",
            "rows": n_ratings,
            "epochs": 4,
            "batch_size": 4096,
            "optimizer": "lazy_adam",
            "epoch_seconds": [3.0, 1.0, 1.1, 0.9],
            "median_seconds": 1.0,
            "throughput": alone,
            "load_before": [0.3, 0.4, 0.5],
            "load_after": [1.1, 0.6, 0.5],
            "wall_s": 12.0,
            "peak_gb": 0.5,
        }
    return entry


def _result(load_before: float = 0.4, load_after: float = 1.2, **sizes: dict) -> dict[str, Any]:
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
            "load_before": [load_before, 0.5, 0.5],
            "load_after": [load_after, 1.0, 0.7],
        },
        "versions": {"python": "3.11"},
        "sizes": sizes,
    }


def _passing() -> dict[str, Any]:
    """1M, 10M and 25M meeting every target: 63 s, 703 s and 3,000 s for the pipeline; at most
    3 GB (10M) and 6 GB (25M); the fit loop 0.1x and 0.09x Surprise's, 0.9x its 1M rate at 10M;
    biased_mf alone 0.25x Surprise's at 1M (and 0.18x at 10M); NDCG@10 0.40 against EASE 0.39 and
    popularity 0.30 (1.33x); EASE not run at 10M and 25M."""
    small = _size(1_000_000, 10.0, 0.1, ours=5e5, surprise=5e6, alone=1.25e6)
    large = _size(10_000_000, 100.0, 1.0, ours=4.5e5, surprise=5e6, ease=None, alone=9e5)
    large["stages"]["train"]["wall_s"] = 400.0
    large["total_s"] = 100 + 200 + 400 + 3.0
    huge = _size(25_000_000, 300.0, 2.0, ours=4e5, surprise=5e6, ease=None)
    huge["total_s"] = 3000.0
    return _result(**{"1m": small, "10m": large, "25m": huge})


#: Issue 21's targets, as the report names them.
TARGETS = {
    "pipeline_1m": "whole pipeline <= 5 min at 1M",
    "pipeline_10m": "whole pipeline <= 30 min at 10M",
    "pipeline_25m": "whole pipeline <= 2 h at 25M",
    "memory_10m": "every stage's peak RSS <= 4 GB at 10M",
    "memory_25m": "every stage's peak RSS <= 8 GB at 25M",
    "throughput_1m": "fit-loop throughput >= 0.07x Surprise SVD 64x20's at 1M",
    "throughput_10m": "fit-loop throughput >= 0.07x Surprise SVD 64x20's at 10M",
    "throughput_kept": "fit-loop throughput at 10M >= 0.8x at 1M",
    "biased_mf_1m": "biased_mf fit-loop throughput >= 0.15x Surprise SVD 64x20's at 1M",
    "ease_1m": "test NDCG@10 >= EASE's at 1M",
    "popularity_1m": "test NDCG@10 >= 1.2x popularity's at 1M",
    "popularity_10m": "test NDCG@10 >= 1.2x popularity's at 10M",
}


def test_targets_are_issue_21s_and_met_from_made_up_numbers():
    result = _passing()
    rows = {r["target"]: r for r in scale.targets(result)}
    assert set(rows) == set(TARGETS.values())
    assert all(r["met"] is True for r in rows.values()), rows
    assert rows[TARGETS["pipeline_1m"]]["measured"] == "63 s (1.1 min)"
    assert "train 3.00 GB" in rows[TARGETS["memory_10m"]]["measured"]
    assert rows[TARGETS["throughput_1m"]]["measured"].startswith("0.100x (500,000 vs 5,000,000")
    assert rows[TARGETS["throughput_kept"]]["measured"].startswith("0.90x")
    assert rows[TARGETS["biased_mf_1m"]]["measured"] == (
        "0.250x (1,250,000 vs 5,000,000 rating-epochs/s)"
    )
    assert rows[TARGETS["ease_1m"]]["measured"] == "0.4000 vs 0.3900 (1.03x)"
    assert rows[TARGETS["popularity_10m"]]["measured"] == "0.4000 vs 0.3000 (1.33x)"

    ratios = scale.growth(result)  # still reported, no longer a target
    assert ratios["ingest"] == pytest.approx(10.0)
    assert ratios["train"] == pytest.approx(400 / 30)
    assert ratios["total"] == pytest.approx(703 / 63)

    result["targets"] = scale.targets(result)
    text = scale.report_markdown(result)
    assert "`make bench-scale SCALE_SIZES=1m,10m`" in text
    assert "| train | 30.0 | 400.0 | 13.3x | 10.0x |" in text
    assert "## Targets (issue 21)" in text and "issue 13" not in text
    assert "**no**" not in text
    assert "Surprise SVD (64 factors, 20 epochs)" in text


def _set(result: dict[str, Any], size: str, *keys: str, value: Any) -> None:
    node = result["sizes"][size]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


@pytest.mark.parametrize(
    ("target", "change"),
    [
        ("pipeline_1m", ("1m", "total_s", 301.0)),
        ("pipeline_10m", ("10m", "total_s", 1801.0)),
        ("pipeline_25m", ("25m", "total_s", 7201.0)),
        ("memory_10m", ("10m", "stages", "train", "tree_peak_gb", 4.1)),
        ("memory_25m", ("25m", "stages", "ingest", "peak_gb", 8.5)),
        ("throughput_1m", ("1m", "surprise", "throughput", 7.5e6)),  # 0.067x
        ("throughput_10m", ("10m", "surprise", "throughput", 6.5e6)),  # 0.069x
        ("throughput_kept", ("10m", "train", "throughput", 3.9e5)),  # 0.78x its 1M rate
        ("biased_mf_1m", ("1m", "biased_mf", "throughput", 7.4e5)),  # 0.148x
        ("ease_1m", ("1m", "train", "ease_ndcg", 0.41)),
        ("popularity_1m", ("1m", "train", "popularity_ndcg", 0.34)),  # 1.18x
        ("popularity_10m", ("10m", "train", "popularity_ndcg", 0.34)),
    ],
)
def test_each_target_can_fail_alone(target, change):
    result = _passing()
    *keys, value = change
    _set(result, *keys, value=value)
    rows = {r["target"]: r["met"] for r in scale.targets(result)}
    assert rows[TARGETS[target]] is False
    assert [t for t, met in rows.items() if met is not True] == [TARGETS[target]]
    result["targets"] = scale.targets(result)
    assert f"| {TARGETS[target]} | " in scale.report_markdown(result)


def test_a_baseline_that_did_not_run_is_not_judged():
    result = _passing()
    _set(result, "1m", "train", "ease_ndcg", value=None)
    _set(result, "1m", "train", "ease_skipped", value="3706 items > evaluate.ease_max_items (100)")
    rows = {r["target"]: r for r in scale.targets(result)}
    row = rows[TARGETS["ease_1m"]]
    assert row["met"] is None
    assert row["measured"] == "EASE not run (3706 items > evaluate.ease_max_items (100))"
    result["sizes"]["1m"]["complete"] = False  # evaluate never ran: nothing to compare
    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows[TARGETS["popularity_1m"]] == {
        "target": TARGETS["popularity_1m"],
        "measured": "not run",
        "met": None,
    }


def test_quality_reads_evaluates_metrics_json():
    metrics = {
        "model": "two_tower",
        "test": {"rmse": 0.76, "mae": 0.61, "rows": 20000},
        "ranking": {"ndcg@10": 0.4025, "hit_rate@10": 0.9},
        "baselines": {
            "bias": {"rmse": 0.93},
            "popularity": {"ndcg@10": 0.3075, "hit_rate@10": 0.86},
            "ease": {"ndcg@10": 0.3884, "lambda": 300.0, "chosen_on": "validation split"},
        },
    }
    assert scale.quality(metrics) == {
        "test_rmse": 0.76,
        "test_ndcg": 0.4025,
        "popularity_ndcg": 0.3075,
        "ease_ndcg": 0.3884,
        "ease_skipped": None,
    }
    metrics["baselines"]["ease"] = {"skipped": "10677 items > evaluate.ease_max_items (10000)"}
    got = scale.quality(metrics)
    assert got["ease_ndcg"] is None and got["ease_skipped"].startswith("10677 items")
    del metrics["baselines"]
    assert scale.quality(metrics)["popularity_ndcg"] is None


def test_a_fit_that_ran_to_its_cap_is_flagged():
    result = _passing()
    assert scale.stopped_at_cap(result["sizes"]["1m"]["train"]) is False  # 5 of 45 epochs
    assert scale.stopped_at_cap({"epochs_run": 45}) is None  # the cap unknown
    _set(result, "1m", "train", "epochs_run", value=45)
    _set(result, "1m", "train", "best_epoch", value=38)
    assert scale.stopped_at_cap(result["sizes"]["1m"]["train"]) is True
    rows = {r["target"]: r for r in scale.targets(result)}
    pipeline = rows[TARGETS["pipeline_1m"]]["measured"]
    assert "the fit stopped at its 45-epoch cap, not by early stopping" in pipeline
    assert "cap" not in rows[TARGETS["pipeline_10m"]]["measured"]
    result["targets"] = scale.targets(result)
    text = scale.report_markdown(result)
    assert "fit 45 epochs (best 38; **stopped at the cap** of 45, not by early stopping)" in text
    assert "fit 5 epochs (best 3; stopped early, below the cap of 45)" in text


def test_the_report_warns_when_the_machine_was_busy():
    quiet = _passing()
    assert scale.busy_warning(quiet["machine"]) is None  # 0.4 at the start, 1.2 at the end
    quiet["targets"] = scale.targets(quiet)
    assert "busy" not in scale.report_markdown(quiet)
    for before, after in ((1.6, 0.3), (0.3, 1.6), (2.04, 3.0)):
        result = {**_passing(), "machine": _result(before, after)["machine"]}
        warning = scale.busy_warning(result["machine"])
        assert warning is not None and warning.count("\n") == 0
        assert f"load {before:.1f} at the start, {after:.1f} at the end" in warning
        assert "timings overstate the cost" in warning
        result["targets"] = scale.targets(result)
        text = scale.report_markdown(result)
        assert text.index(warning) < text.index("How it is measured")  # near the top
    assert scale.busy_warning({"load_before": [], "load_after": [1.5]}) is None  # not above


def test_targets_on_a_small_run_say_not_run():
    result = _result(**{"100k": _size(100_000, 1.0, 0.1, ours=3e6, surprise=2e6)})
    rows = {r["target"]: r for r in scale.targets(result)}
    assert set(rows) == set(TARGETS.values())  # 100K is no target's size
    assert all(r["met"] is None and r["measured"] == "not run" for r in rows.values()), rows
    assert scale.growth(result) == {}
    result["targets"] = scale.targets(result)
    assert "## Growth" not in scale.report_markdown(result)


def test_throughput_without_surprise_says_so():
    result = _passing()
    del result["sizes"]["1m"]["surprise"]
    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows[TARGETS["throughput_1m"]] == {
        "target": TARGETS["throughput_1m"],
        "measured": "Surprise not run (ours 500,000)",
        "met": None,
    }
    assert rows[TARGETS["throughput_kept"]]["met"] is True  # ours alone still compares


def test_the_report_shows_biased_mf_alone_beside_surprise():
    result = _passing()
    result["targets"] = scale.targets(result)
    text = scale.report_markdown(result)
    section = text[text.index("### `biased_mf` alone") : text.index("## Targets")]
    assert text.index("## Side by side") < text.index("### `biased_mf` alone")
    assert (
        "`python benchmarks/family_throughput.py --processed data/processed --params params.yaml "
        "--family biased_mf --epochs 4`" in section
    )
    assert "(batch 4096, lazy_adam), trained 4 epochs" in section
    assert "median of epochs 2..4" in section
    assert "| 1M | 3.00, 1.00, 1.10, 0.90 | 1,250,000 | 5,000,000 | 0.250x | 0.3, 1.1 |" in section
    assert "| 10M | 3.00, 1.00, 1.10, 0.90 | 900,000 | 5,000,000 | 0.180x | 0.3, 1.1 |" in section
    assert "| 25M |" not in section  # not measured there

    for entry in result["sizes"].values():  # --no-family-throughput
        entry.pop("biased_mf", None)
    result["targets"] = scale.targets(result)
    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows[TARGETS["biased_mf_1m"]]["measured"] == "not run"
    assert rows[TARGETS["biased_mf_1m"]]["met"] is None
    assert "`biased_mf` alone" not in scale.report_markdown(result)


def test_biased_mf_alone_without_surprise_or_failed_is_not_judged():
    result = _passing()
    del result["sizes"]["1m"]["surprise"]
    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows[TARGETS["biased_mf_1m"]] == {
        "target": TARGETS["biased_mf_1m"],
        "measured": "Surprise not run (biased_mf 1,250,000)",
        "met": None,
    }
    result = _passing()
    failure = "family_throughput.py exited with 1"
    result["sizes"]["1m"]["biased_mf"] = {"family": "biased_mf", "failure": failure}
    rows = {r["target"]: r for r in scale.targets(result)}
    assert rows[TARGETS["biased_mf_1m"]]["measured"] == f"biased_mf failed ({failure})"
    assert rows[TARGETS["biased_mf_1m"]]["met"] is None
    result["targets"] = scale.targets(result)
    text = scale.report_markdown(result)
    assert f"| 1M | failed: {failure} | n/a | 5,000,000 | n/a | |" in text
    assert "| 10M | 3.00, 1.00, 1.10, 0.90 | 900,000 |" in text  # the other size still shown


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
    args = argparse.Namespace(**{**parser_defaults, "sizes": "1m", "no_family_throughput": True})
    assert scale.make_command(args) is None  # make has no switch for it
    assert "--no-family-throughput" in scale.command_line(args)
