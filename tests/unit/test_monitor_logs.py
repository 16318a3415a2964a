"""The inference-log reader (``recommender.monitoring.logs``): the contract's columns, the window,
rotated files, and lines it must skip and count without ever failing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from monitor_support import record, write_log

from recommender.core.config import MonitorConfig
from recommender.monitoring import CONTRACT, ENDPOINTS, LogStats, read_log
from recommender.monitoring.logs import COUNT, scan_log
from recommender.monitoring.window import resolve_window

ROOT = Path(__file__).resolve().parents[2]


def test_every_endpoint_has_the_contracts_columns() -> None:
    common = ["x_request_id", "time", "latency_ms", "model_name", "model_version"]
    assert ENDPOINTS == ("recommend", "similar_items", "predict", "feedback")
    assert list(CONTRACT["recommend"]) == common + [
        "user_id", "k", "exclude_rated", "genres", "items", "scores", "cold_start"
    ]  # fmt: skip
    assert list(CONTRACT["similar_items"]) == common + [
        "item_id", "k", "items", "scores", "unknown_item"
    ]  # fmt: skip
    assert list(CONTRACT["predict"]) == common + [
        "user_ids", "item_ids", "scores", "unknown_users", "unknown_items"
    ]  # fmt: skip
    assert list(CONTRACT["feedback"]) == common + [
        "user_id", "item_id", "rating", "event", "event_time", "served_request_id"
    ]  # fmt: skip


def test_an_empty_or_missing_log_is_an_empty_frame_with_the_columns(tmp_path: Path) -> None:
    (tmp_path / "feedback" / "data").mkdir(parents=True)  # the folder, no file yet
    for log_dir in (tmp_path, tmp_path / "nowhere"):
        for endpoint in ENDPOINTS:
            frame, stats = read_log(log_dir, endpoint)
            assert list(frame.columns) == list(CONTRACT[endpoint])
            assert len(frame) == 0
            assert stats == LogStats(endpoint)
    frame, _ = read_log(tmp_path, "feedback")
    assert frame["time"].dtype == np.float64 and frame["rating"].dtype == np.float64


def test_unknown_endpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown endpoint 'recomend'"):
        read_log(tmp_path, "recomend")


def test_records_come_back_with_their_types(tmp_path: Path) -> None:
    write_log(
        tmp_path,
        "feedback",
        [
            record("feedback", 100.0, user_id=7, item_id=42, rating=4, event="rate"),
            record(
                "feedback",
                101.5,
                user_id=8,
                item_id=43,
                rating=None,
                event="click",
                event_time=99.0,
                served_request_id="abc",
            ),  # fmt: skip
        ],
    )
    write_log(
        tmp_path,
        "recommend",
        [record("recommend", 100.0, user_id=7, items=[3, 1, 2], genres=["Drama"])],
    )
    fb, stats = read_log(tmp_path, "feedback")
    assert stats.records == 2 and stats.malformed == 0 and stats.files == 1
    assert fb["user_id"].tolist() == [7, 8] and fb["user_id"].dtype == np.int64
    assert fb["rating"].iloc[0] == 4.0 and np.isnan(fb["rating"].iloc[1])
    assert fb["event"].tolist() == ["rate", "click"]
    assert fb["event_time"].tolist() == [100.0, 99.0]
    assert pd.isna(fb["served_request_id"].iloc[0]) and fb["served_request_id"].iloc[1] == "abc"
    rec, _ = read_log(tmp_path, "recommend")
    assert rec["items"].iloc[0] == [3, 1, 2] and rec["genres"].iloc[0] == ["Drama"]
    assert rec["cold_start"].dtype == bool and rec["k"].iloc[0] == 10


def test_text_ids_stay_text(tmp_path: Path) -> None:
    write_log(tmp_path, "feedback", [record("feedback", 1.0, user_id="u1", item_id="i9")])
    frame, _ = read_log(tmp_path, "feedback")
    assert frame["user_id"].tolist() == ["u1"] and frame["item_id"].tolist() == ["i9"]


def test_malformed_and_truncated_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    good = [record("feedback", float(t), user_id=t, rating=3.0) for t in range(1, 4)]
    bad_lines = [
        "not json at all",
        json.dumps([1, 2, 3]),  # JSON, not an object
        json.dumps({**good[0], "rating": "five"}),  # a rating of the wrong type
        json.dumps({k: v for k, v in good[0].items() if k != "event"}),  # a column missing
        json.dumps({**good[0], "time": "yesterday"}),
        json.dumps({**good[0], "user_id": 1.5}),  # an id that is neither int nor str
        json.dumps({**good[0], "rating": 10**400}),  # a number no float holds
        "\xff\xfe garbage bytes",
    ]
    path = write_log(tmp_path, "feedback", good[:2])
    with path.open("a") as f:
        f.write("\n".join(bad_lines) + "\n\n")  # and a blank line, which is not a record
    # The server was killed mid-write: a last line with no newline.
    write_log(tmp_path, "feedback", good[2:], tail=json.dumps(good[0])[:40])

    frame, stats = read_log(tmp_path, "feedback")
    assert frame["user_id"].tolist() == [1, 2, 3]
    assert stats.malformed == len(bad_lines) + 1
    assert stats.truncated == 1
    assert stats.lines == 3 + len(bad_lines) + 1
    assert stats.records == 3
    # Each example names the file and line, and what is wrong.
    assert stats.examples[0] == f"{path}:3: not JSON (Expecting value: line 1 column 1 (char 0))"
    assert f"{path}:5: column 'rating': expected a number or null, got 'five'" in stats.examples
    assert f"{path}:6: no column 'event'" in stats.examples
    assert len(stats.examples) == 5


def test_rotated_files_and_workers_are_all_read(tmp_path: Path) -> None:
    write_log(tmp_path, "recommend", [record("recommend", 10.0, user_id=1)], rotated="2026-12-05")
    write_log(tmp_path, "recommend", [record("recommend", 20.0, user_id=2)], rotated="2026-12-06")
    write_log(tmp_path, "recommend", [record("recommend", 30.0, user_id=3)])
    write_log(tmp_path, "recommend", [record("recommend", 25.0, user_id=4)], worker=1)
    # Not data files: the schema log, and a stray file.
    (tmp_path / "recommend" / "data" / "notes.txt").write_text("hello\n")
    frame, stats = read_log(tmp_path, "recommend")
    assert stats.files == 4
    assert sorted(frame["user_id"]) == [1, 2, 3, 4]


def test_the_window_is_since_inclusive_until_exclusive(tmp_path: Path) -> None:
    write_log(tmp_path, "feedback", [record("feedback", t, user_id=int(t)) for t in range(10)])
    frame, stats = read_log(tmp_path, "feedback", since=3.0, until=7.0)
    assert frame["user_id"].tolist() == [3, 4, 5, 6]
    assert (stats.records, stats.outside_window, stats.malformed) == (4, 6, 0)
    frame, _ = read_log(tmp_path, "feedback", since=8)
    assert frame["user_id"].tolist() == [8, 9]
    frame, _ = read_log(tmp_path, "feedback", until=2)
    assert frame["user_id"].tolist() == [0, 1]


def test_a_non_finite_time_is_malformed_not_outside(tmp_path: Path) -> None:
    path = write_log(tmp_path, "feedback", [record("feedback", 5.0)])
    with path.open("a") as f:
        f.write(json.dumps(record("feedback", 1.0)).replace('"time": 1.0', '"time": NaN') + "\n")
        f.write(json.dumps(record("feedback", 1.0)).replace('"time": 1.0', '"time": Infinity'))
    _, stats = read_log(tmp_path, "feedback", since=0, until=10)
    assert (stats.records, stats.malformed, stats.outside_window) == (1, 2, 0)


def test_scan_keeps_only_the_asked_columns_as_arrays(tmp_path: Path) -> None:
    write_log(
        tmp_path,
        "predict",
        [record("predict", 1.0, user_ids=[1, 2, 3], item_ids=[4, 5, 6], scores=[1.0, 2.0, 3.0])],
    )
    columns, stats = scan_log(tmp_path, "predict", fields={"time": "float", "user_ids": COUNT})
    assert set(columns) == {"time", "user_ids"}
    assert columns["user_ids"].array().tolist() == [3]
    with pytest.raises(ValueError, match="no column"):
        scan_log(tmp_path, "predict", fields=["user_id"])


def test_monitor_defaults_mirror_params_yaml() -> None:
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["monitor"]
    assert MonitorConfig.model_validate(section) == MonitorConfig()


def test_the_window_ends_at_until_and_spans_the_hours() -> None:
    window = resolve_window("2026-12-07T12:00", 24.0, now=0.0)
    assert window.until == pd.Timestamp("2026-12-07T12:00", tz="UTC").timestamp()
    assert window.since == window.until - 86_400
    assert resolve_window(None, None, now=123.0).since is None
    assert resolve_window(None, 1.0, now=7200.0).to_dict()["since"] == "1970-01-01T01:00:00Z"
