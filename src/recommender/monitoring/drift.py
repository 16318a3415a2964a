"""Drift between the champion's training data and a window of feedback: PSI and Jensen-Shannon.

Three distributions are compared, each over bins fixed by the training split:

- ratings: one bin per value of the rating scale, plus one for values off the scale;
- item popularity: each feedback row falls in the bin of its item's training popularity. The bins
  are deciles of the training rows (equal shares of the training ratings, so each reference bin
  holds about 10% and the index is stable), ties kept together; items the training split never
  saw have a bin of their own (reference share 0);
- user activity: the same with users' training rating counts, new users in their own bin.

The population stability index is ``sum((q - p) * ln(q / p))`` over the bins, with shares floored
at :data:`EPSILON` (a bin empty on one side would be infinite). Rules of thumb: below 0.1 stable,
0.1-0.25 a shift, above 0.25 a large one. On unchanged traffic it is about ``(bins - 1) / n``
from sampling alone, hence ``monitor.min_drift_rows``. The Jensen-Shannon distance (base 2, in
[0, 1]) is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Floor of a bin's share in the PSI (and its JS twin): an empty bin counts as 0.01%.
EPSILON = 1e-4
#: Quantile bins of the training rows for item popularity and user activity.
N_BINS = 10


def psi(reference: np.ndarray, current: np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index of ``current`` against ``reference`` (counts or shares)."""
    p = _shares(reference, eps)
    q = _shares(current, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two binned distributions; 0 when one is empty."""
    from scipy.spatial.distance import jensenshannon

    p, q = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    return float(jensenshannon(p, q, base=2))


def _shares(counts: np.ndarray, eps: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    shares = counts / total if total > 0 else np.zeros_like(counts)
    shares = np.maximum(shares, eps)
    return shares / shares.sum()


@dataclass(frozen=True)
class Comparison:
    """One distribution, binned, in the training split and in the window."""

    name: str
    labels: list[str]
    reference: np.ndarray  # training rows per bin
    current: np.ndarray  # window rows per bin

    @property
    def psi(self) -> float:
        return psi(self.reference, self.current)

    @property
    def js(self) -> float:
        return js_distance(self.reference, self.current)

    def to_dict(self) -> dict[str, Any]:
        ref, cur = self.reference.sum(), self.current.sum()
        return {
            "psi": round(self.psi, 6) if cur else None,
            "js": round(self.js, 6) if cur else None,
            "bins": [
                {
                    "bin": label,
                    "train_share": round(float(r / ref), 6) if ref else 0.0,
                    "window_share": round(float(c / cur), 6) if cur else 0.0,
                }
                for label, r, c in zip(self.labels, self.reference, self.current, strict=True)
            ],
        }


def rating_bins(scale_values: list[float], train: np.ndarray, window: np.ndarray) -> Comparison:
    """Ratings per value of the scale (``window`` without NaN), plus an off-scale bin."""
    values = np.asarray(scale_values, dtype=np.float64)

    def count(ratings: np.ndarray) -> np.ndarray:
        ratings = np.asarray(ratings, dtype=np.float64)
        pos = np.clip(np.searchsorted(values, ratings), 0, len(values) - 1)
        on_scale = np.isclose(values[pos], ratings)
        counts = np.bincount(pos[on_scale], minlength=len(values))
        return np.append(counts, np.count_nonzero(~on_scale)).astype(np.float64)

    labels = [f"{v:g}" for v in values] + ["off scale"]
    return Comparison("ratings", labels, count(train), count(window))


def popularity_bins(
    name: str, train_index: np.ndarray, window_index: np.ndarray, n_index: int
) -> Comparison:
    """Rows binned by the training popularity of their user or item (a vocabulary index).

    Args:
        name: ``item_popularity`` or ``user_activity``.
        train_index: The training rows' indices (``item_idx`` or ``user_idx``; 0 = OOV).
        window_index: The window rows' indices in the same vocabulary (0 = new).
        n_index: The vocabulary's size (OOV row included).
    """
    counts = np.bincount(train_index, minlength=n_index).astype(np.int64)
    counts[0] = 0
    row_counts = counts[train_index]
    edges = np.unique(np.quantile(row_counts, np.arange(1, N_BINS) / N_BINS, method="lower"))
    edges = edges[edges < row_counts.max()] if row_counts.size else edges
    bin_of = np.searchsorted(edges, counts, side="left")  # counts <= edges[0] -> bin 0
    n_bins = len(edges) + 1

    def count(index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        known = index > 0
        bins = np.bincount(bin_of[index[known]], minlength=n_bins)
        return np.append(bins, np.count_nonzero(~known)).astype(np.float64)

    bounds = np.concatenate([[row_counts.min() if row_counts.size else 0], edges + 1])
    tops = np.concatenate([edges, [row_counts.max() if row_counts.size else 0]])
    labels = [f"{lo}-{hi} ratings" if lo != hi else f"{lo} ratings" for lo, hi in zip(
        bounds.tolist(), tops.tolist(), strict=True
    )] + ["new"]  # fmt: skip
    return Comparison(name, labels, count(train_index), count(window_index))
