"""The source tags MLflow infers for a run name no place on the machine that ran it.

MLflow's git context records the first remote's URL as ``mlflow.source.git.repoURL``: for a clone
of a local folder, that folder's absolute path. Its default context records ``sys.argv[0]`` as
``mlflow.source.name``, absolute when the entry point was started by its absolute path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import child_env

from recommender.tracking import portable_remote, portable_source_name, portable_source_tags


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://user:tok@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://tok@github.com/org/repo.git?x=1#frag", "https://github.com/org/repo.git"),
        ("ssh://git@host:2222/org/repo.git", "ssh://host:2222/org/repo.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("github.com:org/repo.git", "github.com:org/repo.git"),
        # Local remotes: paths of one machine.
        ("/home/me/work/repo", None),
        ("../repo", None),
        ("repo", None),
        ("file:///home/me/work/repo", None),
        ("C:\\work\\repo", None),
        ("", None),
        (None, None),
    ],
)
def test_portable_remote(url: str | None, recorded: str | None) -> None:
    assert portable_remote(url) == recorded


def test_portable_source_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "clone"
    (repo / ".git").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert portable_source_name(str(repo / "pipeline" / "train.py")) == "pipeline/train.py"
    assert portable_source_name(str(tmp_path / "work" / "x" / "run.py")) == "x/run.py"
    assert portable_source_name(str(tmp_path / "elsewhere" / "run.py")) == "run.py"
    assert portable_source_name("pipeline/train.py") == "pipeline/train.py"


def test_portable_source_tags_drop_a_local_remote_and_keep_the_rest() -> None:
    tags = {
        "mlflow.source.git.repoURL": "/home/me/upstream",
        "mlflow.source.git.commit": "abc",
        "mlflow.source.name": "pipeline/train.py",
        "mlflow.user": "me",
    }
    assert portable_source_tags(tags) == {
        "mlflow.source.git.commit": "abc",
        "mlflow.source.name": "pipeline/train.py",
        "mlflow.user": "me",
    }
    remote = {**tags, "mlflow.source.git.repoURL": "https://u:tok@h/org/r.git"}
    assert portable_source_tags(remote)["mlflow.source.git.repoURL"] == "https://h/org/r.git"


RESOLVE = textwrap.dedent(
    """
    import json, sys
    sys.argv[0] = sys.argv[1]  # the entry point, by its absolute path, as MLflow sees it
    from mlflow.tracking.context.registry import resolve_tags
    from recommender.tracking import portable_run_context

    before = resolve_tags()
    portable_run_context()
    portable_run_context()  # once per process, however often a stage configures
    print(json.dumps({"before": before, "after": resolve_tags()}))
    """
)


def _git(*args: str, cwd: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.parametrize(
    ("origin", "recorded"),
    [
        (None, None),
        (
            "https://ci:tok@git.example.org/org/recommender.git",
            "https://git.example.org/org/recommender.git",
        ),
    ],
    ids=["clone-of-a-folder", "network-remote"],
)
def test_runs_record_no_path_of_the_clone(
    tmp_path: Path, origin: str | None, recorded: str | None
) -> None:
    upstream, clone = tmp_path / "upstream", tmp_path / "clone"
    (upstream / "pipeline").mkdir(parents=True)
    (upstream / "pipeline" / "train.py").write_text("")
    _git("init", "-q", cwd=upstream)
    _git("add", "-A", cwd=upstream)
    _git("commit", "-qm", "init", cwd=upstream)
    _git("clone", "-q", str(upstream), str(clone), cwd=tmp_path)
    if origin:
        _git("remote", "set-url", "origin", origin, cwd=clone)
    proc = subprocess.run(
        [sys.executable, "-c", RESOLVE, str(clone / "pipeline" / "train.py")],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    tags = json.loads(proc.stdout.strip().splitlines()[-1])
    # What MLflow alone records: the upstream folder (or the remote) and the script's path.
    assert tags["before"]["mlflow.source.git.repoURL"] == (recorded or str(upstream))
    assert tags["before"]["mlflow.source.name"] == str(clone / "pipeline" / "train.py")
    after = tags["after"]
    assert after.get("mlflow.source.git.repoURL") == recorded
    assert after["mlflow.source.name"] == "pipeline/train.py"
    assert after["mlflow.source.git.commit"] == tags["before"]["mlflow.source.git.commit"]
    assert str(tmp_path) not in json.dumps(after) and "tok" not in json.dumps(after)
