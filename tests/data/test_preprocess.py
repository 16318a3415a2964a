"""The preprocess stage: split invariants, id encoding, features, the output contract.

Data is built here (small, seeded, canonical form), except the ML-100K check, which reads the
original u1.base/u1.test read-only from the shared folder.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from library_helpers import save_vocabularies

from recommender.core.config import PreprocessConfig, RatingScale
from recommender.core.errors import ConfigError, DataError
from recommender.core.schema import Dataset, DatasetInfo, write_dataset
from recommender.dataset.features import GENRE_PREFIX, FeatureSpec, item_feature_matrix
from recommender.dataset.processed import FILES, load_processed, write_processed
from recommender.dataset.vocabulary import Vocabulary, load_vocabularies
from recommender.preprocess.split import preprocess

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["random", "temporal", "leave_last_n", "given"]
GENRES = ["Action", "Children's", "Comedy", "Drama", "Sci-Fi"]
N_USERS, N_ITEMS = 30, 40


def make_dataset(seed: int = 0, id_type: str = "int", given: bool = True, users: bool = True):
    """A small seeded dataset in canonical form, with the awkward cases built in.

    - user N_USERS + 1 has a single rating and no users row;
    - item N_ITEMS is rated but has no items row; items N_ITEMS + 1..+3 are never rated;
    - timestamps are coarse, so many ratings share one (ties);
    - with ``given``, user 1's ratings are all marked test (a cold test user).
    """
    rng = np.random.default_rng(seed)
    pairs = rng.choice(N_USERS * N_ITEMS, size=400, replace=False)
    user = np.append(pairs // N_ITEMS + 1, N_USERS + 1)
    item = np.append(pairs % N_ITEMS + 1, 1)
    n = len(user)
    ratings = pd.DataFrame(
        {
            "user_id": user.astype("int64"),
            "item_id": item.astype("int64"),
            "rating": rng.integers(1, 6, n).astype("float64"),
            "timestamp": (1_000_000_000 + rng.integers(0, 60, n) * 1000).astype("int64"),
        }
    )
    if given:
        test = (rng.random(n) < 0.2) | (ratings["user_id"] == 1).to_numpy()
        test[-1] = False  # the single-rating user trains
        ratings["given_split"] = np.where(test, "test", "train")
    item_ids = [*range(1, N_ITEMS), *range(N_ITEMS + 1, N_ITEMS + 4)]
    genres = ["|".join(rng.choice(GENRES, rng.integers(0, 4), replace=False)) for _ in item_ids]
    years = pd.array(rng.integers(1950, 2000, len(item_ids)), dtype="Int64")
    years[[2, 5]] = pd.NA
    items = pd.DataFrame(
        {"item_id": item_ids, "title": [f"t{i}" for i in item_ids], "genres": genres, "year": years}
    ).astype({"item_id": "int64"})
    users_df = None
    if users:
        ages = pd.array(rng.integers(10, 70, N_USERS), dtype="Int64")
        ages[3] = pd.NA
        gender = rng.choice(["F", "M"], N_USERS).astype(object)
        gender[4] = None
        users_df = pd.DataFrame(
            {
                "user_id": np.arange(1, N_USERS + 1, dtype="int64"),
                "age": ages,
                "gender": pd.array(gender, dtype="str"),
                "occupation": rng.choice(["artist", "doctor", "student"], N_USERS),
            }
        )
    if id_type == "str":
        ratings["user_id"] = ratings["user_id"].map("u{:03d}".format).astype("str")
        ratings["item_id"] = ratings["item_id"].map("i{:03d}".format).astype("str")
        items["item_id"] = items["item_id"].map("i{:03d}".format).astype("str")
        if users_df is not None:
            users_df["user_id"] = users_df["user_id"].map("u{:03d}".format).astype("str")
    info = DatasetInfo(
        source="synthetic",
        rating_scale=RatingScale(),
        id_type=id_type,
        has_users=users,
        has_given_split=given,
    )
    return Dataset(ratings=ratings, items=items, users=users_df, info=info)


def pairs(df: pd.DataFrame) -> set:
    return set(zip(df["user_id"].tolist(), df["item_id"].tolist(), strict=True))


def run(split: str = "random", seed: int = 42, data=None, **kw):
    cfg = PreprocessConfig(split=split, **kw)
    return preprocess(data if data is not None else make_dataset(), cfg, seed)


# --- splits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("id_type", ["int", "str"])
@pytest.mark.parametrize("split", METHODS)
def test_split_invariants(split, id_type):
    data = make_dataset(id_type=id_type)
    p = run(split, data=data)
    train, val, test = pairs(p.train), pairs(p.val), pairs(p.test)
    assert not (train | val) & test, "a (user, item) pair is in both train(+val) and test"
    assert not train & val
    assert train | val | test == pairs(data.ratings)
    assert len(p.train) + len(p.val) + len(p.test) == len(data.ratings)
    assert len(p.val) > 0 and len(p.test) > 0
    for part in (p.train, p.val, p.test):
        assert list(part.columns) == ["user_idx", "item_idx", "rating", "timestamp"] + [
            "user_id",
            "item_id",
        ]
        assert [str(t) for t in part.dtypes.iloc[:4]] == ["int32", "int32", "float32", "int64"]
    # Everything the model trains on is in the vocabulary.
    assert (p.train["user_idx"] > 0).all() and (p.train["item_idx"] > 0).all()
    assert p.summary["rows"] == {
        "train": len(p.train),
        "val": len(p.val),
        "test": len(p.test),
        "total": len(data.ratings),
    }


def test_random_split_sizes_follow_the_fractions():
    p = run("random", test_fraction=0.25, val_fraction=0.2)
    # A hash per rating: binomial counts, within 4 standard deviations of the fractions.
    n, p_val = 401, 0.75 * 0.2
    assert abs(len(p.test) - 0.25 * n) < 4 * np.sqrt(n * 0.25 * 0.75)
    assert abs(len(p.val) - p_val * n) < 4 * np.sqrt(n * p_val * (1 - p_val))


@pytest.mark.parametrize("split", ["random", "leave_last_n", "given"])
def test_a_ratings_side_depends_on_the_rating_not_on_the_row_order(split):
    data = make_dataset()
    p = run(split, data=data)
    shuffled = make_dataset()
    shuffled.ratings = shuffled.ratings.sample(frac=1, random_state=5).reset_index(drop=True)
    q = run(split, data=shuffled)
    for part in ("train", "val", "test"):
        assert pairs(getattr(p, part)) == pairs(getattr(q, part)), part
    # Another seed, another split.
    assert pairs(run(split, data=data, seed=7).val) != pairs(p.val)


def test_random_split_of_too_few_ratings_says_a_side_is_empty():
    data = make_dataset()
    data.ratings = data.ratings.iloc[:3]
    with pytest.raises(DataError, match="split empty"):
        run("random", data=data, test_fraction=0.01)


def test_temporal_split_has_no_training_rating_after_the_cut():
    p = run("temporal", test_fraction=0.3, val_fraction=0.2)
    cut = p.summary["temporal_cut"]
    assert p.train["timestamp"].max() <= cut and p.val["timestamp"].max() <= cut
    assert p.test["timestamp"].min() > cut
    # Ties all go one side: no timestamp appears in both train(+val) and test.
    assert not set(p.test["timestamp"]) & set(pd.concat([p.train, p.val])["timestamp"])
    # Val is the latest part of train.
    assert p.val["timestamp"].min() > p.train["timestamp"].max()


def test_temporal_split_refuses_timestamps_it_cannot_cut():
    data = make_dataset()
    data.ratings["timestamp"] = 0
    with pytest.raises(ConfigError, match="temporal"):
        run("temporal", data=data)


def test_leave_last_n_puts_each_users_latest_ratings_in_test():
    data = make_dataset()
    p = run("leave_last_n", data=data, n_last=2)
    rest = pd.concat([p.train, p.val])
    counts = data.ratings.groupby("user_id").size()
    for user, n_user in counts.items():
        mine = p.test[p.test["user_id"] == user]
        assert len(mine) == min(2, n_user - 1), user
        if len(mine):
            assert mine["timestamp"].min() >= rest.loc[rest["user_id"] == user, "timestamp"].max()
    # The single-rating user keeps it for training.
    assert (p.train["user_id"] == N_USERS + 1).sum() == 1
    # Timestamp ties are broken the same way whatever the input row order.
    shuffled = make_dataset()
    shuffled.ratings = shuffled.ratings.sample(frac=1, random_state=3).reset_index(drop=True)
    assert pairs(run("leave_last_n", data=shuffled, n_last=2).test) == pairs(p.test)


def test_given_split_follows_the_column():
    data = make_dataset()
    p = run("given", data=data)
    marked = data.ratings[data.ratings["given_split"] == "test"]
    assert pairs(p.test) == pairs(marked)


def test_given_split_without_the_column_explains_why():
    data = make_dataset(given=False)
    with pytest.raises(ConfigError) as err:
        run("given", data=data)
    message = str(err.value)
    assert "given_split" in message and "no canonical" in message
    assert "ml100k_fold" in message and "csv.test_path" in message


def test_given_split_rejects_an_unknown_label_naming_the_row():
    data = make_dataset()
    data.ratings.loc[7, "given_split"] = "holdout"
    with pytest.raises(DataError, match=r"line 8, column 'given_split'.*'holdout'"):
        run("given", data=data)


def test_repeated_pairs_are_refused_before_they_can_leak():
    data = make_dataset()
    data.ratings = pd.concat([data.ratings, data.ratings.iloc[[0]]], ignore_index=True)
    with pytest.raises(DataError, match="repeat a \\(user_id, item_id\\) pair"):
        run("random", data=data)


def test_unseen_test_users_and_items_are_kept_encoded_to_zero_and_counted():
    data = make_dataset()
    p = run("given", data=data)
    seen_users = set(p.train["user_id"])
    seen_items = set(p.train["item_id"])
    unseen_user = ~p.test["user_id"].isin(seen_users)
    unseen_item = ~p.test["item_id"].isin(seen_items)
    assert 1 in set(p.test["user_id"]) and 1 not in seen_users  # user 1 is test-only
    assert len(p.test) == (data.ratings["given_split"] == "test").sum()  # nothing dropped
    assert (p.test.loc[unseen_user, "user_idx"] == 0).all()
    assert (p.test.loc[~unseen_user, "user_idx"] > 0).all()
    assert (p.test.loc[unseen_item, "item_idx"] == 0).all()
    cold = p.summary["test"]
    assert cold["unknown_user_rows"] == unseen_user.sum() > 0
    assert cold["unknown_item_rows"] == unseen_item.sum()
    assert cold["cold_users"] == p.test.loc[unseen_user, "user_id"].nunique()
    assert cold["cold_items"] == p.test.loc[unseen_item, "item_id"].nunique()
    assert p.summary["n_users"] == len(seen_users) and p.summary["n_items"] == len(seen_items)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    def files(seed: int, name: str) -> dict[str, bytes]:
        write_processed(run("random", seed=seed), tmp_path / name, tmp_path / f"{name}.json")
        out = {f: (tmp_path / name / f).read_bytes() for f in FILES}
        return out | {"summary": (tmp_path / f"{name}.json").read_bytes()}

    first, again, other = files(42, "a"), files(42, "b"), files(7, "c")
    assert first == again
    assert first["test.parquet"] != other["test.parquet"]
    assert pairs(run("random", seed=42).test) != pairs(run("random", seed=7).test)


# --- vocabulary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, unknown", [([30, 10, 20, 10, 7], [99, "10"]), (["b", "a", "c", "a"], ["z", 1])]
)
def test_vocabulary_round_trip(ids, unknown):
    vocab = Vocabulary.from_ids(ids)
    known = sorted(set(ids))
    assert len(vocab) == len(known) + 1
    codes = vocab.encode(ids)
    assert codes.dtype == np.int32
    assert list(vocab.encode(known)) == list(range(1, len(known) + 1))  # sorted raw order
    assert list(vocab.decode(codes)) == list(ids)
    assert list(vocab.encode(unknown)) == [0, 0]
    # The service's one-id lookup gives the same indices, unknown and wrong-typed ids 0.
    assert [vocab.index_of(i) for i in [*ids, *unknown]] == list(vocab.encode([*ids, *unknown]))
    assert vocab.decode([0])[0] is None
    with pytest.raises(IndexError):
        vocab.decode([len(vocab)])


@pytest.mark.parametrize("ids", [[5, 3, 11], ["u2", "u10", "u1"]])
def test_vocabulary_json_round_trip_keeps_id_types(ids, tmp_path):
    vocab = Vocabulary.from_ids(ids)
    back = Vocabulary.from_json(json.loads(json.dumps(vocab.to_json())))
    assert back == vocab
    assert [type(i) for i in back.ids] == [type(ids[0])] * len(ids)
    assert list(back.encode(ids)) == list(vocab.encode(ids))
    save_vocabularies(vocab, vocab, tmp_path / "vocab.json")
    user, _ = load_vocabularies(tmp_path / "vocab.json")
    assert user == vocab and json.loads((tmp_path / "vocab.json").read_text())["user"][0] is None


def test_vocabulary_rejects_malformed_tables(tmp_path):
    with pytest.raises(ValueError, match="null"):
        Vocabulary.from_json([1, 2])
    with pytest.raises(ValueError, match="all int or all str"):
        Vocabulary.from_json([None, 1, "a"])
    with pytest.raises(ValueError, match="nulls"):
        Vocabulary.from_ids([1, None])
    (tmp_path / "vocab.json").write_text('{"user": [null, 2, 1], "item": [null]}')
    with pytest.raises(DataError, match="vocab.json: not a valid vocabulary"):
        load_vocabularies(tmp_path / "vocab.json")


# --- features -----------------------------------------------------------------------------------


def test_item_features_multi_hot_year_and_cold_items():
    data = make_dataset()
    p = run("given", data=data)
    f = p.item_features
    genre_cols = [c for c in f.columns if c.startswith(GENRE_PREFIX)]
    assert genre_cols == [GENRE_PREFIX + g for g in sorted(GENRES)]
    assert (f[genre_cols].dtypes == "float32").all()
    # One row per catalog item: the items table plus the rated item missing from it.
    catalog = set(data.items["item_id"]) | set(data.ratings["item_id"])
    assert sorted(f["item_id"]) == sorted(catalog) and f["item_id"].is_unique
    by_id = f.set_index("item_id")
    for item_id, genres in zip(data.items["item_id"], data.items["genres"], strict=True):
        expected = {GENRE_PREFIX + g for g in genres.split("|") if g}
        row = by_id.loc[item_id, genre_cols]
        assert set(row[row == 1.0].index) == expected and set(row.unique()) <= {0.0, 1.0}
    assert by_id.loc[N_ITEMS, genre_cols].sum() == 0 and by_id.loc[N_ITEMS, "year_missing"] == 1
    # Never-rated items are present, as cold items.
    for cold in range(N_ITEMS + 1, N_ITEMS + 4):
        assert by_id.loc[cold, "item_idx"] == 0
    assert list(f["item_idx"]) == list(p.item_vocab.encode(f["item_id"]))
    known_year = f["year_missing"] == 0
    assert (f.loc[~known_year, "year_norm"] == 0).all() and (~known_year).sum() == 3
    assert abs(f.loc[known_year, "year_norm"].mean()) < 1e-5
    assert abs(f.loc[known_year, "year_norm"].std(ddof=0) - 1) < 1e-5
    matrix = item_feature_matrix(f, p.feature_spec, len(p.item_vocab))
    assert matrix.shape == (len(p.item_vocab), len(p.feature_spec.item_columns))
    some = f[f["item_idx"] > 0].iloc[[0]]
    row = matrix[int(some["item_idx"].iloc[0])]
    assert row.tolist() == some[p.feature_spec.item_columns].iloc[0].tolist()
    assert matrix[0].tolist() == [0.0] * (matrix.shape[1] - 1) + [1.0]  # OOV: nothing known


def test_user_features_codes_and_spec_round_trip():
    data = make_dataset()
    p = run("given", data=data)
    spec = FeatureSpec.from_json(json.loads(json.dumps(p.feature_spec.to_json())))
    assert spec == p.feature_spec
    table = p.feature_spec.to_json()["user"]
    u = p.user_features.set_index("user_id")
    raw = data.users.set_index("user_id")
    for user_id in raw.index:
        gender = raw.loc[user_id, "gender"]
        code = u.loc[user_id, "gender"]
        assert table["gender"][code] == (None if pd.isna(gender) else gender)
        assert table["occupation"][u.loc[user_id, "occupation"]] == raw.loc[user_id, "occupation"]
    assert u.loc[4, "age_bucket"] == 0  # missing age
    assert u.loc[N_USERS + 1, ["age_bucket", "gender", "occupation"]].tolist() == [0, 0, 0]
    new = pd.DataFrame(
        {"user_id": [999, 998], "age": [17, 56], "gender": ["M", "X"], "occupation": ["doctor", ""]}
    )
    coded = spec.encode_users(new)
    assert coded["age_bucket"].tolist() == [1, 7]
    assert coded["gender"].tolist() == [table["gender"].index("M"), 0]
    assert coded["occupation"].tolist() == [table["occupation"].index("doctor"), 0]


def test_without_users_the_user_table_is_empty_with_the_id_columns():
    p = run("random", data=make_dataset(users=False, given=False))
    assert list(p.user_features.columns) == ["user_id", "user_idx"] and p.user_features.empty
    assert p.feature_spec.user_columns == []


# --- the stage entry point ----------------------------------------------------------------------


def test_entry_point_writes_the_contract_and_keeps_it_on_failure(tmp_path):
    write_dataset(make_dataset(given=False), tmp_path / "interim")
    (tmp_path / "params.yaml").write_text("seed: 3\npreprocess:\n  split: temporal\n")
    out, summary = tmp_path / "processed", tmp_path / "reports" / "data.json"
    argv = ["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "interim")]
    argv += ["--out", str(out), "--summary", str(summary)]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "pipeline" / "preprocess.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == sorted(FILES)
    metrics = json.loads(summary.read_text())
    assert metrics["split"] == "temporal" and metrics["rows"]["total"] == 401
    assert set(metrics) == {  # and nothing else: no wall-clock time, so reruns are byte-equal
        "split",
        "seed",
        "rows",
        "n_users",
        "n_items",
        "catalog_items",
        "cold_catalog_items",
        "density",
        "test",
        "val",
        "temporal_cut",
    }
    loaded = load_processed(out)
    assert len(loaded.train) == metrics["rows"]["train"]
    assert len(loaded.user_vocab) == metrics["n_users"] + 1
    assert loaded.info.source == "synthetic" and loaded.train["user_idx"].dtype == np.int32

    # A failing run (split: given on data without a given split) leaves the old output as it was.
    before = {f: (out / f).read_bytes() for f in FILES}
    (tmp_path / "params.yaml").write_text("preprocess:\n  split: given\n")
    main = runpy.run_path(str(ROOT / "pipeline" / "preprocess.py"))["main"]
    assert main(argv) == 1
    assert {f: (out / f).read_bytes() for f in FILES} == before


# --- the real MovieLens-100K --------------------------------------------------------------------


def _ml100k(folder: Path) -> Dataset:
    cols = ["user_id", "item_id", "rating", "timestamp"]
    parts = []
    for name in ("train", "test"):
        df = pd.read_csv(folder / f"u1.{'base' if name == 'train' else name}", sep="\t", names=cols)
        parts.append(df.assign(given_split=name))
    ratings = pd.concat(parts, ignore_index=True).astype({"rating": "float64"})
    genre_names = pd.read_csv(folder / "u.genre", sep="|", names=["name", "i"])["name"].tolist()
    raw = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1")
    flags = raw.iloc[:, 5:].to_numpy().astype(bool)
    items = pd.DataFrame(
        {
            "item_id": raw[0].astype("int64"),
            "title": raw[1].astype("str"),
            "genres": ["|".join(np.array(genre_names)[row]) for row in flags],
            "year": pd.to_datetime(raw[2], format="%d-%b-%Y").dt.year.astype("Int64"),
        }
    )
    users = pd.read_csv(
        folder / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"]
    ).drop(columns="zip")
    info = DatasetInfo(
        source="movielens-100k",
        rating_scale=RatingScale(),
        has_users=True,
        has_given_split=True,
    )
    return Dataset(ratings=ratings, items=items, users=users.astype({"age": "Int64"}), info=info)


def test_movielens_100k_u1_given_split(ml100k_dir: Path):
    data = _ml100k(ml100k_dir)
    # With no validation rows the vocabulary is all of u1.base: the published u1 figures.
    p = run("given", data=data, val_fraction=0.0)
    assert p.summary["rows"] == {"train": 80_000, "val": 0, "test": 20_000, "total": 100_000}
    assert (p.summary["n_users"], p.summary["n_items"]) == (943, 1650)
    cold = p.summary["test"]
    assert (cold["cold_users"], cold["unknown_user_rows"]) == (0, 0)
    assert (cold["cold_items"], cold["unknown_item_rows"]) == (32, 32)
    assert len(p.item_features) == 1682 and p.summary["cold_catalog_items"] == 32
    assert p.item_features.filter(like=GENRE_PREFIX).shape[1] == 19
    assert len(p.user_features) == 943 and (p.user_features["gender"] > 0).all()

    # With the default val_fraction, val comes out of u1.base only.
    p = run("given", data=data, val_fraction=0.1)
    rows = p.summary["rows"]
    assert (rows["test"], rows["total"], rows["train"] + rows["val"]) == (20_000, 100_000, 80_000)
    assert abs(rows["val"] - 8_000) < 4 * np.sqrt(80_000 * 0.1 * 0.9)  # a hash: binomial
    assert pairs(p.test) == pairs(data.ratings[data.ratings["given_split"] == "test"])
