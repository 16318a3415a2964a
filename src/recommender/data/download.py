"""Fetching an official MovieLens archive: download, verify a pinned checksum, unpack safely.

Downloads happen only when a MovieLens source is asked for, its folder is missing and
``data.download`` is true. Every archive's SHA-256 is pinned below, so a truncated download, a
changed upload or a tampered mirror stops ingest instead of feeding it different data. Nothing is
left behind on failure: the archive goes to a temporary file and is unpacked into a temporary
folder, and only a complete, verified tree is moved into place.

``MOVIELENS_BASE_URL`` (environment) points at a mirror instead of GroupLens; the checksums still
apply.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recommender.core.errors import DataError

log = logging.getLogger(__name__)

BASE_URL_ENV = "MOVIELENS_BASE_URL"
DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Archive:
    """One downloadable archive.

    Attributes:
        name: File name on the server, e.g. ``ml-100k.zip``.
        folder: The single top-level folder the archive unpacks into, e.g. ``ml-100k``.
        sha256: Pinned SHA-256 of the archive.
        size: Its size in bytes (for the progress bar and the error message).
    """

    name: str
    folder: str
    sha256: str
    size: int

    def url(self) -> str:
        """Where to fetch it: GroupLens, or the mirror named by ``MOVIELENS_BASE_URL``."""
        base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        return f"{base.rstrip('/')}/{self.name}"


# SHA-256 and sizes as published in tensorflow/datasets (url_checksums/movielens.txt), each
# confirmed by at least one independent project pinning the same digest. ml-latest-small is a
# "latest" snapshot (generated 2018-09-26); if GroupLens ever regenerates it, this pin will say so.
ARCHIVES: dict[str, Archive] = {
    "movielens-100k": Archive(
        "ml-100k.zip",
        "ml-100k",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        4_924_029,
    ),
    "movielens-1m": Archive(
        "ml-1m.zip",
        "ml-1m",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        5_917_549,
    ),
    "movielens-latest-small": Archive(
        "ml-latest-small.zip",
        "ml-latest-small",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        978_202,
    ),
    "movielens-25m": Archive(
        "ml-25m.zip",
        "ml-25m",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        261_978_986,
    ),
}


class DownloadFailed(Exception):
    """The transfer itself failed (network, HTTP status); the caller adds what to do about it."""


def download(url: str, dest: Path, *, timeout: float = 60.0, progress: bool = True) -> str:
    """Stream ``url`` into ``dest`` with a progress bar; return the SHA-256 of what arrived.

    Raises:
        DownloadFailed: On any network or HTTP error (``dest`` may hold a partial file).
    """
    from tqdm import tqdm  # only needed on this rare path

    request = urllib.request.Request(url, headers={"User-Agent": "deep-recommender"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
                leave=False,
            ) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    # URLError, timeouts and resets are all OSErrors; ValueError is a malformed URL.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadFailed(str(reason)) from exc
    return digest.hexdigest()


def _is_unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be unpacked, or None if it is safe."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a zip into ``dest``, refusing it whole if any member could land outside ``dest``.

    Raises:
        DataError: The file is not a zip, or a member has an absolute path, a ``..`` component
            or is a symbolic link. Nothing is unpacked in that case.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                why = _is_unsafe(info)
                if why:
                    raise DataError(
                        archive,
                        f"member {info.filename!r} has {why}; refusing to unpack",
                        expected="an archive whose members stay inside one folder",
                    )
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DataError(archive, f"not a valid zip archive ({exc})") from None


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def fetch_archive(
    archive: Archive,
    folder: str | Path,
    *,
    url: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``archive``, verify its checksum and unpack it into ``folder``.

    The archive is written to a temporary file and unpacked into a temporary folder, both in
    the nearest existing ancestor of ``folder``; only a verified, fully unpacked tree is moved to
    ``folder/<archive.folder>``. Any failure leaves the file system as it was.

    Args:
        archive: What to fetch (name, top folder, pinned SHA-256).
        folder: Where it goes; created if needed.
        url: Override the URL (default :meth:`Archive.url`).
        timeout: Seconds to wait for the server.
        progress: Show a progress bar on stderr.

    Returns:
        ``folder / archive.folder``, holding the unpacked files.

    Raises:
        DataError: Offline, HTTP error, checksum mismatch or a bad archive; the message names
            the URL to fetch by hand and the folder to unpack it into.
    """
    folder = Path(folder)
    url = url or archive.url()
    by_hand = (
        f"the files of {url}: download it by hand and unzip it into {folder} "
        f"(so that {folder / archive.folder} holds them), or point data.path at them"
    )
    anchor = _existing_ancestor(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".part", dir=anchor)
    os.close(fd)
    part = Path(tmp_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.folder}.", suffix=".tmp", dir=anchor))
    try:
        log.info("downloading %s (%.1f MB) to %s", url, archive.size / 1e6, folder)
        try:
            got = download(url, part, timeout=timeout, progress=progress)
        except DownloadFailed as exc:
            raise DataError(folder, f"could not download {url}: {exc}", expected=by_hand) from None
        if got != archive.sha256:
            size = part.stat().st_size
            raise DataError(
                url,
                f"checksum mismatch: the download ({size} bytes) has SHA-256 {got}, the pinned "
                f"one is {archive.sha256} ({archive.size} bytes); nothing was kept",
                expected=by_hand,
            )
        safe_extract(part, staging)
        unpacked = staging / archive.folder
        if not unpacked.is_dir():
            problem = f"the archive has no top folder {archive.folder}/"
            raise DataError(url, problem, expected=by_hand)
        target = folder / archive.folder
        if target.exists():
            # Never delete what is there (the user may be filling it in by hand).
            raise DataError(target, "already exists; remove it to unpack the download here")
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(unpacked, target)
        log.info("unpacked %s into %s", archive.name, target)
        return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        shutil.rmtree(staging, ignore_errors=True)
