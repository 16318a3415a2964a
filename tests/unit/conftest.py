"""Shared fixtures for unit tests: a seeded synthetic low-rank rating matrix with features."""

from __future__ import annotations

import os

# Before anything imports TensorFlow: no oneDNN banner (no speed cost here), no INFO logs.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@dataclass(frozen=True)
class Split:
    """One split's ratings as index arrays."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray


@dataclass(frozen=True)
class Synthetic:
    """A synthetic dataset following the preprocess contract (row 0 = unknown).

    Attributes:
        train, val, test: Warm splits (users and items all seen in train).
        cold: Ratings of ``cold_items``, which appear in no other split.
        item_features: ``(n_items + 1, n_genres + 2)`` genre multi-hot, year_norm, year_missing.
        user_features: ``(n_users + 1, 3)`` age bucket, gender, occupation codes (0 = unknown).
        user_cardinalities: Number of codes per user feature column, 0 included.
    """

    n_users: int
    n_items: int
    train: Split
    val: Split
    test: Split
    cold: Split
    cold_items: np.ndarray
    item_features: np.ndarray
    user_features: np.ndarray
    user_cardinalities: tuple[int, int, int]
    global_mean: float


def make_synthetic(
    n_users: int = 300,
    n_items: int = 200,
    n_ratings: int = 15_000,
    rank: int = 4,
    n_genres: int = 8,
    n_cold: int = 20,
    noise: float = 0.3,
    seed: int = 0,
) -> Synthetic:
    """Ratings ``mu + b_u + b_i + u . v + noise``, rounded to 1..5, with taste driven by features.

    Item factors and biases are mostly a function of genres, user factors mostly a function of the
    user's codes, so a content model can predict items it never saw rated.
    """
    rng = np.random.default_rng(seed)
    genres = (rng.random((n_items, n_genres)) < 0.25).astype(np.float32)
    genres[np.arange(n_items), rng.integers(0, n_genres, n_items)] = 1.0  # at least one genre
    year = rng.random(n_items).astype(np.float32)
    genre_vec = rng.normal(0, 0.6, (n_genres, rank))
    v = genres @ genre_vec / np.sqrt(genres.sum(1, keepdims=True))
    v = v + rng.normal(0, 0.15, (n_items, rank))
    b_i = genres @ rng.normal(0, 0.35, n_genres) + 0.4 * (year - 0.5) + rng.normal(0, 0.1, n_items)

    cards = (5, 3, 6)  # codes 1..c-1 are used; 0 stays "unknown"
    codes = np.stack([rng.integers(1, c, n_users) for c in cards], axis=1)
    code_vec = [rng.normal(0, 0.5, (c, rank)) for c in cards]
    u = sum(code_vec[k][codes[:, k]] for k in range(3)) + rng.normal(0, 0.2, (n_users, rank))
    b_u = rng.normal(0, 0.3, n_users)

    # Distinct (user, item) pairs; every user and item has at least one (before splitting).
    flat = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    per_user = np.arange(n_users) * n_items + rng.integers(0, n_items, n_users)
    per_item = rng.integers(0, n_users, n_items) * n_items + np.arange(n_items)
    flat = np.unique(np.concatenate([flat, per_user, per_item]))
    uu, ii = flat // n_items, flat % n_items
    truth = 3.5 + b_u[uu] + b_i[ii] + np.einsum("ij,ij->i", u[uu], v[ii])
    rating = np.clip(np.round(truth + rng.normal(0, noise, truth.size)), 1, 5).astype(np.float32)
    user_idx, item_idx = (uu + 1).astype(np.int32), (ii + 1).astype(np.int32)

    cold_items = rng.choice(np.arange(1, n_items + 1), n_cold, replace=False).astype(np.int32)
    is_cold = np.isin(item_idx, cold_items)
    warm = np.flatnonzero(~is_cold)
    rng.shuffle(warm)
    n_test, n_val = len(warm) // 10, len(warm) // 10
    parts = {
        "test": warm[:n_test],
        "val": warm[n_test : n_test + n_val],
        "train": warm[n_test + n_val :],
    }

    def split(rows: np.ndarray) -> Split:
        return Split(user_idx[rows], item_idx[rows], rating[rows])

    item_features = np.zeros((n_items + 1, n_genres + 2), dtype=np.float32)
    item_features[1:, :n_genres] = genres
    item_features[1:, n_genres] = year
    item_features[0, n_genres + 1] = 1.0  # row 0: unknown, year missing
    user_features = np.zeros((n_users + 1, 3), dtype=np.int32)
    user_features[1:] = codes
    train = split(parts["train"])
    return Synthetic(
        n_users=n_users,
        n_items=n_items,
        train=train,
        val=split(parts["val"]),
        test=split(parts["test"]),
        cold=split(np.flatnonzero(is_cold)),
        cold_items=np.sort(cold_items),
        item_features=item_features,
        user_features=user_features,
        user_cardinalities=cards,
        global_mean=float(train.rating.mean()),
    )


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    """The default synthetic dataset (300 users x 200 items, ~15k ratings, rank 4)."""
    return make_synthetic()
