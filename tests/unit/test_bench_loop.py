"""benchmarks/loop.py's pure parts: the three-way cut by time, sessions, the online NDCG, and the
report on made-up numbers (nothing is served or trained here; tests/e2e/test_loop.py runs the
loop itself)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def _loop():
    spec = importlib.util.spec_from_file_location("bench_loop", ROOT / "benchmarks" / "loop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


loop = _loop()


def test_the_cut_keeps_time_order_and_the_shares() -> None:
    ratings = pd.DataFrame(
        {"user_id": 1, "item_id": range(100), "rating": 4.0, "timestamp": range(100, 0, -1)}
    )
    base, a, b = loop.cut(ratings.sort_values("timestamp").reset_index(drop=True))
    assert (len(base), len(a), len(b)) == (80, 10, 10)
    assert base["timestamp"].max() < a["timestamp"].min() <= a["timestamp"].max()
    assert a["timestamp"].max() < b["timestamp"].min()


def test_a_gap_over_an_hour_starts_a_new_session_in_order_of_first_rating() -> None:
    gap = loop.SESSION_GAP_S
    window = pd.DataFrame(
        {
            "user_id": [7, 7, 7, 3, 3],
            "item_id": [1, 2, 3, 4, 5],
            "rating": [5.0, 2.0, 4.0, 4.0, 1.0],
            "timestamp": [0, gap, 2 * gap + 1, 10, 20],
        }
    )
    sessions = loop.sessions(window)
    assert [(s.user, s.items) for s in sessions] == [(7, [1, 2]), (3, [4, 5]), (7, [3])]
    assert sessions[0].positives == {1} and sessions[2].positives == {3}


def test_ndcg_of_a_served_list_by_hand() -> None:
    # Relevant items 5 and 9; served at ranks 2 and 4 (1-based): DCG = 1/log2(3) + 1/log2(5).
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert math.isclose(loop.ndcg([1, 5, 2, 9], {5, 9}), dcg / ideal)
    assert loop.ndcg([1, 2], {5}) == 0.0


def test_the_report_names_the_gate_decision_and_both_models_on_window_b() -> None:
    online = {"judged_lists": 10, "hit_rate@10": 0.5, "ndcg@10": 0.2, "cold_start_lists": 1}
    model = {
        "offline": {"rmse": 1.0, "ndcg@10": 0.2, "popularity_ndcg@10": 0.1},
        "window_A": {**online, "feedback_sent": 30, "error_count": 0},
        "window_B": {**online, "how": "served"},
        "promotion": {"decision": "rejected", "reason": "not better"},
        "feedback": {"ratings": 30, "files": 1, "malformed_lines": 0},
    }
    result = {
        "rows": {"base": 80, "A": 10, "B": 10},
        "sessions": {"A": 3, "B": 3},
        "load_start": [2.0, 1.0, 1.0],
        "load_end": [0.5, 0.5, 0.5],
        "v1": model,
        "v2": {**model, "window_B": {**online, "ndcg@10": 0.3, "how": "in process"}},
        "promoted": False,
        "monitor": {"retrain": True, "reason": "enough feedback"},
        "steps": {"v1: dvc repro": 60.0},
    }
    text = loop.report_markdown(result, "python benchmarks/loop.py ...")
    assert "decision **rejected** (v1 stays champion; no new Bento)" in text
    assert "| v2 | 10 | 0.5000 | 0.3000 | 1 | in process |" in text
    assert "busy" in text  # the load at the start was above 1.5
