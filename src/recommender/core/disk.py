"""A full disk, said in one line.

A stage that runs out of space fails deep inside a library: MLflow's artifact download gathers
one ``[Errno 28]`` per file into a message it then cuts, ``shutil.copytree`` raises an error
listing every file it could not copy (24 KB for a Bento). None of that is news to the user, who
needs one thing: which filesystem is full.
"""

from __future__ import annotations

import errno
import re
import shutil
import tempfile
from pathlib import Path

from recommender.core.errors import exception_chain

#: The errors a full filesystem (or a user's full quota) raises.
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: ``[Errno 28] No space left on device: '/path'`` as ``str(OSError)`` writes it, wherever a
#: library folded that text into its own exception; the path is optional, and a copy names its
#: source and then (``-> '/destination'``) the file being written.
_ENOSPC_TEXT = re.compile(
    rf"\[Errno (?:{errno.ENOSPC}|{errno.EDQUOT})\] "
    r"(?:No space left on device|Disk quota exceeded)(?:: '([^']+)'(?: -> '([^']+)')?)?"
)


def _full_path(exc: BaseException) -> tuple[bool, str | None]:
    """Whether ``exc`` (or what it wraps) is a full disk, and the path it names, if any."""
    for err in exception_chain(exc):
        if isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS:
            # A copy's error names its source first; the file being written is filename2.
            written = err.filename2 or err.filename
            return True, str(written) if isinstance(written, str | Path) else None
        if isinstance(err, shutil.Error) and err.args and isinstance(err.args[0], list):
            for entry in err.args[0]:  # (source, destination, why) per file that failed
                if len(entry) == 3 and _ENOSPC_TEXT.search(str(entry[2])):
                    return True, str(entry[1])
        if match := _ENOSPC_TEXT.search(str(err)):
            return True, match.group(2) or match.group(1)
    return False, None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def full_disk(exc: BaseException) -> str | None:
    """A one-line error for an exception that means a filesystem is full; None otherwise.

    Names the path being written, the space left on its filesystem, and, when the path is under
    the temporary folder, ``TMPDIR`` (the stage's scratch files, MLflow's and BentoML's
    downloads and builds all go there).
    """
    full, path = _full_path(exc)
    if not full:
        return None
    if path is None:
        return (
            "no space left on device (the library did not say which file it was writing); "
            f"check `df -h` for a full filesystem, e.g. the temporary folder "
            f"{tempfile.gettempdir()} (TMPDIR), then rerun the stage"
        )
    where = Path(path)
    temp = Path(tempfile.gettempdir())
    hint = ""
    if where.is_relative_to(temp):
        hint = f", or point TMPDIR (now {temp}) at a larger filesystem"
    try:  # its size, not its free space: the stage's scratch files are gone by now
        size = f" (a filesystem of {_size(shutil.disk_usage(_existing(where)).total)})"
    except OSError:
        size = ""
    return f"no space left on device writing {path}{size}: free some space{hint}, then rerun"
