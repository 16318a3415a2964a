"""The monitor's figures on logs written in the contract's format: drift (PSI) against the tiny
synthetic training split, online quality against a hand computation, and the verdict."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitor_support import record, write_log
from support import tiny_params

from recommender.monitoring import drift
from recommender.monitoring.figures import load_reference, verdict
from recommender.monitoring.online import Positives, ServedLists, online_quality
from recommender.monitoring.run import compute, read_window
from recommender.monitoring.window import Window

#: 2026-11-01T00:00Z: the feedback's times (the validate suite wants them after 1995).
T0 = 1_793_491_200.0
DAY = 86_400.0
#: Feedback rows per drift trial: a few thousand, as a week of a small service.
N_FEEDBACK = 3000


def figures_for(tmp_path: Path, processed_dir: Path, records: dict[str, list], **monitor: Any):
    for endpoint, rows in records.items():
        write_log(tmp_path / "logs", endpoint, rows)
    params = tiny_params(monitor=monitor)
    window = Window(T0, T0 + 7 * DAY, 168.0)
    scans, interners = read_window(tmp_path / "logs", window, params.monitor.horizon_hours)
    result = compute(params, load_reference(processed_dir), scans, interners, window)
    result["online"][f"offline_ndcg@{params.monitor.k}"] = 0.4
    return result, params.monitor


def feedback_like_training(processed, rng: np.random.Generator, tail_share: float) -> list:
    """``N_FEEDBACK`` ratings drawn from the training rows; ``tail_share`` of them moved to an
    item of the catalog's tail (the least popular half of the trained items)."""
    train = processed.train
    rows = train.iloc[rng.integers(0, len(train), N_FEEDBACK)]
    counts = train["item_id"].value_counts()
    tail = counts.sort_values(kind="stable").index[: len(counts) // 2].to_numpy()
    items = rows["item_id"].to_numpy().copy()
    moved = rng.random(N_FEEDBACK) < tail_share
    items[moved] = rng.choice(tail, int(moved.sum()))
    times = T0 + rng.random(N_FEEDBACK) * 7 * DAY
    return [
        record("feedback", float(t), user_id=int(u), item_id=int(i), rating=float(r))
        for t, u, i, r in zip(times, rows["user_id"], items, rows["rating"], strict=True)
    ]


def drift_reasons(result: dict, cfg) -> list[str]:
    retrain, reasons, _ = verdict(result["drift"], result["online"], cfg)
    assert retrain == bool(reasons)
    return [r["metric"] for r in reasons if r["kind"] == "drift"]


def test_half_the_traffic_moved_to_the_tail_is_flagged_in_every_seed(
    tmp_path: Path, processed_dir: Path, processed
) -> None:
    for seed in range(10):
        records = {"feedback": feedback_like_training(processed, np.random.default_rng(seed), 0.5)}
        result, cfg = figures_for(tmp_path / str(seed), processed_dir, records, min_feedback=10**6)
        assert result["drift"]["feedback_ratings"] == N_FEEDBACK
        assert "item_popularity_psi" in drift_reasons(result, cfg), (seed, result["drift"])
        assert result["drift"]["item_popularity"]["psi"] > 0.2


def test_traffic_drawn_from_training_raises_no_drift_alarm(
    tmp_path: Path, processed_dir: Path, processed
) -> None:
    alarms = []
    for seed in range(10):
        records = {"feedback": feedback_like_training(processed, np.random.default_rng(seed), 0.0)}
        result, cfg = figures_for(tmp_path / str(seed), processed_dir, records, min_feedback=10**6)
        retrain, _, reason = verdict(result["drift"], result["online"], cfg)
        alarms.append(drift_reasons(result, cfg))
        assert result["drift"]["new_items_share"] == 0 and result["drift"]["new_users_share"] == 0
        if not retrain:
            assert reason.startswith("no drift (largest PSI")
    assert sum(bool(a) for a in alarms) <= 1, alarms


def test_psi_and_js_on_known_distributions() -> None:
    same = np.array([10.0, 20.0, 70.0])
    assert drift.psi(same, same * 3) == pytest.approx(0.0)
    assert drift.js_distance(same, same) == pytest.approx(0.0)
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert drift.psi(p, q) == pytest.approx(expected, rel=1e-3)
    # A bin the reference never had (new items) counts, floored rather than infinite.
    assert drift.psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])) > 2


def test_rating_bins_count_off_scale_values_apart() -> None:
    c = drift.rating_bins([1.0, 2.0, 3.0], np.array([1.0, 1.0, 3.0]), np.array([2.0, 2.5, 7.0]))
    assert c.labels == ["1", "2", "3", "off scale"]
    assert c.reference.tolist() == [2, 0, 1, 0] and c.current.tolist() == [0, 1, 0, 2]


# The hand-made log of the online-quality test: K = 3, horizon 1 h (3600 s).
#   list A: user 1 at t=1000: [10, 20, 30, 40]   positives 20 (rating 5 at 1100) and 40 (click
#           at 1200; rank 4, past K): NDCG = (1/log2 3) / (1 + 1/log2 3), a hit.
#   list B: user 1 at t=5000: [50, 60, 70]       70 rated 2 (not positive), 60 purchased at 5200:
#           NDCG = (1/log2 3) / 1, a hit. (A's horizon ended at 4600: 60 is not A's.)
#   list C: user 2 at t=1000: [10, 20, 30]       99 rated 4 at 1500 (relevance 4.0): no hit, 0.
#           10 rated 5 at 900, before the list: not C's.
#   list D: user 3 at t=1000: [10, 20, 30]       10 rated 5 at 4600, exactly at the horizon's
#           end (excluded), and 20 skipped: not followed.
HAND_LISTS = [(1, 1000.0, [10, 20, 30, 40]), (1, 5000.0, [50, 60, 70]), (2, 1000.0, [10, 20, 30]),
              (3, 1000.0, [10, 20, 30])]  # fmt: skip
HAND_FEEDBACK = [
    (1, 20, 5.0, "rate", 1100.0), (1, 40, None, "click", 1200.0), (1, 70, 2.0, "rate", 5100.0),
    (1, 60, None, "purchase", 5200.0), (2, 99, 4.0, "rate", 1500.0), (2, 10, 5.0, "rate", 900.0),
    (3, 10, 5.0, "rate", 4600.0), (3, 20, None, "skip", 1100.0),
]  # fmt: skip


def hand_expected() -> tuple[float, float]:
    d2 = 1 / math.log2(3)  # the discount of rank 2
    ndcg = [d2 / (1 + d2), d2 / 1, 0.0]
    return 2 / 3, sum(ndcg) / 3


def test_online_quality_equals_the_hand_computation(tmp_path: Path, processed_dir: Path) -> None:
    records = {
        "recommend": [
            record("recommend", T0 + t, user_id=u, items=items) for u, t, items in HAND_LISTS
        ],
        "feedback": [
            record("feedback", T0 + t, user_id=u, item_id=i, rating=r, event=e)
            for u, i, r, e, t in HAND_FEEDBACK
        ],
    }
    result, _ = figures_for(tmp_path, processed_dir, records, k=3, horizon_hours=1.0)
    online = result["online"]
    hit_rate, ndcg = hand_expected()
    assert online["served_lists"] == 4 and online["followed_lists"] == 3
    assert online["hit_rate@3"] == pytest.approx(hit_rate, abs=1e-6)
    assert online["ndcg@3"] == pytest.approx(ndcg, abs=1e-6)
    assert result["traffic"]["feedback"]["positive"] == 6  # 20, 40, 60, 99, 10, 10


def test_online_quality_on_arrays_matches_too() -> None:
    offsets = np.cumsum([0] + [len(items) for _, _, items in HAND_LISTS])
    lists = ServedLists(
        time=np.array([t for _, t, _ in HAND_LISTS]),
        user=np.array([u for u, _, _ in HAND_LISTS]),
        offsets=offsets,
        items=np.concatenate([items for _, _, items in HAND_LISTS]),
    )
    positive = [f for f in HAND_FEEDBACK if (f[2] or 0) >= 4 or f[3] in ("click", "purchase")]
    positives = Positives(
        user=np.array([f[0] for f in positive]),
        item=np.array([f[1] for f in positive]),
        event_time=np.array([f[4] for f in positive]),
    )
    quality = online_quality(lists, positives, k=3, horizon_hours=1.0)
    hit_rate, ndcg = hand_expected()
    assert (quality.served, quality.followed) == (4, 3)
    assert quality.hit_rate == pytest.approx(hit_rate) and quality.ndcg == pytest.approx(ndcg)
    empty = Positives(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    assert online_quality(lists, empty, 3, 1.0).followed == 0


def test_the_verdict_names_each_reason(tmp_path: Path, processed_dir: Path, processed) -> None:
    records = {"feedback": feedback_like_training(processed, np.random.default_rng(0), 0.0)}
    result, cfg = figures_for(tmp_path, processed_dir, records, min_feedback=N_FEEDBACK)
    retrain, reasons, reason = verdict(result["drift"], result["online"], cfg)
    assert retrain and [r["kind"] for r in reasons] == ["volume"]
    assert reason.startswith(f"{N_FEEDBACK} feedback ratings in the window >= {N_FEEDBACK}")
    # Online NDCG far below the offline figure, over enough followed lists.
    online = {**result["online"], "judged": True, "followed_lists": 500, "ndcg@10": 0.1,
              "offline_ndcg@10": 0.4}  # fmt: skip
    _, reasons, reason = verdict(
        result["drift"], online, cfg.model_copy(update={"min_feedback": 10**6})
    )
    assert [r["kind"] for r in reasons] == ["online"]
    assert "online NDCG@10 0.1000 < 0.2000" in reason
    # Too few feedback ratings: drift is not judged at all.
    few = {**result["drift"], "judged": False}
    few["item_popularity"] = {**few["item_popularity"], "psi": 5.0}
    assert (
        verdict(few, result["online"], cfg.model_copy(update={"min_feedback": 10**6}))[0] is False
    )


def test_feedback_past_the_window_follows_its_last_lists_but_is_not_counted(
    tmp_path: Path, processed_dir: Path
) -> None:
    end = T0 + 7 * DAY
    records = {
        "recommend": [record("recommend", end - 600, user_id=5, items=[7, 8, 9])],
        "feedback": [
            record("feedback", end + 60, user_id=5, item_id=7, rating=5.0),  # after `until`
            record("feedback", end + 2 * 3600, user_id=5, item_id=8, rating=5.0),  # past horizon
        ],
    }
    result, _ = figures_for(tmp_path, processed_dir, records, k=3, horizon_hours=1.0)
    assert result["online"]["followed_lists"] == 1 and result["online"]["ndcg@3"] == 1.0
    assert result["traffic"]["requests"]["feedback"] == 0
    assert result["traffic"]["feedback"]["events"] == 0
    assert result["drift"]["feedback_ratings"] == 0
    assert result["traffic"]["latency_ms"]["feedback"] == {"p50": None, "p95": None}
    assert (
        result["online"]["coverage"] == 3 / 200 and result["online"]["distinct_items_served"] == 3
    )


def brute_force(lists: list, positives: list, k: int, horizon_s: float) -> tuple[int, float, float]:
    """Online quality list by list, with sets: the definition, written plainly."""
    scores, hits = [], []
    for user, t, items in lists:
        relevant = {i for u, i, e in positives if u == user and t <= e < t + horizon_s}
        if not relevant:
            continue
        top = items[:k]  # an item served twice counts once, at its first rank
        dcg = sum(
            1 / math.log2(r + 2) for r, i in enumerate(top) if i in relevant and i not in top[:r]
        )
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
        scores.append(dcg / ideal)
        hits.append(dcg > 0)
    return len(scores), sum(hits) / len(hits), sum(scores) / len(scores)


@pytest.mark.parametrize("block", [None, 37])
def test_online_quality_equals_the_definition_on_random_logs(
    block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recommender.monitoring import online

    if block:  # many small blocks must give the same figures as one
        monkeypatch.setattr(online, "BLOCK", block)
    rng = np.random.default_rng(3)
    lists = [
        (
            int(rng.integers(20)),
            float(rng.integers(0, 20_000)),
            rng.choice(40, int(rng.integers(0, 12)), replace=bool(n % 7 == 0)).tolist(),
        )
        for n in range(400)
    ]  # every 7th list may serve an item twice
    # Repeats on purpose: the same user and item positive twice within a horizon.
    positives = [(int(rng.integers(20)), int(rng.integers(40)), float(rng.integers(0, 24_000)))
                 for _ in range(900)]  # fmt: skip
    served = ServedLists(
        time=np.array([t for _, t, _ in lists]),
        user=np.array([u for u, _, _ in lists]),
        offsets=np.cumsum([0] + [len(items) for _, _, items in lists]),
        items=np.array([i for _, _, items in lists for i in items], dtype=np.int64),
    )
    pos = Positives(*(np.array(column) for column in zip(*positives, strict=True)))
    quality = online_quality(served, pos, k=5, horizon_hours=0.5)
    followed, hit_rate, ndcg = brute_force(lists, positives, 5, 1800.0)
    assert quality.followed == followed > 100
    assert quality.hit_rate == pytest.approx(hit_rate) and quality.ndcg == pytest.approx(ndcg)
