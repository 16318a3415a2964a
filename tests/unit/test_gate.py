"""The champion gate's statistics on hand-made errors and NDCGs: no model, no MLflow."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.registry.gate import Bootstrap, Comparison, decide, paired_bootstrap
from recommender.registry.lineage import lock_digest
from recommender.tracking import redact


def rmse(candidate: float, bias: float = 10.0, interval: Bootstrap | None = None) -> Comparison:
    return Comparison("rmse", False, candidate, bias, "bias baseline", interval)


def ndcg(candidate: float, popular: float = 0.1, interval: Bootstrap | None = None) -> Comparison:
    return Comparison("ndcg@10", True, candidate, popular, "popularity ranking", interval)


def _interval(low: float, high: float) -> Bootstrap:
    return Bootstrap(delta=(low + high) / 2, low=low, high=high, confidence=0.95, resamples=100,
                     users=50)  # fmt: skip


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
    b = paired_bootstrap(sq_c, sq_h, users, 500, 0.95, seed=1)
    rmse_h, rmse_c = np.sqrt(sq_h.mean()), np.sqrt(sq_c.mean())
    assert b.delta == pytest.approx(rmse_c - rmse_h, abs=1e-6)
    assert b.low <= b.delta <= b.high < 0
    assert b.users == 200 and b.resamples == 500
    assert decide(rmse(float(rmse_c), 10.0, b), None, 0.001, 0.01).promote


def test_identical_models_have_a_zero_interval_and_are_refused() -> None:
    sq_h, users = _errors()
    b = paired_bootstrap(sq_h, sq_h.copy(), users, 300, 0.95, seed=1)
    assert b.low == b.high == b.delta == 0.0
    verdict = decide(rmse(float(np.sqrt(sq_h.mean())), 10.0, b), None, 0.0, 0.01)
    assert not verdict.promote
    assert "not entirely below" in verdict.reason


def test_tiny_improvement_inside_the_noise_is_refused() -> None:
    sq_h, users = _errors(seed=2)
    rng = np.random.default_rng(3)
    # On average 0.5% less squared error, but with per-row noise far larger than that.
    sq_c = sq_h * 0.995 * rng.lognormal(0.0, 0.3, sq_h.size) / np.exp(0.3**2 / 2)
    b = paired_bootstrap(sq_c, sq_h, users, 1000, 0.95, seed=4)
    assert b.low < 0 < b.high
    rmse_c = float(np.sqrt(sq_c.mean()))
    assert not decide(rmse(rmse_c, 10.0, b), None, 0.0, 0.01).promote


def test_an_improvement_smaller_than_min_delta_is_refused() -> None:
    sq_h, users = _errors()
    sq_c = 0.98 * sq_h  # consistently ~1% lower RMSE: the interval is narrow and below zero
    b = paired_bootstrap(sq_c, sq_h, users, 500, 0.95, seed=1)
    assert b.high < 0
    rmse_c = float(np.sqrt(sq_c.mean()))
    assert decide(rmse(rmse_c, 10.0, b), None, 0.0, 0.01).promote
    assert not decide(rmse(rmse_c, 10.0, b), None, -b.high + 1e-3, 0.01).promote


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    sq_h, users = _errors()
    sq_c = sq_h * np.random.default_rng(5).uniform(0.7, 1.2, sq_h.size)
    first = paired_bootstrap(sq_c, sq_h, users, 400, 0.9, seed=42)
    again = paired_bootstrap(sq_c, sq_h, users, 400, 0.9, seed=42)
    other = paired_bootstrap(sq_c, sq_h, users, 400, 0.9, seed=43)
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
    by_user = paired_bootstrap(sq_c, sq_h, users, 1000, 0.95, seed=0)
    by_row = paired_bootstrap(sq_c, sq_h, np.arange(users.size), 1000, 0.95, seed=0)
    assert by_user.users == 10 and by_row.users == 1000
    assert (by_user.high - by_user.low) > 2 * (by_row.high - by_row.low)


def test_decide_without_champion_needs_only_the_baseline() -> None:
    assert decide(rmse(0.90, 0.95), None, 0.001, 0.01).promote
    refused = decide(rmse(0.97, 0.95), None, 0.001, 0.01)
    assert not refused.promote and "bias baseline" in refused.reason
    assert decide(ndcg(0.30, popular=0.25), rmse(0.99), 0.001, 0.01).promote
    refused = decide(ndcg(0.20, popular=0.25), rmse(0.90), 0.001, 0.01)
    assert not refused.promote and "popularity ranking" in refused.reason


def test_decide_needs_the_baseline_even_when_better_than_the_champion() -> None:
    better = _interval(-0.3, -0.1)
    assert decide(rmse(0.90, 0.95, better), None, 0.001, 0.01).promote
    verdict = decide(rmse(0.99, 0.95, better), None, 0.001, 0.01)
    assert not verdict.promote and "bias baseline" in verdict.reason


def test_better_rmse_but_significantly_worse_ranking_stays_challenger() -> None:
    # Ranking is primary (a two_tower candidate): a clearly better RMSE does not matter when
    # NDCG@10 is clearly worse.
    verdict = decide(
        ndcg(0.40, interval=_interval(-0.05, -0.02)),
        rmse(0.85, interval=_interval(-0.06, -0.03)),
        0.001,
        0.01,
    )
    assert not verdict.promote and "ndcg@10 change" in verdict.reason
    # RMSE primary (a rating-only family): the NDCG guard stops the same candidate.
    verdict = decide(
        rmse(0.85, interval=_interval(-0.06, -0.03)),
        ndcg(0.40, interval=_interval(-0.05, -0.02)),
        0.001,
        0.01,
    )
    assert not verdict.promote and "guard fails" in verdict.reason


def test_better_ranking_with_a_slightly_worse_rmse_is_promoted() -> None:
    # NDCG clearly up; RMSE a little worse, but not surely worse by more than guard_delta.
    primary = ndcg(0.47, popular=0.25, interval=_interval(0.02, 0.05))
    verdict = decide(primary, rmse(0.93, interval=_interval(0.001, 0.008)), 0.001, 0.01)
    assert verdict.promote and "guard" in verdict.reason
    # RMSE surely worse by more than guard_delta: refused.
    verdict = decide(primary, rmse(0.99, interval=_interval(0.02, 0.04)), 0.001, 0.01)
    assert not verdict.promote and "guard fails" in verdict.reason


def test_mean_statistic_bootstraps_a_per_user_metric() -> None:
    rng = np.random.default_rng(7)
    users = np.arange(300)
    champion = rng.uniform(0, 1, users.size)  # e.g. one NDCG per user
    candidate = np.clip(champion + 0.1 + rng.normal(0, 0.05, users.size), 0, 1)
    b = paired_bootstrap(candidate, champion, users, 500, 0.95, seed=1, statistic="mean")
    assert b.delta == pytest.approx(candidate.mean() - champion.mean(), abs=1e-6)
    assert 0 < b.low <= b.delta <= b.high
    assert decide(ndcg(float(candidate.mean()), interval=b), None, 0.001, 0.01).promote
    with pytest.raises(ValueError, match="statistic"):
        paired_bootstrap(candidate, champion, users, 10, 0.95, seed=1, statistic="median")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"champion": np.ones(3)}, "one value per row"),
        ({"resamples": 0}, "resamples"),
        ({"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_inputs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    args = {
        "candidate": np.ones(4),
        "champion": np.ones(4),
        "users": np.arange(4),
        "resamples": 10,
        "confidence": 0.95,
        "seed": 0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(**args)


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


#: A dvc.lock as DVC writes it for this project's graph, trimmed to what the digest follows.
LOCK = """\
schema: '2.0'
stages:
  check_params:
    cmd: python pipeline/check_params.py
    outs: [{path: reports/params_check.txt, md5: a1}]
  ingest:
    cmd: python pipeline/ingest.py
    deps: [{path: reports/params_check.txt, md5: a1}]
    outs: [{path: data/interim, md5: b1.dir}]
  preprocess:
    cmd: python pipeline/preprocess.py
    deps: [{path: data/interim, md5: b1.dir}]
    outs: [{path: data/processed, md5: c1.dir}, {path: reports/data.json, md5: c2}]
  train:
    cmd: python pipeline/train.py
    deps: [{path: data/processed, md5: c1.dir}]
    outs: [{path: models, md5: d1.dir}, {path: reports/train_history.csv, md5: d2}]
  evaluate:
    cmd: python pipeline/evaluate.py
    deps: [{path: data/processed, md5: c1.dir}, {path: models, md5: d1.dir}]
    outs: [{path: reports/metrics.json, md5: e1}]
  register:
    cmd: python pipeline/register.py
    deps: [{path: models, md5: d1.dir}, {path: data/processed, md5: c1.dir},
           {path: reports/metrics.json, md5: e1}, {path: src/recommender/registry, md5: f0.dir}]
    outs: [{path: reports/promotion.json, md5: f1}]
  package:
    cmd: python pipeline/package.py
    deps: [{path: reports/promotion.json, md5: f1}]
    outs: [{path: reports/package.json, md5: g1}]
  docs:
    cmd: python make_docs.py
    deps: [{path: README.md, md5: h0}]
    outs: [{path: site, md5: h1.dir}]
"""
UPSTREAM = {"check_params", "ingest", "preprocess", "train", "evaluate"}
READS = ("models", "data/processed", "reports/metrics.json")


def _lock(tmp_path, text: str = LOCK, **changes: str):  # noqa: ANN001, ANN202
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "dvc.lock"
    path.write_text(text)
    return path


def test_lock_digest_covers_the_stages_upstream_of_register(tmp_path) -> None:  # noqa: ANN001
    import yaml

    from recommender.registry.lineage import upstream_stages

    stages = yaml.safe_load(LOCK)["stages"]
    assert upstream_stages(stages, list(READS)) == UPSTREAM
    assert upstream_stages(stages, ["reports/metrics.json"]) == UPSTREAM  # through evaluate's deps
    assert upstream_stages(stages, ["data/processed"]) == {"check_params", "ingest", "preprocess"}
    base = lock_digest(_lock(tmp_path))
    # Upstream changes change it, however far up.
    for old, new in [("a1", "a2"), ("pipeline/ingest.py", "pipeline/ingest.py -v"), ("e1", "e9")]:
        assert lock_digest(_lock(tmp_path, **{old: new})) != base, old
    # Register's own entry, a downstream stage (package reads promotion.json) and an unrelated
    # one do not: a forced rerun of register finds the digest it recorded before.
    for old, new in [("f1", "f9"), ("g1", "g9"), ("h1", "h9"), ("package.py", "package.py -v")]:
        assert lock_digest(_lock(tmp_path, **{old: new})) == base, old


def test_lock_digest_is_the_same_before_and_after_register_and_package_ran(
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    """The first run reads a lock without register's and package's entries (DVC writes them
    after); a forced rerun reads one with both. The digest is the same for the same inputs."""
    full = lock_digest(_lock(tmp_path))  # the register entry's deps name the reads
    first_run = LOCK[: LOCK.index("  register:")]
    monkeypatch.chdir(tmp_path)
    assert lock_digest(_lock(tmp_path, first_run), READS) == full
    absolute = [tmp_path / read for read in READS]
    assert lock_digest(_lock(tmp_path), absolute) == full
    # Models alone lead to train and what is before it, not to evaluate.
    assert lock_digest(_lock(tmp_path, first_run), READS[:1]) != full
