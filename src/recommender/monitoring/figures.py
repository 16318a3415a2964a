"""The monitor's figures from a window of log: traffic, drift, online quality, and the verdict.

Inputs are the compact columns :func:`recommender.monitoring.logs.scan_log` keeps (codes of the
shared :class:`~recommender.monitoring.logs.Interners`) and the training reference
(:class:`Reference`: the processed train split's indices and ratings, the vocabularies that map
raw ids to them, the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.config import MonitorConfig
from recommender.core.errors import DataError
from recommender.core.schema import DatasetInfo
from recommender.dataset.vocabulary import Vocabulary, load_vocabularies
from recommender.monitoring import drift
from recommender.monitoring.logs import Column, Interners, LogStats
from recommender.monitoring.online import (
    POSITIVE_EVENTS,
    Positives,
    ServedLists,
    online_quality,
    popularity_percentiles,
)

#: What the monitor reads of the processed folder (never the val/test splits or features).
REFERENCE_FILES = ("train.parquet", "vocab.json", "items.parquet", "dataset.json")


@dataclass(frozen=True)
class Reference:
    """The champion's training data, as the preprocess stage wrote it."""

    user_idx: np.ndarray
    item_idx: np.ndarray
    rating: np.ndarray
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    catalog: pd.DataFrame
    info: DatasetInfo

    @property
    def item_counts(self) -> np.ndarray:
        """Training ratings per item index (index 0, unknown items, has 0)."""
        counts = np.bincount(self.item_idx, minlength=len(self.item_vocab))
        counts[0] = 0
        return counts


def load_reference(processed_dir: str | Path) -> Reference:
    """Read the train split, vocabularies, catalog and dataset info of ``processed_dir``.

    Raises:
        DataError: Naming the folder or the file that is missing.
    """
    folder = Path(processed_dir)
    if not folder.is_dir():
        raise DataError(
            folder,
            "no such folder",
            expected="the preprocess stage's output (dvc repro preprocess)",
        )
    for name in REFERENCE_FILES:
        if not (folder / name).is_file():
            raise DataError(folder / name, "missing", expected="the preprocess stage's output")
    train = pd.read_parquet(folder / "train.parquet", columns=["user_idx", "item_idx", "rating"])
    user_vocab, item_vocab = load_vocabularies(folder / "vocab.json")
    return Reference(
        user_idx=train["user_idx"].to_numpy(np.int64),
        item_idx=train["item_idx"].to_numpy(np.int64),
        rating=train["rating"].to_numpy(np.float64),
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        catalog=pd.read_parquet(folder / "items.parquet"),
        info=DatasetInfo.read(folder / "dataset.json"),
    )


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def _share(part: Any, whole: Any) -> float | None:
    return round(float(part) / float(whole), 6) if whole else None


def traffic(scans: dict[str, tuple[dict[str, Column], LogStats]], until: float) -> dict[str, Any]:
    """Requests by endpoint, latency percentiles, cold starts, unknown items, bad lines.

    Records from ``until`` on (feedback read past the window for the online figures) are left
    out."""
    requests = {ep: stats.records for ep, (_, stats) in scans.items()}
    latency: dict[str, Any] = {}
    every = []
    for ep, (cols, _) in scans.items():
        values = cols["latency_ms"].array()[cols["time"].array() < until]
        latency[ep] = _percentiles(values)
        every.append(values)
    latency["all"] = _percentiles(np.concatenate(every) if every else np.zeros(0))
    rec, sim, pred = scans["recommend"][0], scans["similar_items"][0], scans["predict"][0]
    pairs = float(pred["user_ids"].array().sum())
    cold = rec["cold_start"].array()
    unknown = sim["unknown_item"].array()
    versions = rec["model_version"]
    assert versions.strings is not None
    names = versions.strings.raw()
    by_version = np.bincount(versions.array(), minlength=len(names))
    return {
        "requests": requests,
        "requests_total": int(sum(requests.values())),
        "latency_ms": latency,
        "cold_start_share": _share(cold.sum(), cold.size),
        "unknown_item_share": _share(unknown.sum(), unknown.size),
        "predict_pairs": int(pairs),
        "predict_unknown_user_share": _share(pred["unknown_users"].array().sum(), pairs),
        "predict_unknown_item_share": _share(pred["unknown_items"].array().sum(), pairs),
        "malformed_lines": int(sum(s.malformed for _, s in scans.values())),
        "truncated_lines": int(sum(s.truncated for _, s in scans.values())),
        "recommend_model_versions": {
            str(v): int(n) for v, n in zip(names, by_version, strict=True) if n
        },
    }


@dataclass(frozen=True)
class Feedback:
    """The window's feedback rows (codes), and which of them carry a rating or are positive."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    event_time: np.ndarray
    positive: np.ndarray
    events: dict[str, int]

    @property
    def rated(self) -> np.ndarray:
        return ~np.isnan(self.rating)


def feedback_rows(
    columns: dict[str, Column], keep: np.ndarray, relevance_threshold: float
) -> Feedback:
    """The feedback columns' rows where ``keep``, with each row's positivity."""
    rating = columns["rating"].array()[keep]
    event = columns["event"]
    assert event.strings is not None
    names = event.strings.raw()
    codes = event.array()[keep]
    good = np.array([name in POSITIVE_EVENTS for name in names], dtype=bool)
    with np.errstate(invalid="ignore"):
        positive = (rating >= relevance_threshold) | (good[codes] if codes.size else False)
    counts = np.bincount(codes, minlength=len(names))
    return Feedback(
        user=columns["user_id"].array()[keep],
        item=columns["item_id"].array()[keep],
        rating=rating,
        event_time=columns["event_time"].array()[keep],
        positive=np.asarray(positive, dtype=bool),
        events={str(n): int(c) for n, c in zip(names, counts, strict=True) if c},
    )


def code_index(interner_values: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Vocabulary index of each interned raw id (0: unknown to training)."""
    if len(interner_values) == 0:
        return np.zeros(0, dtype=np.int64)
    return vocab.encode(pd.Index(list(interner_values), dtype=object)).astype(np.int64)


def drift_figures(
    ref: Reference, fb: Feedback, interners: Interners, cfg: MonitorConfig
) -> dict[str, Any]:
    """Ratings, item popularity and user activity PSI/JS; shares of new users and items."""
    rated = fb.rated
    user_idx = code_index(interners.user.raw(), ref.user_vocab)[fb.user[rated]]
    item_idx = code_index(interners.item.raw(), ref.item_vocab)[fb.item[rated]]
    n = int(rated.sum())
    comparisons = [
        drift.rating_bins(ref.info.rating_scale.values(), ref.rating, fb.rating[rated]),
        drift.popularity_bins("item_popularity", ref.item_idx, item_idx, len(ref.item_vocab)),
        drift.popularity_bins("user_activity", ref.user_idx, user_idx, len(ref.user_vocab)),
    ]
    out: dict[str, Any] = {
        "feedback_ratings": n,
        "judged": n >= cfg.min_drift_rows,
        "new_users_share": _share(np.count_nonzero(user_idx == 0), n),
        "new_items_share": _share(np.count_nonzero(item_idx == 0), n),
        "new_users": int(np.unique(fb.user[rated][user_idx == 0]).size),
        "new_items": int(np.unique(fb.item[rated][item_idx == 0]).size),
    }
    for comparison in comparisons:
        out[comparison.name] = comparison.to_dict()
    return out


def online_figures(
    ref: Reference,
    recommend: dict[str, Column],
    fb: Feedback,
    interners: Interners,
    cfg: MonitorConfig,
) -> dict[str, Any]:
    """Hit rate@K and NDCG@K of the followed lists; coverage and popularity of what was served."""
    k = cfg.k
    lists = ServedLists(
        time=recommend["time"].array(),
        user=recommend["user_id"].array(),
        offsets=recommend["items"].offsets_array(),
        items=recommend["items"].array(),
    )
    pos = fb.positive
    positives = Positives(fb.user[pos], fb.item[pos], fb.event_time[pos])
    quality = online_quality(lists, positives, k, cfg.horizon_hours)

    # Per item code, not per served slot: memory follows the catalog, not the traffic.
    item_raw = interners.item.raw()
    shown = np.bincount(lists.items, minlength=len(item_raw))
    served = np.flatnonzero(shown)
    in_catalog = pd.Index(ref.catalog["item_id"]).get_indexer(pd.Index(list(item_raw[served])))
    counts = ref.item_counts
    catalog_counts = counts[code_index(ref.catalog["item_id"].to_numpy(), ref.item_vocab)]
    percentile = popularity_percentiles(
        catalog_counts, counts[code_index(item_raw[served], ref.item_vocab)]
    )
    mean_percentile = float(np.average(percentile, weights=shown[served])) if served.size else None
    return {
        "k": k,
        "horizon_hours": cfg.horizon_hours,
        "served_lists": quality.served,
        "followed_lists": quality.followed,
        "judged": quality.followed >= cfg.min_served,
        f"hit_rate@{k}": _round(quality.hit_rate),
        f"ndcg@{k}": _round(quality.ndcg),
        "distinct_items_served": int(np.count_nonzero(in_catalog >= 0)),
        "catalog_items": len(ref.catalog),
        "coverage": _share(np.count_nonzero(in_catalog >= 0), len(ref.catalog)),
        "popularity_percentile": _round(mean_percentile),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def verdict(
    drifts: dict[str, Any], online: dict[str, Any], cfg: MonitorConfig
) -> tuple[bool, list[dict[str, Any]], str]:
    """Whether to retrain, each reason (``kind``, ``metric``, ``value``, ``threshold``,
    ``message``) and one sentence for all of them."""
    reasons: list[dict[str, Any]] = []
    n = drifts["feedback_ratings"]
    if drifts["judged"]:
        for name in ("ratings", "item_popularity", "user_activity"):
            value = drifts[name]["psi"]
            if value is not None and value > cfg.psi_threshold:
                what = name.replace("_", " ")
                reasons.append(_reason("drift", f"{name}_psi", value, cfg.psi_threshold,
                                       f"{what} drifted: PSI {value:.3f} > {cfg.psi_threshold:g} "
                                       "(psi_threshold)"))  # fmt: skip
    if n >= cfg.min_feedback:
        reasons.append(_reason("volume", "feedback_ratings", n, cfg.min_feedback,
                               f"{n} feedback ratings in the window >= {cfg.min_feedback} "
                               "(min_feedback): enough new data to learn from"))  # fmt: skip
    k = online["k"]
    value, offline = online[f"ndcg@{k}"], online.get(f"offline_ndcg@{k}")
    if online["judged"] and value is not None and offline:
        floor = offline * (1.0 - cfg.online_margin)
        if value < floor:
            reasons.append(_reason("online", f"ndcg@{k}", value, floor,
                                   f"online NDCG@{k} {value:.4f} < {floor:.4f}, the offline "
                                   f"{offline:.4f} less {cfg.online_margin:.0%} (online_margin), "
                                   f"over {online['followed_lists']} followed lists"))  # fmt: skip
    if reasons:
        return True, reasons, "; ".join(r["message"] for r in reasons)
    return False, reasons, _no_reason(drifts, online, cfg)


def _reason(kind: str, metric: str, value: float, threshold: float, message: str) -> dict[str, Any]:
    return {"kind": kind, "metric": metric, "value": value, "threshold": threshold,
            "message": message}  # fmt: skip


def _no_reason(drifts: dict[str, Any], online: dict[str, Any], cfg: MonitorConfig) -> str:
    n = drifts["feedback_ratings"]
    if drifts["judged"]:
        worst = max(
            (drifts[name]["psi"] or 0.0, name)
            for name in ("ratings", "item_popularity", "user_activity")
        )
        drift_text = f"no drift (largest PSI {worst[0]:.3f}, {worst[1]}, <= {cfg.psi_threshold:g})"
    else:
        drift_text = (
            f"drift not judged ({n} feedback ratings < min_drift_rows {cfg.min_drift_rows})"
        )
    k = online["k"]
    if online["judged"]:
        online_text = f"online NDCG@{k} within online_margin of the offline figure"
        if online.get(f"offline_ndcg@{k}") is None:
            online_text = f"online NDCG@{k} not compared (no offline figure)"
    else:
        online_text = (
            f"online quality not judged ({online['followed_lists']} followed lists < "
            f"min_served {cfg.min_served})"
        )
    return f"{drift_text}; {n} feedback ratings < min_feedback {cfg.min_feedback}; {online_text}"
