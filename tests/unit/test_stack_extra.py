"""``python -m recommender.stack up`` without the ``stack`` extra: one line naming the extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from recommender.stack import __main__ as stack_cli


def test_up_without_the_extra_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg2" else real(name, *a)
    )
    assert stack_cli.main(["up", "--dir", str(tmp_path / "stack")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "'stack' extra" in err and "psycopg2-binary is not installed" in err, err
    assert "pip install -e '.[stack]'" in err, err
    assert not (tmp_path / "stack").exists()  # nothing started, nothing written


def test_the_projects_environment_has_the_extra() -> None:
    # make install installs requirements.lock, which holds every extra's pins.
    assert stack_cli.missing_extra() == []
