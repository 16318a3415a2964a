"""Broken inputs stop ingest with a message naming file, line, column and what was expected;
data-quality problems (null or out-of-scale ratings, duplicates) pass through for ``validate``."""

from __future__ import annotations

import io
import math
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from recommender.core.config import parse_params
from recommender.core.errors import DataError
from recommender.data import download as dl
from recommender.data import load_dataset

ROOT = Path(__file__).resolve().parents[2]
HEADER = "user_id,item_id,rating,timestamp\n"


def _csv(path: Path, body: str | bytes, **csv_section) -> DataError:
    """Write ``body`` to ``path``, ingest it as a csv source, and return the DataError raised."""
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    params = parse_params({"data": {"source": "csv", "path": str(path)}, "csv": csv_section})
    with pytest.raises(DataError) as info:
        load_dataset(params)
    return info.value


def test_missing_file(tmp_path: Path):
    params = parse_params({"data": {"source": "csv", "path": str(tmp_path / "nope.csv")}})
    with pytest.raises(DataError, match="nope.csv: no such file") as info:
        load_dataset(params)
    assert "ratings file with a header naming user_id, item_id, rating, timestamp" in str(
        info.value
    )


def test_empty_file(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", "")
    assert str(err).startswith(f"{tmp_path / 'r.csv'}: the file is empty (0 bytes)")


def test_header_only_file(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", HEADER)
    assert "r.csv: has a header but no data rows" in str(err)


def test_wrong_separator_with_header(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", "user_id;item_id;rating;timestamp\n1;10;4;100\n")
    assert err.row == 1
    assert "found 1 column, expected 4; is csv.sep right? it is ',', but the line contains ';'" in (
        str(err)
    )


def test_wrong_separator_without_header(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", "1;10;4;100\n2;10;3;200\n", header=False)
    assert err.row == 1
    assert "found 1 column, expected 4; is csv.sep right?" in str(err)


def test_missing_column_lists_the_columns_found(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", "user_id,item_id,score,timestamp\n1,10,4,100\n")
    assert err.column == "rating"
    assert "no column 'rating' (columns found: 'user_id', 'item_id', 'score', 'timestamp')" in str(
        err
    )


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (HEADER + "1,10,4,100\n2,abc,3,200\n", 3),
        (HEADER + "1,10,4,100\n\n\n2,abc,3,200\n", 5),  # blank lines still count as lines
    ],
)
def test_text_in_an_integer_id_column(tmp_path: Path, body: str, line: int):
    err = _csv(tmp_path / "r.csv", body)
    assert (err.row, err.column) == (line, "item_id")
    assert f"line {line}, column 'item_id': 'abc' is not an integer" in str(err)
    assert "csv.id_type: str" in str(err)


def test_fractional_id(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", HEADER + "1,10,4,100\n2.5,10,3,200\n")
    assert (err.row, err.column) == (3, "user_id")
    assert "'2.5' is not an integer" in str(err)


def test_non_numeric_rating(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", HEADER + "1,10,4,100\n1,11,4,100\n2,10,four,200\n")
    assert (err.row, err.column) == (4, "rating")
    assert "'four' is not a number" in str(err)


def test_truncated_last_line(tmp_path: Path):
    err = _csv(tmp_path / "r.csv", HEADER + "1,10,4,100\n2,10,3,200\n3,1")
    assert err.row == 4
    assert "found 2 columns, expected 4 (truncated line?)" in str(err)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (HEADER + "1,10,4,100\n2,10,3,200,9\n", 3),
        # pandas itself only warns (and drops the field) when the first data line is the long one.
        (HEADER + "2,10,3,200,9\n1,10,4,100\n", 2),
    ],
)
def test_too_many_fields(tmp_path: Path, body: str, line: int):
    err = _csv(tmp_path / "r.csv", body)
    assert err.row == line
    assert "found 5 columns, expected 4: '2,10,3,200,9'" in str(err)


def test_bytes_not_in_the_declared_encoding(tmp_path: Path):
    body = (HEADER + "1,10,4,100\n").encode() + b"2,10,3,200 \xe9\n"
    err = _csv(tmp_path / "r.csv", body)
    offset = len(HEADER) + len("1,10,4,100\n") + len("2,10,3,200 ")
    assert err.row == 3
    assert f"byte 0xe9 at offset {offset} is not valid utf-8 text" in str(err)
    # Declared right, the same bytes read fine.
    path = tmp_path / "r.csv"
    params = parse_params(
        {"data": {"source": "csv", "path": str(path)}, "csv": {"encoding": "latin-1"}}
    )
    with pytest.raises(DataError, match="line 3, column 'timestamp'"):
        load_dataset(params)  # '200 é' is then the problem, named as such


def test_data_quality_problems_pass_through(tmp_path: Path):
    """Null ratings, ratings off the scale and duplicate pairs are validate's to reject."""
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "1,10,,100\n1,11,7,100\n1,11,3,120\n\n2,10,4.5,130\n")
    ds = load_dataset(parse_params({"data": {"source": "csv", "path": str(path)}}))
    ratings = ds.ratings["rating"].tolist()
    assert math.isnan(ratings[0]) and ratings[1:] == [7.0, 3.0, 4.5]  # the blank line is skipped
    assert ds.ratings.duplicated(["user_id", "item_id"]).sum() == 1


# --- MovieLens-format files ---------------------------------------------------------------


def test_ml100k_text_in_u_data(tmp_path: Path):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n2\tx1\t3\t891717742\n")
    params = parse_params({"data": {"source": "movielens-100k", "path": str(tmp_path)}})
    with pytest.raises(DataError) as info:
        load_dataset(params)
    assert str(info.value).startswith(f"{tmp_path / 'u.data'}, line 2, column 'item_id'")
    assert "'x1' is not an integer" in str(info.value)


def test_ml100k_truncated_u_data(tmp_path: Path):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n2\t1\t3")
    params = parse_params({"data": {"source": "movielens-100k", "path": str(tmp_path)}})
    with pytest.raises(DataError, match=r"u.data, line 2: found 3 columns, expected 4"):
        load_dataset(params)


def test_ml100k_missing_companion_file(tmp_path: Path):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    params = parse_params({"data": {"source": "movielens-100k", "path": str(tmp_path)}})
    with pytest.raises(DataError, match=r"u.genre: no such file"):
        load_dataset(params)


def test_ml1m_wrong_field_count(tmp_path: Path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3\n")
    params = parse_params({"data": {"source": "movielens-1m", "path": str(tmp_path)}})
    with pytest.raises(DataError, match=r"ratings.dat, line 2: found 3 columns, expected 4"):
        load_dataset(params)


# --- missing MovieLens folders and downloads ------------------------------------------------


def test_missing_folder_without_download_says_where_to_put_the_files(tmp_path: Path):
    folder = tmp_path / "raw" / "ml"
    params = parse_params(
        {"data": {"source": "movielens-1m", "path": str(folder), "download": False}}
    )
    with pytest.raises(DataError) as info:
        load_dataset(params)
    message = str(info.value)
    assert str(folder) in message and "data.download is false" in message
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert not folder.exists()


def test_an_incomplete_archive_folder_is_left_alone(tmp_path: Path):
    partial = tmp_path / "ml-100k"
    partial.mkdir()
    (partial / "u.item").write_text("mine\n")
    params = parse_params({"data": {"source": "movielens-100k", "path": str(tmp_path)}})
    with pytest.raises(DataError, match=r"ml-100k: exists but has no u.data"):
        load_dataset(params)  # download is on, yet nothing is fetched or overwritten
    assert (partial / "u.item").read_text() == "mine\n"


def test_offline_download_says_where_to_put_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with socket.socket() as s:  # a port nobody listens on: connection refused, like offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv(dl.BASE_URL_ENV, f"http://127.0.0.1:{port}/movielens")
    folder = tmp_path / "raw" / "movielens-100k"
    params = parse_params({"data": {"source": "movielens-100k", "path": str(folder)}})
    with pytest.raises(DataError) as info:
        load_dataset(params)
    message = str(info.value)
    assert message.startswith(f"{folder}: could not download http://127.0.0.1:{port}/")
    assert f"download it by hand and unzip it into {folder}" in message
    assert f"{folder / 'ml-100k'} holds them" in message
    assert os.listdir(tmp_path) == []  # not even the parent folder was created


def test_checksum_mismatch_leaves_nothing_behind(
    http_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    www, base = http_server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t881250949\n")
    (www / "ml-100k.zip").write_bytes(buf.getvalue())
    monkeypatch.setenv(dl.BASE_URL_ENV, base)  # a "mirror" serving the wrong bytes
    project = tmp_path / "project"
    project.mkdir()
    folder = project / "data" / "raw" / "movielens-100k"
    params = parse_params({"data": {"source": "movielens-100k", "path": str(folder)}})
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset(params)
    assert dl.ARCHIVES["movielens-100k"].sha256 in str(info.value)
    assert os.listdir(project) == []  # no archive, no partial file, no staging folder


@pytest.mark.parametrize(
    "member", ["../evil.txt", "/tmp/evil.txt", "ml-100k/../../evil.txt", "C:/evil.txt"]
)
def test_unsafe_archive_members_are_refused(tmp_path: Path, member: str):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
        zf.writestr(zipfile.ZipInfo(member), "boom")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DataError, match="refusing to unpack"):
        dl.safe_extract(archive, dest)
    assert os.listdir(dest) == []  # nothing unpacked, not even the safe member
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_members_are_refused(tmp_path: Path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("ml-100k/u.data")
    info.external_attr = 0o120777 << 16  # a symbolic link
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        dl.safe_extract(archive, tmp_path / "out")


def test_not_a_zip(tmp_path: Path):
    junk = tmp_path / "junk.zip"
    junk.write_text("<html>not found</html>")
    with pytest.raises(DataError, match="not a valid zip archive"):
        dl.safe_extract(junk, tmp_path / "out")


# --- the stage entry point ----------------------------------------------------------------


def _run_stage(params: dict, params_path: Path, out: Path) -> subprocess.CompletedProcess:
    params_path.write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, str(ROOT / "pipeline" / "ingest.py"), "--params", str(params_path),
         "--out", str(out)],
        capture_output=True, text=True, cwd=params_path.parent, timeout=120,
    )  # fmt: skip


@pytest.mark.slow  # runs the stage twice in child processes
def test_stage_failure_exits_1_and_keeps_the_previous_output(tmp_path: Path):
    out = tmp_path / "interim"
    good = {"seed": 1, "synthetic": {"n_users": 40, "n_items": 60, "n_ratings": 1200}}
    done = _run_stage(good, tmp_path / "params.yaml", out)
    assert done.returncode == 0, done.stderr
    files = ["dataset.json", "items.parquet", "ratings.parquet", "users.parquet"]
    assert sorted(os.listdir(out)) == files
    before = {f: (out / f).read_bytes() for f in files}

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(HEADER + "1,10,4,100\n2,abc,3,200\n")
    bad = {"data": {"source": "csv", "path": str(bad_csv)}}
    failed = _run_stage(bad, tmp_path / "params.yaml", out)
    assert failed.returncode == 1
    assert "error: stage 'ingest' failed:" in failed.stderr
    assert "bad.csv, line 3, column 'item_id': 'abc' is not an integer" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert {f: (out / f).read_bytes() for f in files} == before
    assert sorted(os.listdir(out)) == files
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".interim")]
    assert leftovers == []
