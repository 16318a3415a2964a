"""The champion gate's statistics: a paired bootstrap over users, and the promotion rule.

Pure functions on NumPy arrays, with no MLflow in sight, so the rule can be tested (and read)
on its own; :mod:`recommender.registry.register` feeds them the two models' errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap estimate of ``RMSE(candidate) - RMSE(champion)``.

    Attributes:
        delta: The change on all rows (negative: the candidate's error is lower).
        low, high: The ends of the ``confidence`` interval of the change.
        confidence: Two-sided coverage of ``[low, high]``.
        resamples: Number of bootstrap resamples.
        users: Number of users resampled (the unit of resampling).
    """

    delta: float
    low: float
    high: float
    confidence: float
    resamples: int
    users: int


def bootstrap_rmse_delta(
    sq_candidate: np.ndarray,
    sq_champion: np.ndarray,
    users: np.ndarray,
    resamples: int,
    confidence: float,
    seed: int,
) -> Bootstrap:
    """Confidence interval of the RMSE change, resampling users with replacement.

    Users, not rows, are resampled: one user's ratings are correlated (a harsh rater is harsh on
    every item), so a row bootstrap would understate the noise. The two models' errors stay paired
    (the same users in every resample), which removes the variation both models share.

    Args:
        sq_candidate: The candidate's squared error on each test row.
        sq_champion: The champion's squared error on the same rows.
        users: Each row's user (any hashable ids); rows of one user are resampled together.
        resamples: Number of bootstrap resamples.
        confidence: Two-sided coverage of the interval, e.g. 0.95.
        seed: Seeds the resampling; the same inputs and seed give the same interval.

    Raises:
        ValueError: Arrays of different lengths, no rows, or a bad ``resamples``/``confidence``.
    """
    sq_c = np.asarray(sq_candidate, dtype=np.float64).reshape(-1)
    sq_h = np.asarray(sq_champion, dtype=np.float64).reshape(-1)
    users = np.asarray(users).reshape(-1)
    if not sq_c.size == sq_h.size == users.size:
        raise ValueError(
            f"need one squared error per row for both models and a user per row, got "
            f"{sq_c.size}, {sq_h.size} and {users.size}"
        )
    if sq_c.size == 0:
        raise ValueError("no rows to compare the models on")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")

    _, group = np.unique(users, return_inverse=True)
    n_users = int(group.max()) + 1
    sum_c = np.bincount(group, weights=sq_c, minlength=n_users)
    sum_h = np.bincount(group, weights=sq_h, minlength=n_users)
    rows = np.bincount(group, minlength=n_users).astype(np.float64)

    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    # Bounded memory: about 4M drawn indices per block, whatever the number of users.
    block = max(1, 4_000_000 // n_users)
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        pick = rng.integers(0, n_users, size=(b, n_users))
        n = rows[pick].sum(axis=1)
        deltas[start : start + b] = np.sqrt(sum_c[pick].sum(axis=1) / n) - np.sqrt(
            sum_h[pick].sum(axis=1) / n
        )
    alpha = 1.0 - confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    total = rows.sum()
    delta = np.sqrt(sum_c.sum() / total) - np.sqrt(sum_h.sum() / total)
    return Bootstrap(
        delta=round6(delta),
        low=round6(low),
        high=round6(high),
        confidence=float(confidence),
        resamples=int(resamples),
        users=n_users,
    )


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the reason, in words a reviewer can check against the numbers."""

    promote: bool
    reason: str


def decide(
    candidate_rmse: float,
    bias_rmse: float,
    interval: Bootstrap | None,
    min_delta: float,
) -> Decision:
    """Apply the promotion rule.

    Args:
        candidate_rmse: The candidate's test RMSE.
        bias_rmse: The bias baseline's RMSE on the same rows.
        interval: The bootstrap of the change against the champion; ``None`` when there is none.
        min_delta: The smallest RMSE improvement worth a promotion.
    """
    beats_bias = candidate_rmse < bias_rmse
    bias_words = f"test RMSE {candidate_rmse:.6f} vs bias baseline {bias_rmse:.6f}"
    if interval is None:
        if beats_bias:
            return Decision(True, f"no champion yet and it beats the bias baseline ({bias_words})")
        return Decision(False, f"does not beat the bias baseline ({bias_words})")
    pct = f"{interval.confidence:.0%}"
    span = f"{pct} interval of the RMSE change [{interval.low:+.6f}, {interval.high:+.6f}]"
    if not interval.high < -min_delta:
        why = f"{span} is not entirely below -min_delta ({-min_delta:+.6f})"
        if not beats_bias:
            why += f", and it does not beat the bias baseline ({bias_words})"
        return Decision(False, why)
    if not beats_bias:
        return Decision(False, f"better than the champion but not the bias baseline ({bias_words})")
    return Decision(True, f"{span} is entirely below -min_delta ({-min_delta:+.6f}); {bias_words}")


def round6(x: float) -> float:
    """Round to 6 places: recorded figures stay byte-stable across reruns."""
    return round(float(x), 6)
