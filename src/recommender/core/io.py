"""Writing stage outputs so that a failure never leaves a half-written or missing output.

DVC stages here declare their outputs ``persist: true`` (DVC does not delete them before running),
and every writer goes through these helpers: the new content is written beside the old one and
swapped in with a rename only once it is complete. A stage that fails part-way therefore leaves the
previous run's outputs exactly as they were. A process killed outright (SIGKILL) cannot clean up:
its staging copy (``.<name>.<pid>.*.tmp``) is removed by the next writer of the same output.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recommender.core.disk import FULL_DISK_ERRNOS
from recommender.core.errors import DataError


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _naming_full_disk(path: Path) -> Iterator[None]:
    """Give a full disk's error the output's path: pyarrow and others raise it with none."""
    try:
        yield
    except OSError as exc:
        if exc.errno in FULL_DISK_ERRNOS and not exc.filename:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise


def _staging_prefix(path: Path) -> str:
    """``.<name>.<pid>.``: the owner's pid lets a later run remove what a killed one left."""
    return f".{path.name}.{os.getpid()}."


def sweep_staging(path: Path) -> None:
    """Remove the staging copies of ``path`` that processes which no longer run left beside it."""
    if not path.parent.is_dir():
        return
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = old.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_staging(path)
    fd, tmp = tempfile.mkstemp(prefix=_staging_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        with _naming_full_disk(path):
            yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it takes ``path``'s place.

    The swap is two renames (old aside, new in), so a reader sees either the old folder or the
    new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_staging(path)
    tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(path), suffix=".tmp", dir=path.parent))
    # mkdtemp makes the folder private (0700); outputs get the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        with _naming_full_disk(path):
            yield tmp
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically (stable bytes for DVC)."""
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` atomically."""
    with staged_file(path) as tmp:
        tmp.write_text(text)


def parquet_parts(path: str | Path) -> list[Path]:
    """``path`` itself if it is a file, else the files of folder ``path`` in the order pyarrow and
    pandas read them: sorted by name, those starting with ``_`` or ``.`` left out.

    Raises:
        DataError: ``path`` is missing, holds no part file or holds a (partition) folder.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "no such Parquet file or folder")
    parts = sorted(
        (p for p in path.iterdir() if not p.name.startswith(("_", "."))), key=lambda p: p.name
    )
    folders = [p.name for p in parts if p.is_dir()]
    if folders:
        raise DataError(path, f"holds folders ({', '.join(folders[:3])})", expected="part files")
    if not parts:
        raise DataError(path, "holds no Parquet part file")
    return parts


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet file, or of a folder of part files (Spark's output), from their footers
    (no data read); 0 if it is not there."""
    import pyarrow.parquet as pq

    if not Path(path).exists():
        return 0
    return sum(int(pq.read_metadata(p).num_rows) for p in parquet_parts(path))


def parquet_digest(path: str | Path) -> str:
    """The SHA-256 of a Parquet file's bytes, or of a folder's part files' bytes in
    :func:`parquet_parts`' order: whether a table is byte for byte the one seen before."""
    digest = hashlib.sha256()
    for part in parquet_parts(path):
        with part.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
