"""The champion gate's statistics on hand-made squared errors: no model, no MLflow."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.registry.gate import Bootstrap, bootstrap_rmse_delta, decide
from recommender.registry.register import lock_digest
from recommender.tracking import redact


def _errors(n_users: int = 200, per_user: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Squared errors of a champion with per-user difficulty (users differ, as in real data)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    difficulty = rng.gamma(2.0, 0.5, n_users)[users]
    sq = difficulty * rng.chisquare(1, users.size)
    return sq, users


def test_clearly_better_candidate_has_interval_below_zero() -> None:
    sq_h, users = _errors()
    sq_c = 0.6 * sq_h  # 40% less squared error everywhere
    b = bootstrap_rmse_delta(sq_c, sq_h, users, 500, 0.95, seed=1)
    rmse_h, rmse_c = np.sqrt(sq_h.mean()), np.sqrt(sq_c.mean())
    assert b.delta == pytest.approx(rmse_c - rmse_h, abs=1e-6)
    assert b.low <= b.delta <= b.high < 0
    assert b.users == 200 and b.resamples == 500
    assert decide(float(rmse_c), 10.0, b, min_delta=0.001).promote


def test_identical_models_have_a_zero_interval_and_are_refused() -> None:
    sq_h, users = _errors()
    b = bootstrap_rmse_delta(sq_h, sq_h.copy(), users, 300, 0.95, seed=1)
    assert b.low == b.high == b.delta == 0.0
    verdict = decide(float(np.sqrt(sq_h.mean())), 10.0, b, min_delta=0.0)
    assert not verdict.promote
    assert "not entirely below" in verdict.reason


def test_tiny_improvement_inside_the_noise_is_refused() -> None:
    sq_h, users = _errors(seed=2)
    rng = np.random.default_rng(3)
    # On average 0.5% less squared error, but with per-row noise far larger than that.
    sq_c = sq_h * 0.995 * rng.lognormal(0.0, 0.3, sq_h.size) / np.exp(0.3**2 / 2)
    b = bootstrap_rmse_delta(sq_c, sq_h, users, 1000, 0.95, seed=4)
    assert b.low < 0 < b.high
    rmse_c = float(np.sqrt(sq_c.mean()))
    assert not decide(rmse_c, 10.0, b, min_delta=0.0).promote


def test_an_improvement_smaller_than_min_delta_is_refused() -> None:
    sq_h, users = _errors()
    sq_c = 0.98 * sq_h  # consistently ~1% lower RMSE: the interval is narrow and below zero
    b = bootstrap_rmse_delta(sq_c, sq_h, users, 500, 0.95, seed=1)
    assert b.high < 0
    rmse_c = float(np.sqrt(sq_c.mean()))
    assert decide(rmse_c, 10.0, b, min_delta=0.0).promote
    assert not decide(rmse_c, 10.0, b, min_delta=-b.high + 1e-3).promote


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    sq_h, users = _errors()
    sq_c = sq_h * np.random.default_rng(5).uniform(0.7, 1.2, sq_h.size)
    first = bootstrap_rmse_delta(sq_c, sq_h, users, 400, 0.9, seed=42)
    again = bootstrap_rmse_delta(sq_c, sq_h, users, 400, 0.9, seed=42)
    other = bootstrap_rmse_delta(sq_c, sq_h, users, 400, 0.9, seed=43)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.delta == other.delta  # the point estimate does not depend on the resampling


def test_users_not_rows_are_resampled() -> None:
    # Ten users with 100 rows each; the candidate is much better for some users, worse for
    # others. Treating each row as its own user hides that between-user spread.
    rng = np.random.default_rng(6)
    users = np.repeat(np.arange(10), 100)
    sq_h = rng.chisquare(1, users.size)
    sq_c = sq_h * rng.uniform(0.3, 1.6, 10)[users]
    by_user = bootstrap_rmse_delta(sq_c, sq_h, users, 1000, 0.95, seed=0)
    by_row = bootstrap_rmse_delta(sq_c, sq_h, np.arange(users.size), 1000, 0.95, seed=0)
    assert by_user.users == 10 and by_row.users == 1000
    assert (by_user.high - by_user.low) > 2 * (by_row.high - by_row.low)


def test_decide_without_champion_needs_only_the_bias_baseline() -> None:
    assert decide(0.90, 0.95, None, 0.001).promote
    refused = decide(0.97, 0.95, None, 0.001)
    assert not refused.promote and "bias baseline" in refused.reason


def test_decide_needs_the_bias_baseline_even_when_better_than_the_champion() -> None:
    interval = Bootstrap(delta=-0.2, low=-0.3, high=-0.1, confidence=0.95, resamples=100, users=9)
    assert decide(0.90, 0.95, interval, 0.001).promote
    verdict = decide(0.99, 0.95, interval, 0.001)
    assert not verdict.promote and "bias baseline" in verdict.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sq_champion": np.ones(3)}, "one squared error per row"),
        ({"resamples": 0}, "resamples"),
        ({"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_inputs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    args = {
        "sq_candidate": np.ones(4),
        "sq_champion": np.ones(4),
        "users": np.arange(4),
        "resamples": 10,
        "confidence": 0.95,
        "seed": 0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        bootstrap_rmse_delta(**args)


def test_lock_digest_ignores_the_register_entry(tmp_path) -> None:  # noqa: ANN001
    lock = tmp_path / "dvc.lock"
    assert lock_digest(lock) is None
    base = "schema: '2.0'\nstages:\n  train:\n    cmd: python pipeline/train.py\n"
    lock.write_text(base)
    before = lock_digest(lock)
    lock.write_text(base + "  register:\n    outs:\n    - path: reports/promotion.json\n")
    assert lock_digest(lock) == before
    lock.write_text(base.replace("train.py", "train.py --other"))
    assert lock_digest(lock) != before


def test_redact_hides_passwords_in_uris() -> None:
    text = "failed: postgresql+psycopg2://mlflow:s3cret@127.0.0.1:5432/db and http://u:p@h:1/x"
    out = redact(text)
    assert "s3cret" not in out and ":p@" not in out
    assert "mlflow:***@127.0.0.1:5432" in out and "u:***@h:1" in out
