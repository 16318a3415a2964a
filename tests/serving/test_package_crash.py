"""The package stage killed inside BentoML's store copies, and a champion that cannot load.

Each test runs ``pipeline/package.py`` as a real process against the session's registry (see
``conftest.py``) and a BentoML store of its own, so the session's store stays as it was.
The stage runs ``python -m bentoml build`` itself, with no wrapper: the kill inside BentoML's copy
of the Bento comes from ``hooks/sitecustomize.py``, which only these tests put on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from serving_helpers import SERVING, Packaged, env_for_children
from small_fs import on_small_tmpfs
from support import ROOT, change_first_user_id

from recommender.serving.packaging import FINISHED

pytestmark = pytest.mark.slow

#: The test-only start-up hook that arms ``package.bento_copy`` inside ``bentoml build``.
HOOKS = Path(__file__).with_name("hooks")


def _stage(packaged: Packaged, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(packaged.params.model_dump(mode="json", by_alias=True)))
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    args = [
        sys.executable, str(ROOT / "pipeline" / "package.py"), "--params", str(params),
        "--serving", str(SERVING), "--bentoml-home", str(tmp_path / "bentoml"),
        "--requirements", str(ROOT / "requirements.lock"), "--out", str(tmp_path / "package.json"),
    ]  # fmt: skip
    env = {**env_for_children(packaged), "BENTOML_HOME": str(tmp_path / "bentoml")}
    return args, {**env, "TMPDIR": str(scratch)}


def _entries(home: Path, kind: str) -> list[Path]:
    return sorted(p for p in (home / kind).glob("*/*") if p.is_dir())


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("point", "kind"), [("package.model_copy@2", "models"), ("package.bento_copy@3", "bentos")]
)
def test_killed_inside_a_store_copy_a_plain_rerun_converges(
    packaged: Packaged, tmp_path: Path, point: str, kind: str
) -> None:
    args, env = _stage(packaged, tmp_path)
    home, scratch = tmp_path / "bentoml", Path(env["TMPDIR"])

    hook = {"PYTHONPATH": str(HOOKS)} if kind == "bentos" else {}
    killed = _run(args, {**env, **hook, "RECOMMENDER_FAILPOINT": point}, tmp_path)

    if kind == "models":  # the stage itself copies the model: it dies (SIGKILL) mid-copy
        assert killed.returncode == -9, killed.stderr
    else:  # its `bentoml build` child dies mid-copy; the stage says so
        assert killed.returncode == 1, killed.stderr
        assert "bentoml build was killed (signal 9)" in killed.stderr
    partial = _entries(home, kind)
    assert partial and not any((p / FINISHED).exists() for p in partial)
    assert not (tmp_path / "package.json").exists()

    rerun = _run(args, env, tmp_path)

    assert rerun.returncode == 0, rerun.stderr
    assert "unfinished store entry" in rerun.stderr
    record = json.loads((tmp_path / "package.json").read_text())
    assert record["packaged"] is True and record["version"] == packaged.version
    for entry in _entries(home, "models") + _entries(home, "bentos"):
        assert (entry / FINISHED).is_file(), entry
    assert not any(p in _entries(home, kind) for p in partial)
    listed = _run([sys.executable, "-m", "bentoml", "list"], env, tmp_path)
    assert listed.returncode == 0 and record["bento"].split(":")[1] in listed.stdout
    assert list(scratch.iterdir()) == []  # nothing of either run left in the temp dir
    assert not list(tmp_path.glob(".package.json.*.tmp"))


def test_without_the_test_hook_the_bento_failpoint_does_nothing(
    packaged: Packaged, tmp_path: Path
) -> None:
    # Production runs bentoml itself: the failpoint lives only in the tests' start-up hook.
    args, env = _stage(packaged, tmp_path)

    proc = _run(args, {**env, "RECOMMENDER_FAILPOINT": "package.bento_copy@1"}, tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "package.json").read_text())["packaged"] is True
    for entry in _entries(tmp_path / "bentoml", "bentos"):
        assert (entry / FINISHED).is_file(), entry


def test_a_champion_that_cannot_load_is_not_packaged(packaged: Packaged, tmp_path: Path) -> None:
    args, env = _stage(packaged, tmp_path)
    first = _run(args, env, tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "package.json").read_bytes()
    (model,) = _entries(tmp_path / "bentoml", "models")
    for path in model.rglob("model.keras"):  # the store's copy, truncated
        path.write_bytes(path.read_bytes()[:100])
    bentos = _entries(tmp_path / "bentoml", "bentos")

    again = _run(args, env, tmp_path)

    assert again.returncode == 1
    assert f"the champion {packaged.params.tracking.registered_model} version " in again.stderr
    assert "cannot be loaded and scored" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "package.json").read_bytes() == before  # the last good record stays
    assert _entries(tmp_path / "bentoml", "bentos") == bentos  # and no Bento around it


def test_one_changed_byte_in_the_champion_stops_packaging_naming_the_file(
    packaged: Packaged, tmp_path: Path
) -> None:
    args, env = _stage(packaged, tmp_path)
    first = _run(args, env, tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "package.json").read_bytes()
    (model,) = _entries(tmp_path / "bentoml", "models")
    (vocab,) = model.rglob("vocab.json")  # the store's copy: one user id's digit changed
    change_first_user_id(vocab)
    bentos = _entries(tmp_path / "bentoml", "bentos")

    again = _run(args, env, tmp_path)

    assert again.returncode == 1
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, again.stderr
    assert f"{vocab}: changed since the model was saved" in lines[0]
    assert "Traceback" not in again.stderr
    assert (tmp_path / "package.json").read_bytes() == before
    assert _entries(tmp_path / "bentoml", "bentos") == bentos


def test_a_full_temp_folder_stops_packaging_in_one_line(packaged: Packaged, tmp_path: Path) -> None:
    args, env = _stage(packaged, tmp_path)
    full = tmp_path / "full"  # MLflow's download of the champion and the Bento's build go here

    proc = _run(on_small_tmpfs(args, full, "256k"), {**env, "TMPDIR": str(full)}, tmp_path)

    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(
        f"error: stage 'package' failed: no space left on device writing {full}/"
    ), errors[0]
    assert "TMPDIR" in errors[0] and len(errors[0]) < 600
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 4000, proc.stderr
    assert not (tmp_path / "package.json").exists()
