"""Failpoints: named places where a test makes the process die as a crash would (SIGKILL).

A stage that must survive being killed names the risky moments of its work with :func:`hit`
(``hit("register.before_alias")``). Nothing happens unless the environment variable
``RECOMMENDER_FAILPOINT`` names that point; then the process sends itself SIGKILL there: no
``finally`` blocks, no ``atexit``, no flushing, exactly what an OOM kill or a pulled plug leaves
behind. ``<name>@<n>`` fires on the n-th hit (for points inside a loop: an epoch, a file copy),
or, for a count the caller keeps (:func:`reached`), once it reaches n.

:func:`during_copies` turns every file copy inside a block into a hit, to kill a library (BentoML's
store) in the middle of copying a folder into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

ENV = "RECOMMENDER_FAILPOINT"
_hits: Counter[str] = Counter()


def armed(name: str) -> bool:
    """Whether ``RECOMMENDER_FAILPOINT`` names this point."""
    return os.environ.get(ENV, "").partition("@")[0] == name


def hit(name: str) -> None:
    """Die here (SIGKILL) if the environment names this point and its count is reached."""
    if not armed(name):
        return
    _hits[name] += 1
    wanted = int(os.environ[ENV].partition("@")[2] or 1)
    if _hits[name] >= wanted:
        os.kill(os.getpid(), signal.SIGKILL)


def reached(name: str, count: int) -> None:
    """Die here if the environment names this point and ``count`` (the events the caller has
    counted so far, e.g. batches trained) has reached its ``@<n>``: for events that are not
    seen one by one (Keras reports batches once per execution of several)."""
    if armed(name) and count >= int(os.environ[ENV].partition("@")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def during_copies(name: str, under: str | os.PathLike[str]) -> Iterator[None]:
    """Count each file copied into ``under`` inside the block as a hit of ``name``, after the copy.

    Copies are seen through ``shutil.copyfile``, which ``copy``, ``copy2``, ``copytree`` and
    ``move`` across file systems go through; copies elsewhere (temporary folders) do not count.
    """
    if not armed(name):
        yield
        return
    original = shutil.copyfile
    root = os.path.realpath(under)

    def copyfile(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(src, dst, *args, **kwargs)
        if os.path.realpath(dst).startswith(root + os.sep):
            hit(name)
        return result

    shutil.copyfile = copyfile
    try:
        yield
    finally:
        shutil.copyfile = original
