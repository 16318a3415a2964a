"""Side features for content-aware models: item genres and year, user demographics.

A :class:`FeatureSpec` is fitted once on the catalog (items table) and the users table, written as
``features.json``, and then used to encode rows. The preprocess stage encodes the whole catalog with
it; a service encodes a new user's or item's raw attributes with the same object, so both sides
agree on column order, genre names, the year scaling and the categorical code tables.

Every categorical code table is a list whose position is the code, with position 0 reserved for
"unknown" (``null`` in JSON), like the id vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.schema import GENRE_SEP, ITEM, USER

#: Age bucket boundaries (MovieLens-1M's groups): <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_EDGES: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
AGE_LABELS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
USER_FEATURE_COLUMNS: tuple[str, ...] = ("age_bucket", "gender", "occupation")
GENRE_PREFIX = "genre_"


def _categories(values: pd.Series | None) -> tuple[str, ...]:
    """Sorted distinct non-empty strings of ``values`` (the codes 1..n of a code table)."""
    if values is None:
        return ()
    clean = values.dropna().astype(str).str.strip()
    return tuple(sorted(set(clean[clean != ""])))


def _codes(values: pd.Series, table: tuple[str, ...]) -> np.ndarray:
    """Map strings to 1..n by their position in ``table``; missing or unseen values get 0."""
    clean = values.astype("object").where(values.notna(), None)
    clean = pd.Series([v.strip() if isinstance(v, str) else v for v in clean], dtype="object")
    codes = pd.Categorical(clean, categories=list(table)).codes
    return (codes.astype(np.int32) + 1).astype(np.int32)


def split_genres(genres: pd.Series) -> pd.Series:
    """Split ``"|"``-joined genre strings into lists (``""`` or missing -> ``[]``)."""
    return genres.fillna("").astype(str).map(lambda s: [g for g in s.split(GENRE_SEP) if g])


@dataclass(frozen=True)
class FeatureSpec:
    """How raw item and user attributes become model features.

    Attributes:
        genres: Genre names in column order (sorted); column ``genre_<name>`` is a 0/1 flag.
        year_mean: Mean release year over catalog items with a known year.
        year_std: Their standard deviation (1 when it would be 0), for ``year_norm``.
        genders: Gender code table without the unknown slot: code ``i + 1`` is ``genders[i]``.
        occupations: Occupation code table, same convention.
        has_users: Whether the source had a users table at all.

    Example:
        >>> spec = FeatureSpec.fit(items, users)
        >>> spec.encode_items(items)[spec.item_columns].to_numpy()
        >>> spec.encode_users(pd.DataFrame({"user_id": [7], "age": [30], ...}))
    """

    genres: tuple[str, ...]
    year_mean: float
    year_std: float
    genders: tuple[str, ...] = ()
    occupations: tuple[str, ...] = ()
    has_users: bool = False

    @classmethod
    def fit(cls, items: pd.DataFrame, users: pd.DataFrame | None) -> FeatureSpec:
        """Learn genre names, year scaling and code tables from the catalog and users table."""
        genres = tuple(sorted({g for gs in split_genres(items["genres"]) for g in gs}))
        years = pd.to_numeric(items["year"], errors="coerce").astype("float64").dropna()
        mean = float(years.mean()) if len(years) else 0.0
        std = float(years.std(ddof=0)) if len(years) else 0.0
        return cls(
            genres=genres,
            # Rounded so features.json (and the parquet bytes that depend on it) are stable.
            year_mean=round(mean, 6),
            year_std=round(std, 6) if std > 0 else 1.0,
            genders=_categories(users["gender"]) if users is not None else (),
            occupations=_categories(users["occupation"]) if users is not None else (),
            has_users=users is not None,
        )

    @property
    def item_columns(self) -> list[str]:
        """Item feature columns in model order."""
        return [GENRE_PREFIX + g for g in self.genres] + ["year_norm", "year_missing"]

    @property
    def user_columns(self) -> list[str]:
        """User feature columns (small int codes, 0 = unknown)."""
        return list(USER_FEATURE_COLUMNS) if self.has_users else []

    def encode_items(self, items: pd.DataFrame) -> pd.DataFrame:
        """Encode raw items (``item_id``, ``genres``, ``year``) into :attr:`item_columns`.

        Genres not in :attr:`genres` are ignored (a model has no weight for them); a missing year
        gives ``year_norm`` 0 and ``year_missing`` 1.
        """
        n = len(items)
        multi_hot = np.zeros((n, len(self.genres)), dtype=np.float32)
        position = {g: j for j, g in enumerate(self.genres)}
        for i, names in enumerate(split_genres(items["genres"]).tolist()):
            for g in names:
                if g in position:
                    multi_hot[i, position[g]] = 1.0
        year = pd.to_numeric(items["year"], errors="coerce").astype("float64").to_numpy()
        missing = np.isnan(year)
        year_norm = np.where(missing, 0.0, (year - self.year_mean) / self.year_std)
        out = pd.DataFrame({ITEM: items[ITEM].to_numpy()})
        for j, g in enumerate(self.genres):
            out[GENRE_PREFIX + g] = multi_hot[:, j]
        out["year_norm"] = year_norm.astype(np.float32)
        out["year_missing"] = missing.astype(np.float32)
        return out

    def encode_users(self, users: pd.DataFrame) -> pd.DataFrame:
        """Encode raw users (``user_id``, ``age``, ``gender``, ``occupation``) into codes.

        ``age_bucket`` is 1..7 for the :data:`AGE_LABELS` groups; a missing or non-positive age,
        or a gender/occupation absent from the code tables, gets 0.
        """
        age = pd.to_numeric(users["age"], errors="coerce").astype("float64").to_numpy()
        bucket = np.searchsorted(np.asarray(AGE_EDGES, dtype=float), age, side="right") + 1
        bucket = np.where(np.isnan(age) | (age <= 0), 0, bucket).astype(np.int32)
        return pd.DataFrame(
            {
                USER: users[USER].to_numpy(),
                "age_bucket": bucket,
                "gender": _codes(users["gender"], self.genders),
                "occupation": _codes(users["occupation"], self.occupations),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready description written as ``features.json``."""
        return {
            "item": {
                "columns": self.item_columns,
                "genres": list(self.genres),
                "year_mean": self.year_mean,
                "year_std": self.year_std,
            },
            "user": {
                "columns": self.user_columns,
                "age_bucket": {"edges": list(AGE_EDGES), "labels": [None, *AGE_LABELS]},
                "gender": [None, *self.genders],
                "occupation": [None, *self.occupations],
            },
            "has_users": self.has_users,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureSpec:
        """Rebuild the spec from :meth:`to_json`'s output."""
        return cls(
            genres=tuple(d["item"]["genres"]),
            year_mean=float(d["item"]["year_mean"]),
            year_std=float(d["item"]["year_std"]),
            genders=tuple(d["user"]["gender"][1:]),
            occupations=tuple(d["user"]["occupation"][1:]),
            has_users=bool(d["has_users"]),
        )


def catalog_items(items: pd.DataFrame, rated_item_ids: pd.Series) -> pd.DataFrame:
    """Every item in the items table plus any rated item missing from it, sorted by ``item_id``.

    Rated items without an items row get their id as title, no genres and an unknown year.
    """
    items = items[[ITEM, "title", "genres", "year"]]
    extra = pd.Index(rated_item_ids.unique()).difference(pd.Index(items[ITEM]))
    if len(extra):
        filler = pd.DataFrame(
            {
                ITEM: extra.to_numpy(),
                "title": [str(i) for i in extra],
                "genres": [""] * len(extra),
                "year": pd.Series([pd.NA] * len(extra), dtype="Int64"),
            }
        )
        items = pd.concat([items, filler], ignore_index=True)
    return items.sort_values(ITEM, kind="stable").reset_index(drop=True)


def catalog_users(users: pd.DataFrame, rated_user_ids: pd.Series) -> pd.DataFrame:
    """Every user in the users table plus any rater missing from it, sorted by ``user_id``."""
    extra = pd.Index(rated_user_ids.unique()).difference(pd.Index(users[USER]))
    if len(extra):
        filler = pd.DataFrame({USER: extra.to_numpy()})
        users = pd.concat([users, filler], ignore_index=True)
    return users.sort_values(USER, kind="stable").reset_index(drop=True)


def item_feature_matrix(item_features: pd.DataFrame, spec: FeatureSpec, n_rows: int) -> np.ndarray:
    """Item features as a float32 table indexed by ``item_idx`` (for a Keras lookup).

    Row 0 (the OOV row) and rows of indices with no catalog entry are zeros except
    ``year_missing`` = 1, i.e. "nothing known".

    Args:
        item_features: The ``item_features.parquet`` table.
        spec: The spec that produced it.
        n_rows: The item vocabulary size (``len(item_vocab)``).
    """
    cols = spec.item_columns
    matrix = np.zeros((n_rows, len(cols)), dtype=np.float32)
    matrix[:, cols.index("year_missing")] = 1.0
    known = item_features[item_features["item_idx"] > 0]
    matrix[known["item_idx"].to_numpy()] = known[cols].to_numpy(dtype=np.float32)
    return matrix


def user_feature_matrix(
    user_features: pd.DataFrame, spec: FeatureSpec, n_rows: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """User feature codes as an int32 table indexed by ``user_idx``, with each column's cardinality.

    Row 0 (the OOV row) and users with no entry are all zeros ("unknown"). Returns an empty
    ``(n_rows, 0)`` table and ``()`` when the source has no users.

    Args:
        user_features: The ``user_features.parquet`` table.
        spec: The spec that produced it.
        n_rows: The user vocabulary size (``len(user_vocab)``).
    """
    cols = spec.user_columns
    matrix = np.zeros((n_rows, len(cols)), dtype=np.int32)
    if not cols:
        return matrix, ()
    known = user_features[user_features["user_idx"] > 0]
    matrix[known["user_idx"].to_numpy()] = known[cols].to_numpy(dtype=np.int32)
    cardinalities = (len(AGE_LABELS) + 1, len(spec.genders) + 1, len(spec.occupations) + 1)
    return matrix, cardinalities
