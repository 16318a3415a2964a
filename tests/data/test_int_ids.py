"""Integer ids are read exactly or refused, never rounded (issue 20, defect 2).

Every test writes a real file to ``tmp_path`` and reads it with the real reader. The old reader sent
a whole id column through float64 as soon as one field did not parse as int64: ids above 2**63-1
all became -2**63, and one id written ``3.0`` merged ids above 2**53.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recommender.core.config import parse_params
from recommender.core.errors import DataError
from recommender.core.schema import read_dataset, write_dataset
from recommender.data import load_dataset
from recommender.data.delimited import read_table

ROOT = Path(__file__).resolve().parents[2]
HEADER = "user_id,item_id,rating,timestamp\n"
INT64_MAX = 2**63 - 1
HINT = "csv.id_type: str"


def _write(path: Path, rows: Sequence[tuple[object, object]], header: str = HEADER) -> Path:
    """A ratings file: one line per (user, item), rating 4, a valid timestamp."""
    lines = [f"{u},{i},4,1500000000\n" for u, i in rows]
    path.write_text(header + "".join(lines))
    return path


def _load(path: Path, **csv):
    return load_dataset(parse_params({"data": {"source": "csv", "path": str(path)}, "csv": csv}))


def _refused(path: Path, **csv) -> DataError:
    with pytest.raises(DataError) as info:
        _load(path, **csv)
    return info.value


def test_ids_above_int64_are_refused_with_the_line_not_merged(tmp_path: Path):
    # uint64 hash ids: 10 users, all above 2**63-1 (the old reader made them all -2**63).
    users = [2**63 + 17 * k for k in range(10)]
    f = _write(tmp_path / "r.csv", [(1, 1)] + [(u, i) for u in users for i in range(10)])

    err = _refused(f)

    assert (err.row, err.column) == (3, "user_id")  # line 1 is the header, line 2 is user 1
    assert f"line 3, column 'user_id': '{users[0]}' is outside the 64-bit integer range" in str(err)
    assert HINT in str(err)

    kept = _load(f, id_type="str").ratings
    assert kept["user_id"].nunique() == 11
    assert set(kept["user_id"]) == {"1", *map(str, users)}
    assert not kept.duplicated(["user_id", "item_id"]).any()


def test_ids_above_2_53_with_one_written_3_0_are_refused_not_merged(tmp_path: Path):
    big = [2**53 + k for k in range(1000)]  # 9007199254740992, 9007199254740993, ...
    rows: list[tuple[object, object]] = [(u, 1) for u in big]
    rows.insert(500, ("3.0", 1))
    f = _write(tmp_path / "r.csv", rows)

    err = _refused(f)

    assert (err.row, err.column) == (502, "user_id")
    assert "line 502, column 'user_id': '3.0' is not an integer written in digits" in str(err)
    assert HINT in str(err)

    kept = _load(f, id_type="str").ratings["user_id"]
    assert kept.nunique() == 1001
    assert {"9007199254740992", "9007199254740993", "3.0"} <= set(kept)


def test_a_23_digit_id_is_refused_or_kept_as_text(tmp_path: Path):
    long_id = "12345678901234567890123"
    f = _write(tmp_path / "r.csv", [(1, 10), (2, 10), (long_id, 11), (3, 11)])

    err = _refused(f)
    assert (err.row, err.column) == (4, "user_id")
    assert f"'{long_id}' is outside the 64-bit integer range" in str(err)

    kept = _load(f, id_type="str").ratings["user_id"].tolist()
    assert kept == ["1", "2", long_id, "3"]


def test_an_out_of_range_item_id_in_the_items_file_is_refused(tmp_path: Path):
    ratings = _write(tmp_path / "r.csv", [(1, 10)])
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n10,Heat\n18446744073709551615,Hashed\n")

    err = _refused(ratings, items_path=str(items))

    assert (Path(err.path).name, err.row, err.column) == ("items.csv", 3, "item_id")


def test_distinct_ids_in_equal_distinct_ids_out_near_2_53_and_2_63(tmp_path: Path):
    rng = np.random.default_rng(0)
    near = [2**53 - 3, 2**53 - 1, 2**53, 2**53 + 1, 2**53 + 2, 2**53 + 3, INT64_MAX - 1]
    near += [INT64_MAX, -(2**63), -(2**63) + 1, -(2**53) - 1, 0]
    wide = rng.integers(-(2**63), INT64_MAX, 2000, dtype=np.int64, endpoint=True).tolist()
    users = near + wide
    items: list[object] = [INT64_MAX - k for k in range(len(users))]
    items[3] = f" {items[3]}"  # one padded field: the whole column takes the careful path
    f = _write(tmp_path / "r.csv", list(zip(users, items, strict=True)))

    raw = pd.read_csv(f, dtype=str)  # the file's own text, never parsed as numbers
    assert raw["item_id"][3].startswith(" ")
    ds = _load(f)
    write_dataset(ds, tmp_path / "interim")  # and through the stage's Parquet output
    back = read_dataset(tmp_path / "interim").ratings

    for column in ("user_id", "item_id"):
        assert raw[column].nunique() == ds.ratings[column].nunique() == back[column].nunique()
        assert str(back[column].dtype) == "int64"
        assert back[column].tolist() == [int(v) for v in raw[column]]  # exact, in file order


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("1e3", "'1e3' is not an integer written in digits (an id is never read through"),
        ("12.", "'12.' is not an integer written in digits"),
        ("0x10", "'0x10' is not an integer written in digits"),
        ('"1,000"', "'1,000' is not an integer written in digits"),
        ("+-5", "'+-5' is not an integer written in digits"),
        ("１２", "'１２' is not an integer written in digits"),  # fullwidth digits
        ("-9223372036854775809", "'-9223372036854775809' is outside the 64-bit integer range"),
        ("00009223372036854775808", "is outside the 64-bit integer range"),
    ],
)
def test_non_integer_forms_are_refused(tmp_path: Path, field: str, problem: str):
    f = _write(tmp_path / "r.csv", [(1, 10), (field, 10)])

    err = _refused(f)

    assert (err.row, err.column) == (3, "user_id")
    assert problem in str(err)


@pytest.mark.parametrize(
    ("first", "second"),
    [("7", "007"), ("7", "+7"), ("0", "-0"), ("-7", "-07"), ("007", "0007")],
)
def test_two_spellings_of_one_number_are_refused(tmp_path: Path, first: str, second: str):
    f = _write(tmp_path / "r.csv", [(first, 10), (8, 10), (second, 11)])

    err = _refused(f)

    assert (err.row, err.column) == (4, "user_id")
    number = int(first)
    assert f"'{second}' and '{first}' (line 2) are both the integer {number}" in str(err)
    assert _load(f, id_type="str").ratings["user_id"].nunique() == 3


def test_accepted_spellings(tmp_path: Path):
    # Zero-padded ids (one spelling each), a sign, and surrounding spaces or tabs.
    rows = [("007", 1), ("0", 1), ("-12", 1), ("+13", 1), (" 14 ", 1), ("\t15", 1), ("08", 2)]
    f = _write(tmp_path / "r.csv", rows)

    assert _load(f).ratings["user_id"].tolist() == [7, 0, -12, 13, 14, 15, 8]
    # As text, ids are kept exactly as written, spaces included.
    assert _load(f, id_type="str").ratings["user_id"].tolist() == [u for u, _ in rows]


def test_timestamps_are_not_rounded_either(tmp_path: Path):
    f = tmp_path / "r.csv"
    f.write_text(HEADER + "1,10,4,1500000000.0\n2,10,4,1500000001\n")
    assert _load(f).ratings["timestamp"].tolist() == [1500000000, 1500000001]

    f.write_text(HEADER + "1,10,4,1500000000.0\n2,10,4,9007199254740993\n3,10,4,1e17\n")
    err = _refused(f)
    assert (err.row, err.column) == (4, "timestamp")
    assert "'1e17' is too large to be read exactly unless written in digits" in str(err)


def test_movielens_readers_take_the_same_exact_path(tmp_path: Path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text(
        "1::10::5::978300760\n9223372036854775808::10::3::978300761\n"
    )
    (folder / "movies.dat").write_text("10::Heat (1995)::Crime\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n")
    params = parse_params({"data": {"source": "movielens-1m", "path": str(folder)}})

    with pytest.raises(DataError) as info:
        load_dataset(params)

    err = info.value
    assert (Path(err.path).name, err.row, err.column) == ("ratings.dat", 2, "user_id")
    assert "outside the 64-bit integer range" in str(err)


def test_int_ids_on_a_large_column_matches_an_exact_parse(tmp_path: Path):
    # 200k ids near int64's ends and 2**53, with a padded one: the careful path, vectorised.
    rng = np.random.default_rng(1)
    ids = np.concatenate(
        [
            rng.integers(INT64_MAX - 10**6, INT64_MAX, 100_000, endpoint=True),
            rng.integers(2**53 - 10**6, 2**53 + 10**6, 100_000),
        ]
    )
    text = ids.astype(str).astype(object)
    text[12345] = " " + text[12345]  # whitespace: not the fast path
    f = tmp_path / "ids.csv"
    pd.DataFrame({"u": text}).to_csv(f, index=False)

    got = read_table(f, sep=",", required=["u"]).int_ids("u")

    assert np.array_equal(got, ids)


def test_ingest_stage_refuses_a_23_digit_id(tmp_path: Path):
    data = _write(tmp_path / "r.csv", [(1, 10), (2, 10), ("12345678901234567890123", 11)])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"source": "csv", "path": str(data)}}))

    done = subprocess.run(
        [sys.executable, str(ROOT / "pipeline" / "ingest.py"), "--params", str(params),
         "--out", str(tmp_path / "interim")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    assert "r.csv, line 4, column 'user_id': '12345678901234567890123' is outside" in done.stderr
    assert HINT in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "interim").exists()
