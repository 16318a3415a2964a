"""Readers for the official MovieLens releases, each turned into the canonical tables.

=========================  ====================================  =================================
source                     files                                 format
=========================  ====================================  =================================
``movielens-100k``         u.data, u.item, u.user, u.genre,      tab / ``|``, latin-1, no header;
                           optional ``<fold>.base/.test``        19 genre flags named in u.genre
``movielens-1m``           ratings.dat, movies.dat, users.dat    ``::``, latin-1, no header
``movielens-latest-small`` ratings.csv, movies.csv               csv with header, utf-8
``movielens-25m``          ratings.csv, movies.csv               csv with header, utf-8
=========================  ====================================  =================================

The folder is ``data.path`` or ``data/raw/<source>/``; the folder the official archive unpacks into
(``data/raw/movielens-100k/ml-100k/``) is found as well. When neither holds the files and
``data.download`` is true, the archive is fetched (see :mod:`recommender.data.download`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.config import RatingScale
from recommender.core.errors import DataError
from recommender.core.schema import (
    GENRE_SEP,
    GIVEN_SPLIT,
    ITEM,
    ITEM_COLUMNS,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
    USER_COLUMNS,
    Dataset,
    DatasetInfo,
)
from recommender.data.delimited import RawTable, read_table
from recommender.data.download import ARCHIVES, fetch_archive

log = logging.getLogger(__name__)

#: The file whose presence says "this folder holds the dataset".
MARKER = {
    "movielens-100k": "u.data",
    "movielens-1m": "ratings.dat",
    "movielens-latest-small": "ratings.csv",
    "movielens-25m": "ratings.csv",
}

#: ML-1M's occupation codes, as listed in its README.
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip

_TITLE_YEAR = r"\((\d{4})(?:\s*[-\u2013]\s*\d{4})?\)\s*$"
_NO_GENRES = "(no genres listed)"


def find_folder(source: str, path: str | None, download: bool) -> Path:
    """The folder holding ``source``'s files, downloading the archive if allowed and needed.

    Args:
        source: One of the MovieLens sources.
        path: ``data.path``, or None for ``data/raw/<source>/`` (relative to the working
            directory, which is the project root under DVC).
        download: ``data.download``.

    Raises:
        DataError: The files are not there and may not (or could not) be downloaded; the message
            names the folder and the URL to fetch by hand.
    """
    archive = ARCHIVES[source]
    marker = MARKER[source]
    base = Path(path) if path is not None else Path("data/raw") / source
    for candidate in (base, base / archive.folder):
        if (candidate / marker).is_file():
            return candidate
    if base.is_dir():
        inner = [d for d in sorted(base.iterdir()) if d.is_dir() and (d / marker).is_file()]
        if len(inner) == 1:
            return inner[0]
    if base.exists() and not base.is_dir():
        raise DataError(base, "is a file, not a folder", expected=f"the folder holding {marker}")
    partial = base / archive.folder
    if partial.exists():
        # Never overwrite what the user put there: they may be completing it by hand.
        raise DataError(
            partial,
            f"exists but has no {marker}",
            expected=f"the complete contents of {archive.url()} (or remove the folder to download"
            " it again)",
        )
    if not download:
        raise DataError(
            base,
            f"no {marker} here or in {base / archive.folder}, and data.download is false",
            expected=(
                f"the files of {archive.url()}: download it by hand and unzip it into {base}, "
                "or set data.download: true"
            ),
        )
    return fetch_archive(archive, base)


def _join_genres(flags: np.ndarray, names: list[str]) -> list[str]:
    """Turn a 0/1 matrix of genre flags into ``"|"``-joined names, row by row."""
    return [GENRE_SEP.join(n for n, f in zip(names, row, strict=True) if f and n) for row in flags]


def _years_from_titles(titles: pd.Series) -> pd.Series:
    return titles.str.extract(_TITLE_YEAR, expand=False).astype("Float64").astype("Int64")


def _mark_fold(ratings: pd.DataFrame, folder: Path, fold: str) -> pd.DataFrame:
    """Add ``given_split`` from ``<fold>.test`` (test) and ``<fold>.base`` (train), if present."""
    base_file, test_file = folder / f"{fold}.base", folder / f"{fold}.test"
    if not (base_file.is_file() and test_file.is_file()):
        log.info("no %s.base/%s.test in %s: ratings carry no given split", fold, fold, folder)
        return ratings
    test = _read_ml100k_ratings(test_file)
    # Pairs are unique in ML-100K, so (user, item) identifies a rating.
    width = int(max(ratings[ITEM].max(), test[ITEM].max())) + 1
    keys = ratings[USER].to_numpy() * width + ratings[ITEM].to_numpy()
    in_test = np.isin(keys, test[USER].to_numpy() * width + test[ITEM].to_numpy())
    if in_test.sum() != len(test):
        log.warning("%s: %d of its %d ratings are not in u.data", test_file,
                    len(test) - int(in_test.sum()), len(test))  # fmt: skip
    ratings = ratings.copy()
    ratings[GIVEN_SPLIT] = pd.Series(np.where(in_test, "test", "train"), dtype="str")
    log.info("marked ML-100K fold %s: %d train, %d test", fold, (~in_test).sum(), in_test.sum())
    return ratings


def _ratings_frame(table: RawTable, names: list[str]) -> pd.DataFrame:
    user, item, rating, timestamp = names
    return pd.DataFrame(
        {
            USER: table.int_ids(user, expected="an integer user id"),
            ITEM: table.int_ids(item, expected="an integer item id"),
            RATING: table.floats(rating, expected="a numeric rating"),
            TIMESTAMP: table.ints(timestamp, expected="Unix seconds (an integer)"),
        }
    )[RATING_COLUMNS]


def _read_ml100k_ratings(path: Path) -> pd.DataFrame:
    table = read_table(
        path,
        sep="\t",
        encoding="latin-1",
        header=False,
        names=RATING_COLUMNS,
        quoting=csv.QUOTE_NONE,
        what="ML-100K ratings: user id, item id, rating, timestamp (tabs)",
    )
    return _ratings_frame(table, RATING_COLUMNS)


def read_ml100k(folder: str | Path, scale: RatingScale, fold: str = "u1") -> Dataset:
    """Read MovieLens 100K from ``folder`` (u.data, u.item, u.user, u.genre, fold files)."""
    folder = Path(folder)
    ratings = _mark_fold(_read_ml100k_ratings(folder / "u.data"), folder, fold)

    genre_table = read_table(
        folder / "u.genre",
        sep="|",
        encoding="latin-1",
        header=False,
        names=["genre", "index"],
        quoting=csv.QUOTE_NONE,
        what="ML-100K genre list: name|index",
    )
    genres = genre_table.text("genre")
    order = genre_table.ints("index", expected="the genre's column index")
    genre_names = [str(g) for _, g in sorted(zip(order, genres, strict=True))]

    item_cols = ["item_id", "title", "release_date", "video_date", "url"] + [
        f"g{i}" for i in range(len(genre_names))
    ]
    item_table = read_table(
        folder / "u.item",
        sep="|",
        encoding="latin-1",
        header=False,
        names=item_cols,
        quoting=csv.QUOTE_NONE,
        what=f"ML-100K items: {len(item_cols)} '|'-separated fields",
    )
    flags = np.column_stack(
        [item_table.ints(f"g{i}", expected="a genre flag 0 or 1") for i in range(len(genre_names))]
    )
    # "unknown" is MovieLens' way of saying "no genre"; we store that as "".
    names_kept = ["" if g == "unknown" else g for g in genre_names]
    titles = item_table.text("title").str.strip()
    year = (
        item_table.text("release_date")
        .str.extract(r"(\d{4})\s*$", expand=False)
        .astype("Float64")
        .astype("Int64")
    )
    year = year.fillna(_years_from_titles(titles))
    items = pd.DataFrame(
        {
            ITEM: item_table.int_ids("item_id", expected="an integer item id"),
            "title": titles,
            "genres": pd.Series(_join_genres(flags, names_kept), dtype="str"),
            "year": year,
        }
    )[ITEM_COLUMNS]

    user_table = read_table(
        folder / "u.user",
        sep="|",
        encoding="latin-1",
        header=False,
        names=["user_id", "age", "gender", "occupation", "zip"],
        quoting=csv.QUOTE_NONE,
        what="ML-100K users: user id|age|gender|occupation|zip code",
    )
    users = pd.DataFrame(
        {
            USER: user_table.int_ids("user_id", expected="an integer user id"),
            "age": user_table.optional_ints("age", expected="an age in years"),
            "gender": user_table.text("gender"),
            "occupation": user_table.text("occupation"),
        }
    )[USER_COLUMNS]
    return _dataset("movielens-100k", ratings, items, users, scale)


def read_ml1m(folder: str | Path, scale: RatingScale) -> Dataset:
    """Read MovieLens 1M from ``folder`` (ratings.dat, movies.dat, users.dat; ``::``, latin-1)."""
    folder = Path(folder)
    kw: dict[str, Any] = {
        "sep": "::",
        "encoding": "latin-1",
        "header": False,
        "quoting": csv.QUOTE_NONE,
    }
    ratings = _ratings_frame(
        read_table(
            folder / "ratings.dat",
            names=RATING_COLUMNS,
            what="ML-1M ratings: UserID::MovieID::Rating::Timestamp",
            **kw,
        ),
        RATING_COLUMNS,
    )
    movies = read_table(
        folder / "movies.dat",
        names=["item_id", "title", "genres"],
        what="ML-1M movies: MovieID::Title::Genres",
        **kw,
    )
    titles = movies.text("title").str.strip()
    items = pd.DataFrame(
        {
            ITEM: movies.int_ids("item_id", expected="an integer movie id"),
            "title": titles,
            "genres": movies.text("genres"),
            "year": _years_from_titles(titles),
        }
    )[ITEM_COLUMNS]
    user_table = read_table(
        folder / "users.dat",
        names=["user_id", "gender", "age", "occupation", "zip"],
        **kw,
        what="ML-1M users: UserID::Gender::Age::Occupation::Zip-code",
    )
    codes = user_table.ints("occupation", expected="an occupation code 0-20")
    unknown = (codes < 0) | (codes >= len(ML1M_OCCUPATIONS))
    if unknown.any():
        row = int(np.argmax(unknown))
        raise DataError(
            user_table.path,
            f"unknown occupation code {codes[row]}",
            row=user_table.line_of(row),
            column="occupation",
            expected="a code from 0 to 20 (see the ML-1M README)",
        )
    users = pd.DataFrame(
        {
            USER: user_table.int_ids("user_id", expected="an integer user id"),
            # ML-1M gives age bands by their lower bound (1 = under 18, 18 = 18-24, ...).
            "age": user_table.optional_ints("age", expected="an age band (1, 18, 25, ...)"),
            "gender": user_table.text("gender"),
            "occupation": pd.Series(np.asarray(ML1M_OCCUPATIONS)[codes], dtype="str"),
        }
    )[USER_COLUMNS]
    return _dataset("movielens-1m", ratings, items, users, scale)


def read_ml_csv(folder: str | Path, source: str, scale: RatingScale) -> Dataset:
    """Read a CSV-era release (latest-small, 25M): ratings.csv and movies.csv, utf-8, header."""
    folder = Path(folder)
    label = {"movielens-latest-small": "ML latest-small", "movielens-25m": "ML-25M"}[source]
    rating_cols = ["userId", "movieId", "rating", "timestamp"]
    table = read_table(
        folder / "ratings.csv",
        sep=",",
        encoding="utf-8",
        header=True,
        required=rating_cols,
        what=f"{label} ratings.csv: userId,movieId,rating,timestamp",
    )
    ratings = _ratings_frame(table, rating_cols)
    movies = read_table(
        folder / "movies.csv",
        sep=",",
        encoding="utf-8",
        header=True,
        required=["movieId", "title", "genres"],
        what=f"{label} movies.csv: movieId,title,genres",
    )
    titles = movies.text("title").str.strip()
    genres = movies.text("genres")
    items = pd.DataFrame(
        {
            ITEM: movies.int_ids("movieId", expected="an integer movie id"),
            "title": titles,
            "genres": genres.where(genres != _NO_GENRES, ""),
            "year": _years_from_titles(titles),
        }
    )[ITEM_COLUMNS]
    return _dataset(source, ratings, items, None, scale)


def _dataset(
    source: str,
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    scale: RatingScale,
) -> Dataset:
    info = DatasetInfo(
        source=source,
        rating_scale=scale,
        id_type="int",
        has_users=users is not None,
        has_given_split=GIVEN_SPLIT in ratings.columns,
    )
    return Dataset(ratings=ratings, items=items, users=users, info=info)


def load_movielens(
    source: str,
    path: str | None,
    scale: RatingScale,
    *,
    download: bool = True,
    fold: str = "u1",
) -> Dataset:
    """Find (or fetch) a MovieLens release and read it into the canonical tables.

    Args:
        source: ``movielens-100k``, ``movielens-1m``, ``movielens-latest-small`` or
            ``movielens-25m``.
        path: ``data.path`` (the folder), or None for ``data/raw/<source>/``.
        scale: Rating scale to record.
        download: Whether a missing archive may be downloaded.
        fold: ML-100K only: the canonical split to mark in ``given_split``.
    """
    folder = find_folder(source, path, download)
    log.info("reading %s from %s", source, folder)
    if source == "movielens-100k":
        return read_ml100k(folder, scale, fold)
    if source == "movielens-1m":
        return read_ml1m(folder, scale)
    return read_ml_csv(folder, source, scale)
