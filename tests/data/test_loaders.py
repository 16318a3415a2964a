"""Each source's reader: the real ML-100K, tiny files in the other MovieLens formats, user CSVs,
duplicate policies and the download path (against a local HTTP server)."""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recommender.core.config import RatingScale, parse_params
from recommender.core.schema import (
    ITEM_COLUMNS,
    RATING_COLUMNS,
    USER_COLUMNS,
    read_dataset,
    write_dataset,
)
from recommender.data import download as dl
from recommender.data import load_dataset


def _params(**sections):
    return parse_params(sections)


# --- MovieLens 100K (the real files, read in place) ------------------------------------------


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path):
    return load_dataset(_params(data={"source": "movielens-100k", "path": str(ml100k_dir)}))


def test_ml100k_counts_and_given_split(ml100k):
    r = ml100k.ratings
    assert len(r) == 100_000
    assert r["user_id"].nunique() == 943 and r["item_id"].nunique() == 1682
    assert list(r.columns) == [*RATING_COLUMNS, "given_split"]
    assert [str(t) for t in r.dtypes[:4]] == ["int64", "int64", "float64", "int64"]
    assert r["given_split"].value_counts().to_dict() == {"train": 80_000, "test": 20_000}
    assert ml100k.info.has_given_split and ml100k.info.has_users
    assert ml100k.info.rating_scale == RatingScale(min=1, max=5, step=1)


def test_ml100k_given_split_matches_u1_test(ml100k, ml100k_dir: Path):
    test = pd.read_csv(ml100k_dir / "u1.test", sep="\t", names=["user_id", "item_id", "r", "t"])
    marked = ml100k.ratings[ml100k.ratings["given_split"] == "test"]
    pairs = set(zip(marked["user_id"], marked["item_id"], strict=True))
    assert pairs == set(zip(test["user_id"], test["item_id"], strict=True))


def test_ml100k_items_and_users(ml100k):
    items = ml100k.items.set_index("item_id")
    assert len(items) == 1682 and list(ml100k.items.columns) == ITEM_COLUMNS
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[1, "year"] == 1995
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "year"])
    assert items.loc[267, "genres"] == ""  # MovieLens' "unknown" genre means none
    assert items["year"].notna().sum() == 1681
    assert items["genres"].str.split("|").explode().nunique() == 19  # 18 genres + ""
    users = ml100k.users.set_index("user_id")
    assert list(ml100k.users.columns) == USER_COLUMNS and len(users) == 943
    assert users.loc[1].to_dict() == {"age": 24, "gender": "M", "occupation": "technician"}


#: The files of ML-100K that are not canonical folds (u1.base ... ub.test).
ML100K_CORE = ("u.data", "u.item", "u.user", "u.genre", "u.occupation", "u.info", "README")


def _link_ml100k(src: Path, dest: Path, with_folds: bool = True) -> Path:
    """A folder of symlinks to the shared ML-100K files (links, not copies: license).

    Without folds it holds exactly :data:`ML100K_CORE`, whatever else the shared folder has.
    """
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if with_folds or f.name in ML100K_CORE:
            (dest / f.name).symlink_to(f)
    return dest


def test_ml100k_is_found_in_the_archive_folder_under_the_default_path(
    ml100k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _link_ml100k(ml100k_dir, tmp_path / "data" / "raw" / "movielens-100k" / "ml-100k")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(_params(data={"source": "movielens-100k", "download": False}))
    assert len(ds.ratings) == 100_000


def test_ml100k_without_fold_files_has_no_given_split(ml100k_dir: Path, tmp_path: Path):
    folder = _link_ml100k(ml100k_dir, tmp_path / "ml", with_folds=False)
    ds = load_dataset(_params(data={"source": "movielens-100k", "path": str(folder)}))
    assert "given_split" not in ds.ratings.columns and not ds.info.has_given_split
    # Asking for a fold that is absent is not an error either.
    ds2 = load_dataset(
        _params(
            data={"source": "movielens-100k", "path": str(folder)}, ingest={"ml100k_fold": "u3"}
        )
    )
    assert "given_split" not in ds2.ratings.columns


# --- MovieLens 1M, latest-small, 25M: tiny files in the real formats -------------------------


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_ml1m_reader(tmp_path: Path):
    folder = tmp_path / "raw" / "ml-1m"  # the archive's own folder, found under data.path
    _write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::2::4::9783\n")
    _write(
        folder / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "2::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    _write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_dataset(_params(data={"source": "movielens-1m", "path": str(tmp_path / "raw")}))
    assert ds.ratings.to_dict("list") == {
        "user_id": [1, 1, 2],
        "item_id": [1193, 661, 2],
        "rating": [5.0, 3.0, 4.0],
        "timestamp": [978300760, 978302109, 9783],
    }
    items = ds.items.set_index("item_id")
    assert items.loc[2, "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert items.loc[661, "title"] == "Star Wars: Episode IV - A New Hope (1977)"  # ':' kept
    assert items.loc[661, "genres"] == "Action|Sci-Fi"
    assert items["year"].tolist() == [1975, 1977, 1995]
    users = ds.users.set_index("user_id")
    assert users.loc[1].to_dict() == {"age": 1, "gender": "F", "occupation": "K-12 student"}
    assert users.loc[2, "occupation"] == "self-employed"
    assert ds.info.source == "movielens-1m" and ds.info.has_users


@pytest.mark.parametrize("source", ["movielens-latest-small", "movielens-25m"])
def test_csv_era_readers(tmp_path: Path, source: str):
    _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n2,6,0.5,964982224\n",
    )
    _write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "6,Amélie (Fabuleux destin d'Amélie Poulain  Le) (2001),(no genres listed)\n"
        "7,Planet Earth (2006–2007),Documentary\n"
        "9,Babylon 5 ,Sci-Fi\n",
    )
    ds = load_dataset(_params(data={"source": source, "path": str(tmp_path)}))
    assert ds.ratings["rating"].tolist() == [4.0, 3.5, 0.5]
    assert ds.info.rating_scale == RatingScale(min=0.5, max=5.0, step=0.5)
    assert ds.users is None and not ds.info.has_users
    items = ds.items.set_index("item_id")
    assert items.loc[3, "title"] == "American President, The (1995)"
    assert items.loc[6, "genres"] == "" and items.loc[6, "title"].startswith("Amélie")
    assert items.loc[6, "year"] == 2001 and items.loc[7, "year"] == 2006
    assert items.loc[9, "title"] == "Babylon 5" and pd.isna(items.loc[9, "year"])


# --- user CSV files -----------------------------------------------------------------------


def test_csv_with_header_and_custom_columns(tmp_path: Path):
    f = _write(tmp_path / "r.csv", "ts;stars;uid;mid;extra\n100;4;1;10;x\n200;2.5;2;10;y\n")
    ds = load_dataset(
        _params(
            data={"source": "csv", "path": str(f)},
            csv={
                "sep": ";",
                "columns": {
                    "user_id": "uid",
                    "item_id": "mid",
                    "rating": "stars",
                    "timestamp": "ts",
                },
            },
        )
    )
    assert ds.ratings.to_dict("list") == {
        "user_id": [1, 2],
        "item_id": [10, 10],
        "rating": [4.0, 2.5],
        "timestamp": [100, 200],
    }
    assert ds.items[["item_id", "title", "genres"]].to_dict("list") == {
        "item_id": [10],
        "title": ["10"],
        "genres": [""],
    }
    assert ds.items["year"].isna().all() and str(ds.items["year"].dtype) == "Int64"
    assert ds.users is None and ds.info.source == "csv" and not ds.info.has_given_split


def test_csv_with_a_byte_order_mark(tmp_path: Path):
    f = tmp_path / "r.csv"
    f.write_bytes(b"\xef\xbb\xbfuser_id,item_id,rating,timestamp\n1,10,4,100\n")
    ds = load_dataset(_params(data={"source": "csv", "path": str(f)}))
    assert ds.ratings["user_id"].tolist() == [1]


def test_csv_without_header_or_timestamps(tmp_path: Path):
    f = _write(tmp_path / "r.tsv", "1\t10\t4\n2\t11\t3\n")
    ds = load_dataset(
        _params(
            data={"source": "csv", "path": str(f)},
            csv={"sep": "\t", "header": False, "columns": {"timestamp": None}},
        )
    )
    assert ds.ratings["timestamp"].tolist() == [0, 0]
    assert str(ds.ratings["timestamp"].dtype) == "int64"
    assert ds.ratings["item_id"].tolist() == [10, 11]


def test_csv_with_text_ids_and_a_test_file(tmp_path: Path):
    train = _write(
        tmp_path / "train.csv", "user_id,item_id,rating,timestamp\nu1,m1,4,1\nu2,m1,5,2\n"
    )
    test = _write(tmp_path / "test.csv", "user_id,item_id,rating,timestamp\nu1,m2,3,3\n")
    ds = load_dataset(
        _params(
            data={"source": "csv", "path": str(train)},
            csv={"id_type": "str", "test_path": str(test)},
        )
    )
    r = ds.ratings
    assert r["user_id"].tolist() == ["u1", "u2", "u1"]
    assert pd.api.types.is_string_dtype(r["item_id"])
    assert r["given_split"].tolist() == ["train", "train", "test"]
    assert ds.info.id_type == "str" and ds.info.has_given_split
    assert sorted(ds.items["item_id"]) == ["m1", "m2"]


def test_csv_items_file(tmp_path: Path):
    ratings = _write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n1,10,4,1\n1,11,3,2\n")
    items = _write(
        tmp_path / "items.csv",
        'item_id,title,genres,year\n10,"Heat, The",Crime|Drama,1995\n12,Unrated,,\n',
    )
    ds = load_dataset(
        _params(data={"source": "csv", "path": str(ratings)}, csv={"items_path": str(items)})
    )
    got = ds.items.set_index("item_id")
    assert got.loc[10].to_dict() == {"title": "Heat, The", "genres": "Crime|Drama", "year": 1995}
    assert got.loc[12, "genres"] == "" and pd.isna(got.loc[12, "year"])
    # A rated item missing from the items file still gets a (bare) row.
    assert got.loc[11, "title"] == "11" and pd.isna(got.loc[11, "year"])


def test_rating_scale_override_is_recorded(tmp_path: Path):
    f = _write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n1,10,9,1\n")
    scale = {"min": 1.0, "max": 10.0, "step": 1.0}
    ds = load_dataset(_params(data={"source": "csv", "path": str(f), "rating_scale": scale}))
    assert ds.info.rating_scale == RatingScale(**scale)
    write_dataset(ds, tmp_path / "out")
    assert read_dataset(tmp_path / "out").info.rating_scale == RatingScale(**scale)


# --- duplicate (user, item) pairs --------------------------------------------------------

DUPES = "user_id,item_id,rating,timestamp\n1,10,4,100\n2,10,3,10\n1,10,2,50\n1,10,5,200\n"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("error", [(1, 10, 4.0, 100), (2, 10, 3.0, 10), (1, 10, 2.0, 50), (1, 10, 5.0, 200)]),
        ("keep_first", [(2, 10, 3.0, 10), (1, 10, 2.0, 50)]),
        ("keep_last", [(2, 10, 3.0, 10), (1, 10, 5.0, 200)]),
        ("mean", [(1, 10, 11 / 3, 200), (2, 10, 3.0, 10)]),
    ],
)
def test_duplicate_policies(tmp_path: Path, policy: str, expected):
    f = _write(tmp_path / "r.csv", DUPES)
    ds = load_dataset(
        _params(data={"source": "csv", "path": str(f)}, ingest={"duplicates": policy})
    )
    assert [str(t) for t in ds.ratings.dtypes] == ["int64", "int64", "float64", "int64"]
    got = list(ds.ratings[RATING_COLUMNS].itertuples(index=False, name=None))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[:2] == e[:2] and math.isclose(g[2], e[2]) and g[3] == e[3]
    merged = ds.info.extra.get("duplicates_merged", 0)
    assert merged == (0 if policy == "error" else 2)


# --- download (real HTTP on 127.0.0.1) ---------------------------------------------------

GENRES_19 = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]  # fmt: skip


def tiny_ml100k_zip() -> bytes:
    """A valid ML-100K archive in miniature (ml-100k/ with u.data, u.item, u.user, u.genre)."""
    flags = ["0"] * 19
    flags[5] = "1"  # Comedy
    files = {
        "u.data": "1\t1\t5\t881250949\n2\t1\t3\t891717742\n2\t2\t4\t878887116\n",
        "u.item": "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n"
        "2|Heat (1995)|15-Dec-1995||http://y|" + "|".join(["0"] * 19) + "\n",
        "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
        "u.genre": "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_19)) + "\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/", "")
        for name, text in files.items():
            zf.writestr(f"ml-100k/{name}", text.encode("latin-1"))
    return buf.getvalue()


def test_fetch_archive_verifies_and_unpacks(http_server, tmp_path: Path):
    www, base = http_server
    data = tiny_ml100k_zip()
    (www / "tiny.zip").write_bytes(data)
    archive = dl.Archive("tiny.zip", "ml-100k", hashlib.sha256(data).hexdigest(), len(data))
    project = tmp_path / "project"
    project.mkdir()
    folder = project / "raw" / "movielens-100k"
    target = dl.fetch_archive(archive, folder, url=f"{base}/tiny.zip", progress=False)
    assert target == folder / "ml-100k"
    assert sorted(p.name for p in target.iterdir()) == ["u.data", "u.genre", "u.item", "u.user"]
    # Only the unpacked folder is left: no partial download, no staging folder.
    assert os.listdir(project) == ["raw"]
    assert os.listdir(folder) == ["ml-100k"]


def test_load_dataset_downloads_a_missing_folder(
    http_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    www, base = http_server
    data = tiny_ml100k_zip()
    (www / "ml-100k.zip").write_bytes(data)
    # Pin the checksum of our tiny archive in place of the real one, and serve it as the mirror.
    pinned = dl.Archive("ml-100k.zip", "ml-100k", hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setitem(dl.ARCHIVES, "movielens-100k", pinned)
    monkeypatch.setenv(dl.BASE_URL_ENV, base)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    ds = load_dataset(_params(data={"source": "movielens-100k", "download": True}))
    assert (project / "data/raw/movielens-100k/ml-100k/u.data").is_file()
    assert ds.ratings["rating"].tolist() == [5.0, 3.0, 4.0]
    assert ds.items.set_index("item_id").loc[1, "genres"] == "Comedy"
    assert "given_split" not in ds.ratings.columns  # the tiny archive has no u1.* files
    # A second run reads the unpacked files without downloading again.
    (www / "ml-100k.zip").unlink()
    assert len(load_dataset(_params(data={"source": "movielens-100k"})).ratings) == 3
