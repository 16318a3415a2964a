"""Logged feedback becomes training data: the feedback stage's snapshot and ingest's merge.

The log is written in the service's format (one JSON line a record, BentoML's monitor layout),
read by the real reader; the merged dataset goes through the real Great Expectations suites.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support import ROOT, TINY_SYNTHETIC

from recommender.core.config import parse_params
from recommender.core.errors import DataError
from recommender.core.schema import ITEM, RATING, TIMESTAMP, USER
from recommender.data import load_dataset
from recommender.data.feedback import RATINGS_FILE, read_snapshot, write_snapshot
from recommender.monitoring.feedback import collect_feedback
from recommender.validation.run import validate_dataset

T0 = 1_600_000_000.0


def feedback_record(user: object, item: object, rating: float | None, when: float, **extra):
    return {
        "x_request_id": f"r{user}-{item}-{when}",
        "time": when,
        "latency_ms": 0.4,
        "model_name": "recommender",
        "model_version": "1",
        "user_id": user,
        "item_id": item,
        "rating": rating,
        "event": extra.get("event", "rate" if rating is not None else "click"),
        "event_time": extra.get("event_time", when),
        "served_request_id": None,
        "timestamp": "2020-09-13T12:26:40",
        "request_id": "1",
        "trace_id": "0",
    }


def write_log(log_dir: Path, records: list[dict], worker: int = 0, tail: str = "") -> Path:
    data = log_dir / "feedback" / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"data.{worker}.log"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def test_snapshot_keeps_the_logged_ratings_and_is_stable(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(
        logs,
        [
            feedback_record(7, 3, 4.0, T0 + 20),
            feedback_record(2, 9, None, T0 + 10),  # a click: counted, not a rating
            feedback_record(2, 5, 2.0, T0 + 5, event_time=T0 - 100.7),  # the client's time
        ],
        tail='{"x_request_id": "cut mid-wri',  # a server killed while writing
    )
    write_log(logs, [feedback_record(1, 3, 5.0, T0 + 20)], worker=1)

    ratings, summary = collect_feedback(logs)

    assert ratings.to_dict("list") == {
        USER: [2, 1, 7],
        ITEM: [5, 3, 3],
        RATING: [2.0, 5.0, 4.0],
        TIMESTAMP: [int(T0) - 101, int(T0) + 20, int(T0) + 20],
    }
    assert summary["ratings"] == 3
    assert summary["events_without_rating"] == 1
    assert summary["malformed_lines"] == 1
    write_snapshot(ratings, summary, tmp_path / "a")
    write_snapshot(*collect_feedback(logs), tmp_path / "b")
    assert (tmp_path / "a" / RATINGS_FILE).read_bytes() == (
        tmp_path / "b" / RATINGS_FILE
    ).read_bytes()


def test_no_log_yet_is_an_empty_snapshot(tmp_path: Path) -> None:
    ratings, summary = collect_feedback(tmp_path / "never-served")
    write_snapshot(ratings, summary, tmp_path / "out")
    assert read_snapshot(tmp_path / "out", "int").empty
    assert summary["ratings"] == 0


def test_ingest_merges_feedback_under_the_duplicate_policy(tmp_path: Path) -> None:
    params = parse_params(
        {"synthetic": TINY_SYNTHETIC, "ingest": {"duplicates": "keep_last"}, "seed": 3}
    )
    base = load_dataset(params)
    known = base.ratings.iloc[0]
    new_item = int(base.items[ITEM].max()) + 1
    new_user = int(base.ratings[USER].max()) + 1
    rerated = 1.0 if known[RATING] != 1.0 else 5.0
    logs = tmp_path / "logs"
    write_log(
        logs,
        [
            feedback_record(int(known[USER]), int(known[ITEM]), rerated, known[TIMESTAMP] + 60.0),
            feedback_record(new_user, new_item, 4.0, T0),
            feedback_record(new_user, int(known[ITEM]), 3.0, T0 + 1),
        ],
    )
    write_snapshot(*collect_feedback(logs), tmp_path / "feedback")

    merged = load_dataset(params, feedback=tmp_path / "feedback")

    assert len(merged.ratings) == len(base.ratings) + 2  # the re-rating replaced its pair
    pair = merged.ratings[
        (merged.ratings[USER] == known[USER]) & (merged.ratings[ITEM] == known[ITEM])
    ]
    assert pair[RATING].tolist() == [rerated]
    assert merged.ratings[USER].dtype == base.ratings[USER].dtype == "int64"
    assert new_item in set(merged.items[ITEM])
    assert merged.info.extra["feedback_ratings"] == 3
    report = validate_dataset(merged, params.validate_)
    assert report.success, report.format_failures()


def test_duplicates_error_lets_validate_name_the_rerated_pair(tmp_path: Path) -> None:
    params = parse_params({"synthetic": TINY_SYNTHETIC, "seed": 3})
    base = load_dataset(params)
    known = base.ratings.iloc[0]
    write_log(
        tmp_path / "logs",
        [feedback_record(int(known[USER]), int(known[ITEM]), 1.0, known[TIMESTAMP] + 60.0)],
    )
    write_snapshot(*collect_feedback(tmp_path / "logs"), tmp_path / "feedback")
    merged = load_dataset(params, feedback=tmp_path / "feedback")
    report = validate_dataset(merged, params.validate_)
    assert not report.success
    failures = report.format_failures()
    assert "unique" in failures and str(int(known[USER])) in failures


def test_a_text_id_in_an_int_dataset_is_refused_by_file_row_and_column(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    pd.DataFrame(
        {USER: ["1", "u-2"], ITEM: ["3", "4"], RATING: [4.0, 5.0], TIMESTAMP: [int(T0)] * 2}
    ).to_csv(folder / RATINGS_FILE, index=False)
    with pytest.raises(DataError) as caught:
        read_snapshot(folder, "int")
    message = str(caught.value)
    assert RATINGS_FILE in message and "u-2" in message and USER in message
    assert "line 3" in message or "row 3" in message


def test_the_stage_writes_the_snapshot_from_the_params_log_dir(tmp_path: Path) -> None:
    logs = tmp_path / "inference"
    write_log(logs, [feedback_record(4, 2, 5.0, T0)])
    params = tmp_path / "params.yaml"
    params.write_text(f"serve:\n  log_dir: {logs}\n")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipeline" / "feedback.py"),
            "--params",
            str(params),
            "--out",
            str(tmp_path / "out"),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ratings"] == 1 and summary["log_dir"] == str(logs)
    assert read_snapshot(tmp_path / "out", "int")[USER].tolist() == [4]


def test_the_stage_leaves_out_ratings_validate_would_refuse_for_their_time(tmp_path: Path) -> None:
    """A client's clock at 0 or a week ahead would stop the next retrain at validate (and every
    good rating of the snapshot with it): the stage leaves those rows out, counts and warns."""
    import time

    logs = tmp_path / "inference"
    week_ahead = time.time() + 7 * 86_400
    write_log(
        logs,
        [
            feedback_record(4, 2, 5.0, T0),
            feedback_record(5, 2, 4.0, T0, event_time=0.0),  # 1970, before timestamp_min
            feedback_record(6, 2, 3.0, T0, event_time=week_ahead),  # past now + 1 day
        ],
    )
    params = tmp_path / "params.yaml"
    params.write_text(f"serve:\n  log_dir: {logs}\nvalidate:\n  timestamp_min: '1995-01-01'\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "pipeline" / "feedback.py"), "--params", str(params)]
        + ["--out", str(tmp_path / "out")],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["ratings"], summary["out_of_time_range"]) == (1, 2)
    assert read_snapshot(tmp_path / "out", "int")[USER].tolist() == [4]
    assert "2 feedback ratings left out" in done.stderr
    assert "validate.timestamp_min" in done.stderr
