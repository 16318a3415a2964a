"""The synthetic source: MovieLens-like shape, determinism, speed, and learnable structure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.core.config import RatingScale, SyntheticConfig, parse_params
from recommender.core.errors import ConfigError
from recommender.core.schema import (
    ITEM_COLUMNS,
    RATING_COLUMNS,
    SOURCE_SCALES,
    USER_COLUMNS,
    write_dataset,
)
from recommender.data import load_dataset, synthetic
from recommender.data.synthetic import generate

CFG = SyntheticConfig()  # the defaults: 1000 users, 1700 items, 100k ratings


@pytest.fixture(scope="module", params=["dense", "rejection"])
def default(request):
    """The default set, drawn as it is (every cell keyed) and as sets above ``_DENSE_CELLS`` are
    (rejection; its heavy users by row): every property below holds for both."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "rejection":
            mp.setattr(synthetic, "_DENSE_CELLS", 0)
        return generate(CFG, seed=42)


def _biases(u, i, y, n_users, n_items, lam=5.0, sweeps=10):
    """Regularised user/item biases by alternating least squares: the bias-only baseline."""
    mu, bu, bi = y.mean(), np.zeros(n_users), np.zeros(n_items)
    for _ in range(sweeps):
        bu = np.bincount(u, y - mu - bi[i], n_users) / (np.bincount(u, minlength=n_users) + lam)
        bi = np.bincount(i, y - mu - bu[u], n_items) / (np.bincount(i, minlength=n_items) + lam)
    return mu, bu, bi


def _als(u, i, residual, n_users, n_items, k=8, lam=5.0, sweeps=8, seed=0):
    """Rank-k ALS on bias-removed ratings (numpy only, a second or so on 100k ratings)."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.1, (n_users, k)), rng.normal(0, 0.1, (n_items, k))

    def solve(rows, cols, n_rows, other):
        order = np.argsort(rows, kind="stable")
        cols_s, res_s = cols[order], residual[order]
        bounds = np.searchsorted(rows[order], np.arange(n_rows + 1))
        out = np.zeros((n_rows, k))
        for r in range(n_rows):
            s, e = bounds[r], bounds[r + 1]
            x = other[cols_s[s:e]]
            out[r] = np.linalg.solve(x.T @ x + lam * np.eye(k), x.T @ res_s[s:e])
        return out

    for _ in range(sweeps):
        p = solve(u, i, n_users, q)
        q = solve(i, u, n_items, p)
    return p, q


def _r2(x: np.ndarray, target: np.ndarray) -> float:
    """In-sample R^2 of a linear probe (with intercept) from x to target."""
    x1 = np.column_stack([x, np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(x1, target, rcond=None)
    resid = target - x1 @ coef
    return 1.0 - float(resid @ resid) / float(((target - target.mean()) ** 2).sum())


def test_tables_follow_the_schema(default):
    r, items, users = default.ratings, default.items, default.users
    assert list(r.columns) == RATING_COLUMNS
    assert [str(t) for t in r.dtypes] == ["int64", "int64", "float64", "int64"]
    assert list(items.columns) == ITEM_COLUMNS and str(items["year"].dtype) == "Int64"
    assert list(users.columns) == USER_COLUMNS and str(users["age"].dtype) == "Int64"
    assert default.info.source == "synthetic" and default.info.has_users
    assert not default.info.has_given_split


def test_sizes_coverage_and_uniqueness(default):
    r = default.ratings
    assert len(r) == CFG.n_ratings
    assert not r.duplicated(["user_id", "item_id"]).any()
    # Every user and item rated; users MovieLens-style with at least 20 ratings.
    assert set(r["user_id"]) == set(range(1, CFG.n_users + 1))
    assert set(r["item_id"]) == set(range(1, CFG.n_items + 1))
    assert r["user_id"].value_counts().min() >= 20
    assert set(default.items["item_id"]) == set(r["item_id"])
    assert set(default.users["user_id"]) == set(r["user_id"])


def test_ratings_look_like_movielens(default):
    r = default.ratings
    assert set(r["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.3 < r["rating"].mean() < 3.7
    lo = pd.Timestamp(CFG.start).timestamp()
    hi = pd.Timestamp(CFG.end).timestamp()
    assert lo <= r["timestamp"].min() and r["timestamp"].max() <= hi
    # Spread over the period, not bunched at one end.
    years = pd.to_datetime(r["timestamp"], unit="s").dt.year
    assert years.nunique() == 6


def test_activity_and_popularity_are_long_tailed(default):
    per_user = default.ratings["user_id"].value_counts()
    per_item = default.ratings["item_id"].value_counts()
    assert per_user.max() > 5 * per_user.median()
    assert per_item.max() > 15 * per_item.median()
    # The top 10% of items draw a large share of the ratings, as in MovieLens (~40%).
    top = per_item.sort_values(ascending=False).head(len(per_item) // 10).sum()
    assert top / per_item.sum() > 0.3


def test_items_and_users_have_metadata(default):
    items, users = default.items, default.users
    assert items["title"].str.fullmatch(r"Synthetic Movie \d+ \((\d{4})\)").all()
    assert (items["title"].str.extract(r"\((\d{4})\)")[0].astype(int) == items["year"]).all()
    assert (items["genres"] != "").all()
    genres = items["genres"].str.split("|").explode()
    assert genres.nunique() == CFG.n_genres
    assert genres.value_counts().iloc[0] > 5 * genres.value_counts().iloc[-1]  # Drama >> Fantasy
    assert users["age"].between(7, 73).all()
    assert set(users["gender"]) == {"M", "F"}
    assert users["occupation"].nunique() > 15


@pytest.mark.parametrize("dense_cells", [synthetic._DENSE_CELLS, 0])
def test_same_seed_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dense_cells: int):
    monkeypatch.setattr(synthetic, "_DENSE_CELLS", dense_cells)
    cfg = SyntheticConfig(n_users=200, n_items=300, n_ratings=8000)
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        write_dataset(generate(cfg, seed=seed), tmp_path / name)
    files = ["ratings.parquet", "items.parquet", "users.parquet", "dataset.json"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "ratings.parquet").read_bytes() != (
        tmp_path / "c" / "ratings.parquet"
    ).read_bytes()


def test_the_rejection_draw_follows_the_keyed_draws_law():
    """Both draws on the same users, factors and popularity (50 ratings of 3,000 items a user, so
    light users, as rejection gets them): the same pairs' law, taste tilt and popularity alike."""
    rng = np.random.default_rng(0)
    n_users, n_items, k = 2000, 3000, 8
    sigma = np.sqrt(synthetic.INTERACTION_STD / np.sqrt(k))
    p, q = rng.normal(0, sigma, (n_users, k)), rng.normal(0, sigma, (n_items, k))
    popularity = 1.0 / (np.arange(n_items) + 11.0) ** 1.3
    first_user = rng.integers(0, n_users, n_items)
    counts = synthetic._per_user_counts(
        rng, rng.lognormal(0, 1, n_users), np.bincount(first_user, minlength=n_users),
        n_items, 100_000,
    )  # fmt: skip
    assert (counts * synthetic._ROW_FACTOR < n_items).mean() > 0.95
    starts = np.concatenate([[0], np.cumsum(counts)])
    users = np.repeat(np.arange(n_users), counts)
    taste, per_item = [], []
    for draw in (synthetic._draw_rows, synthetic._draw_by_rejection):
        items = np.full(len(users), -1)
        job = synthetic._Draw(counts, popularity, first_user, p, q, starts, items)
        draw(np.random.default_rng(1), np.arange(n_users), job)
        pairs = pd.DataFrame({"u": users, "i": items})
        assert (items >= 0).all() and not pairs.duplicated().any()
        assert set(zip(first_user, range(n_items), strict=True)) <= set(
            zip(users, items, strict=True)
        )
        taste.append(np.einsum("nk,nk->n", p[users], q[items]).mean())
        per_item.append(np.bincount(items, minlength=n_items))
    # Untilted, the mean taste would be ~0; the tilt lifts it alike (its sampling sd ~0.003).
    assert taste[0] > 0.2 and abs(taste[0] - taste[1]) < 0.015, taste
    assert np.corrcoef(np.log1p(per_item[0]), np.log1p(per_item[1]))[0, 1] > 0.9


def test_a_factor_model_beats_the_bias_baseline(default):
    r = default.ratings
    u, i = r["user_id"].to_numpy() - 1, r["item_id"].to_numpy() - 1
    y = r["rating"].to_numpy()
    test = np.random.default_rng(0).random(len(y)) < 0.2
    train = ~test
    mu, bu, bi = _biases(u[train], i[train], y[train], CFG.n_users, CFG.n_items)
    base = mu + bu[u] + bi[i]
    p, q = _als(u[train], i[train], (y - base)[train], CFG.n_users, CFG.n_items)
    full = base + np.einsum("nk,nk->n", p[u], q[i])

    def rmse(pred):
        return float(np.sqrt(np.mean((np.clip(pred[test], 1, 5) - y[test]) ** 2)))

    global_mean = float(np.sqrt(np.mean((y[train].mean() - y[test]) ** 2)))
    assert rmse(base) < global_mean - 0.1
    assert rmse(full) < rmse(base) - 0.05


def test_side_information_carries_signal(default):
    """Genres and demographics are linearly readable from learned factors, far above chance."""
    r = default.ratings
    u, i = r["user_id"].to_numpy() - 1, r["item_id"].to_numpy() - 1
    y = r["rating"].to_numpy()
    mu, bu, bi = _biases(u, i, y, CFG.n_users, CFG.n_items)
    p, q = _als(u, i, y - mu - bu[u] - bi[i], CFG.n_users, CFG.n_items, sweeps=5)
    chance = 3 * 9 / min(CFG.n_users, CFG.n_items)  # ~ (k+1)/n for noise, with margin
    for genre in ["Drama", "Comedy", "Action"]:
        has = default.items["genres"].str.contains(genre, regex=False).to_numpy(dtype=float)
        assert _r2(q, has) > max(0.08, chance), genre
    assert _r2(p, default.users["age"].to_numpy(dtype=float)) > 0.08
    assert _r2(p, (default.users["gender"] == "M").to_numpy(dtype=float)) > 0.03


def test_rating_scale_override():
    half = RatingScale(min=0.5, max=5.0, step=0.5)
    ds = generate(SyntheticConfig(n_users=100, n_items=150, n_ratings=4000), seed=1, scale=half)
    values = set(ds.ratings["rating"].unique())
    assert values <= set(half.values())
    assert len(values) >= 8  # half stars really occur
    assert ds.info.rating_scale == half


def test_load_dataset_dispatches_to_the_generator():
    params = parse_params(
        {"seed": 5, "synthetic": {"n_users": 60, "n_items": 90, "n_ratings": 2000}}
    )
    ds = load_dataset(params)
    again = generate(params.synthetic, seed=5)
    pd.testing.assert_frame_equal(ds.ratings, again.ratings)
    assert ds.info == again.info


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"n_users": 10, "n_items": 10, "n_ratings": 101}, "more than the 100 possible"),
        ({"n_users": 100, "n_items": 100, "n_ratings": 150}, "need at least 200"),
    ],
)
def test_impossible_sizes_are_config_errors(sizes, message):
    with pytest.raises(ConfigError, match=message):
        generate(SyntheticConfig(**sizes), seed=0)


def test_importing_the_data_package_stays_light():
    code = (
        "import sys, recommender.data\n"
        "from recommender.core.config import parse_params\n"
        "sizes = {'n_users': 50, 'n_items': 60, 'n_ratings': 1000}\n"
        "recommender.data.load_dataset(parse_params({'synthetic': sizes}))\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'mlflow', 'great_expectations', 'bentoml')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_smallest_is_the_head_of_a_stable_argsort():
    """The partial selection behind the Gumbel top-k sampler returns exactly what a whole stable
    argsort would, ties (forced -inf pairs, equal floats at the cut) and every row size included."""
    from recommender.data.synthetic import _smallest

    rng = np.random.default_rng(3)
    for n_cols, ties in [(300, False), (300, True), (7, True), (1000, True)]:
        values = rng.normal(size=(64, n_cols))
        if ties:  # few distinct values: ties inside and across the cut
            values = np.round(values * 2) / 2
        values[rng.random(values.shape) < 0.02] = -np.inf
        take = rng.integers(0, n_cols + 1, size=64)
        take[:4] = [0, 1, n_cols, n_cols // 4]
        full = np.argsort(values, axis=1, kind="stable")
        expected = np.concatenate([full[r, : take[r]] for r in range(len(take))])
        np.testing.assert_array_equal(_smallest(values, take), expected)


@pytest.mark.parametrize("n_users", [50, 2**40])  # 2**40: the key would overflow, lexsort
def test_user_time_item_order_matches_pandas(n_users):
    from recommender.data.synthetic import _user_time_item_order

    rng = np.random.default_rng(4)
    pairs = np.unique(rng.integers(0, 50 * 40, size=3000))
    u, i = np.sort(pairs // 40), pairs % 40  # grouped by user, as the sampler makes them
    when = rng.integers(1_400_000_000, 1_400_000_050, size=len(u))  # many equal times
    frame = pd.DataFrame({"u": u, "w": when, "i": i})
    expected = frame.sort_values(["u", "w", "i"], kind="stable").index.to_numpy()
    got = _user_time_item_order(u, when, i, n_users, 40)
    np.testing.assert_array_equal(got, expected)


def test_blocks_are_pure_functions_of_config_seed_and_index(monkeypatch: pytest.MonkeyPatch):
    """Above _DENSE_CELLS the table is its blocks concatenated, each block made on its own from
    (config, seed, index): made in reverse order here, they give the same table."""
    monkeypatch.setattr(synthetic, "_DENSE_CELLS", 0)
    monkeypatch.setattr(synthetic, "BLOCK_RATINGS", 1500)
    cfg = SyntheticConfig(n_users=200, n_items=300, n_ratings=8000)
    whole = generate(cfg, seed=7).ratings
    _, plan = synthetic.catalog(cfg, 7, SOURCE_SCALES["synthetic"])
    spans = synthetic.blocks(plan)
    assert len(spans) >= 4
    made = {
        i: synthetic.block_ratings(plan, i, users) for i, users in reversed(list(enumerate(spans)))
    }
    joined = pd.concat([pd.DataFrame(made[i]) for i in range(len(spans))], ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole)
    assert len(whole) == cfg.n_ratings and whole["item_id"].nunique() == cfg.n_items
    assert not whole.duplicated(["user_id", "item_id"]).any()
    assert (whole["user_id"].diff().dropna() >= 0).all()
