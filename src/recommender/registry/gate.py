"""The champion gate's statistics: a paired bootstrap over users, and the promotion rule.

The gate judges what the endpoint serves: a *primary* metric must improve with confidence (NDCG@k
for families trained to rank, RMSE for the others) and a *guard* on the other metric stops a
candidate that is clearly worse there. Both are measured by a paired bootstrap over test users.

Pure functions on NumPy arrays, with no MLflow in sight, so the rule can be tested (and read)
on its own; :mod:`recommender.registry.register` feeds them the two models' per-row errors and
per-user NDCG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap estimate of ``metric(candidate) - metric(champion)``.

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


#: The statistics the bootstrap knows: ``rmse`` (values are squared errors per row; the statistic
#: is the root of their mean) and ``mean`` (values per row, e.g. one NDCG per user; their mean).
STATISTICS = ("rmse", "mean")


def paired_bootstrap(
    candidate: np.ndarray,
    champion: np.ndarray,
    users: np.ndarray,
    resamples: int,
    confidence: float,
    seed: int,
    statistic: str = "rmse",
) -> Bootstrap:
    """Confidence interval of ``stat(candidate) - stat(champion)``, resampling users.

    Users, not rows, are resampled: one user's ratings are correlated (a harsh rater is harsh on
    every item), so a row bootstrap would understate the noise. The two models stay paired (the
    same users in every resample), which removes the variation both models share.

    Args:
        candidate: The candidate's value on each row (a squared error for ``rmse``).
        champion: The champion's value on the same rows.
        users: Each row's user (any hashable ids); rows of one user are resampled together.
        resamples: Number of bootstrap resamples.
        confidence: Two-sided coverage of the interval, e.g. 0.95.
        seed: Seeds the resampling; the same inputs and seed give the same interval.
        statistic: ``rmse`` or ``mean`` (see :data:`STATISTICS`).

    Raises:
        ValueError: Arrays of different lengths, no rows, or a bad ``resamples``/``confidence``.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    c = np.asarray(candidate, dtype=np.float64).reshape(-1)
    h = np.asarray(champion, dtype=np.float64).reshape(-1)
    users = np.asarray(users).reshape(-1)
    if not c.size == h.size == users.size:
        raise ValueError(
            f"need one value per row for both models and a user per row, got "
            f"{c.size}, {h.size} and {users.size}"
        )
    if c.size == 0:
        raise ValueError("no rows to compare the models on")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")

    _, group = np.unique(users, return_inverse=True)
    n_users = int(group.max()) + 1
    sum_c = np.bincount(group, weights=c, minlength=n_users)
    sum_h = np.bincount(group, weights=h, minlength=n_users)
    rows = np.bincount(group, minlength=n_users).astype(np.float64)
    finish = np.sqrt if statistic == "rmse" else (lambda x: x)

    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    # Bounded memory: about 4M drawn indices per block, whatever the number of users.
    block = max(1, 4_000_000 // n_users)
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        pick = rng.integers(0, n_users, size=(b, n_users))
        n = rows[pick].sum(axis=1)
        deltas[start : start + b] = finish(sum_c[pick].sum(axis=1) / n) - finish(
            sum_h[pick].sum(axis=1) / n
        )
    alpha = 1.0 - confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    total = rows.sum()
    delta = finish(sum_c.sum() / total) - finish(sum_h.sum() / total)
    return Bootstrap(
        delta=round6(delta),
        low=round6(low),
        high=round6(high),
        confidence=float(confidence),
        resamples=int(resamples),
        users=n_users,
    )


@dataclass(frozen=True)
class Comparison:
    """One metric of the candidate, next to its baseline and (when there is one) the champion.

    Attributes:
        name: ``rmse`` or ``ndcg@10`` (how reports name it).
        higher_is_better: False for an error (RMSE), True for a ranking metric (NDCG).
        candidate: The candidate's value on the test split.
        baseline: The baseline it must beat: the bias baseline's RMSE, popularity's NDCG.
        baseline_name: Its name in words.
        interval: The bootstrap of ``candidate - champion``; None without a champion.
    """

    name: str
    higher_is_better: bool
    candidate: float
    baseline: float
    baseline_name: str
    interval: Bootstrap | None = None

    def beats_baseline(self) -> bool:
        if self.higher_is_better:
            return self.candidate > self.baseline
        return self.candidate < self.baseline

    def surely_better_by(self, margin: float) -> bool:
        """The whole interval lies beyond ``margin`` on the better side."""
        b = self.interval
        return b is not None and (b.low > margin if self.higher_is_better else b.high < -margin)

    def surely_worse_by(self, margin: float) -> bool:
        """The whole interval lies beyond ``margin`` on the worse side."""
        b = self.interval
        return b is not None and (b.high < -margin if self.higher_is_better else b.low > margin)

    def words(self) -> str:
        return f"test {self.name} {self.candidate:.6f} vs {self.baseline_name} {self.baseline:.6f}"

    def span(self) -> str:
        b = self.interval
        if b is None:
            return f"no interval of the {self.name} change"
        return (
            f"{b.confidence:.0%} interval of the {self.name} change [{b.low:+.6f}, {b.high:+.6f}]"
        )


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the reason, in words a reviewer can check against the numbers."""

    promote: bool
    reason: str


def decide(
    primary: Comparison,
    guard: Comparison | None,
    min_delta: float,
    guard_delta: float,
) -> Decision:
    """Apply the promotion rule.

    With no champion (``primary.interval`` is None), the candidate must beat the baseline on the
    primary metric. Otherwise it must also improve the primary metric by more than ``min_delta``
    with confidence (the whole interval beyond it), and the guard must not show it worse than
    the champion by more than ``guard_delta`` with confidence.

    Args:
        primary: The metric that decides (what the endpoint is judged by).
        guard: The other metric, with its interval; None to check the primary alone.
        min_delta: The smallest improvement of the primary metric worth a promotion.
        guard_delta: How much worse on the guard metric a candidate may be (with confidence).
    """
    baseline = primary.words()
    if primary.interval is None:
        if primary.beats_baseline():
            return Decision(True, f"no champion yet and it beats the {primary.baseline_name} "
                            f"({baseline})")  # fmt: skip
        return Decision(False, f"does not beat the {primary.baseline_name} ({baseline})")
    side = "above" if primary.higher_is_better else "below"
    margin = f"{min_delta if primary.higher_is_better else -min_delta:+.6f}"
    if not primary.surely_better_by(min_delta):
        why = f"{primary.span()} is not entirely {side} {margin} (min_delta)"
        if not primary.beats_baseline():
            why += f", and it does not beat the {primary.baseline_name} ({baseline})"
        return Decision(False, why)
    if guard is not None and guard.surely_worse_by(guard_delta):
        return Decision(
            False,
            f"{primary.span()} is entirely {side} {margin}, but the guard fails: the "
            f"{guard.span()} shows it worse than the champion by more than guard_delta "
            f"({guard_delta:g})",
        )
    if not primary.beats_baseline():
        return Decision(
            False, f"better than the champion but not the {primary.baseline_name} ({baseline})"
        )
    guard_words = f"; guard: {guard.span()}" if guard is not None else ""
    return Decision(True, f"{primary.span()} is entirely {side} {margin}; {baseline}{guard_words}")


def round6(x: float) -> float:
    """Round to 6 places: recorded figures stay byte-stable across reruns."""
    return round(float(x), 6)
