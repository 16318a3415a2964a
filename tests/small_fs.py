"""Running a command with a small, full-able filesystem mounted where a test wants it."""

from __future__ import annotations

import os
from pathlib import Path


def on_small_tmpfs(cmd: list[str], mountpoint: str | Path, size: str = "64k") -> list[str]:
    """``cmd`` to run with a tmpfs of ``size`` mounted at ``mountpoint``.

    The mount lives in a private mount namespace of the command's own (``unshare``), so nothing
    outside sees it and it goes with the process; as root no user namespace is needed, otherwise
    ``--map-root-user`` lends the right to mount one.
    """
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    return ["unshare", "--mount", *user, "--propagation", "private", "sh", "-c", script,
            str(mountpoint), size, *cmd]  # fmt: skip
