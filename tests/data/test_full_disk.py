"""A full disk ends a stage with one line naming the path, not a library's traceback."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from small_fs import on_small_tmpfs
from support import ROOT, child_env

from recommender.core.disk import full_disk


def test_every_form_a_full_disk_takes_is_one_line_naming_the_path() -> None:
    folded = RuntimeError(  # MLflow's download: one [Errno 28] per file, then cut
        "; ".join(f"[Errno 28] No space left on device: '/tmp/d/f{i}'" for i in range(80))
    )
    copy = shutil.Error(  # copytree: (source, destination, why) per file
        [(f"/src/f{i}", f"/tmp/b/f{i}", "[Errno 28] No space left on device") for i in range(3)]
    )
    wrapped = RuntimeError("download failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/tmp/c/model.keras")
    for exc, path in (
        (OSError(errno.ENOSPC, "No space left on device", "/tmp/a/x.parquet"), "/tmp/a/x.parquet"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/home/q"), "/home/q"),
        (folded, "/tmp/d/f0"),
        (copy, "/tmp/b/f0"),
        (wrapped, "/tmp/c/model.keras"),
        (OSError(errno.ENOSPC, "No space left on device", "/store/a.py", None, "/tmp/e/a.py"),
         "/tmp/e/a.py"),  # a copy: source, then the file being written
        (RuntimeError("[Errno 28] No space left on device: '/store/b' -> '/tmp/f/b'"), "/tmp/f/b"),
    ):  # fmt: skip
        message = full_disk(exc)
        assert message is not None and "\n" not in message and len(message) < 300
        assert message.startswith(f"no space left on device writing {path} (a filesystem of ")
    no_path = full_disk(OSError(errno.ENOSPC, "No space left on device"))
    assert no_path is not None and "TMPDIR" in no_path
    assert full_disk(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert full_disk(ValueError("no space here")) is None


def test_ingest_onto_a_full_filesystem_fails_in_one_line_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    full = tmp_path / "full"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 1}))
    stage = [sys.executable, str(ROOT / "pipeline" / "ingest.py"), "--params", str(params),
             "--out", str(full / "interim")]  # fmt: skip

    proc = subprocess.run(
        on_small_tmpfs(stage, full, "64k"),
        env=child_env(TMPDIR=str(full)),  # the stage's scratch folder on the same small disk
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(
        f"error: stage 'ingest' failed: no space left on device writing {full}/"
    )
    assert "(a filesystem of 64 KB)" in errors[0] and "TMPDIR" in errors[0]
    assert len(proc.stderr) < 2000, proc.stderr
