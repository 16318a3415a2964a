"""Every module a stage runs is among its ``dvc.yaml`` deps, so an edit to it reruns the stage.

For each stage, the script its ``cmd`` names is parsed with ``ast``, and so, transitively, is every
module under ``src/`` it imports (at module level or inside a function: both run); each file
found must lie under one of the stage's deps. A package's ``__init__.py`` counts, because
importing ``recommender.x.y`` runs it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

SRC = "src"


def module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``src`` (a module or a package), if it is ours."""
    path = src.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, package: str) -> set[str]:
    """Dotted names ``path`` imports anywhere in its body (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # may be submodules
    return names


def import_closure(script: Path, src: Path) -> set[Path]:
    """Files under ``src`` that running ``script`` may import, transitively."""
    seen: set[Path] = set()
    todo = [(script, "")]
    while todo:
        path, package = todo.pop()
        for name in imported_names(path, package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                found = module_file(src, ".".join(parts[:i]))
                if found and found not in seen:
                    seen.add(found)
                    is_package = found.name == "__init__.py"
                    todo.append((found, ".".join(parts[: i if is_package else i - 1])))
    return seen


def missing_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, the files its code imports that none of its deps covers."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    gaps: dict[str, list[str]] = {}
    for name, stage in stages.items():
        cmd = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
        scripts = [root / s for s in re.findall(r"[\w./-]+\.py", cmd) if (root / s).is_file()]
        assert scripts, f"stage {name}: no Python script found in its cmd {cmd!r}"
        deps = [(root / d).resolve() for d in stage.get("deps", [])]
        files: set[Path] = set(scripts)
        for script in scripts:
            files |= import_closure(script, root / SRC)
        missing = sorted(
            str(f.relative_to(root))
            for f in files
            if not any(f.resolve() == d or d in f.resolve().parents for d in deps)
        )
        if missing:
            gaps[name] = missing
    return gaps


def test_every_stage_depends_on_the_code_it_imports(project_root: Path) -> None:
    gaps = missing_deps(project_root)
    assert gaps == {}, "dvc.yaml deps miss modules their stage imports:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in gaps.items()
    )


def test_bytecode_is_not_part_of_a_code_dep(project_root: Path) -> None:
    # Python writes src/recommender/**/__pycache__ while stages run; were it part of a folder dep,
    # a later stage importing another module of that folder would change the hash an earlier
    # stage recorded, and the next `dvc repro` would rerun it (train included).
    from dvc.fs import LocalFileSystem
    from dvc.ignore import DvcIgnoreFilter

    ignore = DvcIgnoreFilter(LocalFileSystem(), str(project_root))
    code = project_root / SRC / "recommender" / "core"
    assert ignore.is_ignored_file(str(code / "__pycache__" / "config.cpython-311.pyc"))
    assert ignore.is_ignored_dir(str(code / "__pycache__"))
    assert not ignore.is_ignored_file(str(code / "config.py"))


@pytest.fixture()
def toy_project(tmp_path: Path) -> Path:
    """A miniature project: one stage whose script imports a module through a package."""
    (tmp_path / "pipeline").mkdir()
    pkg = tmp_path / SRC / "lib"
    (pkg / "inner").mkdir(parents=True)
    (tmp_path / "pipeline" / "go.py").write_text("def main():\n    from lib.inner import work\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "inner" / "__init__.py").write_text("from .work import run\n")
    (pkg / "inner" / "work.py").write_text("import lib.helpers\n")
    (pkg / "helpers.py").write_text("import json\n")
    return tmp_path


def _write_stage(root: Path, deps: list[str]) -> None:
    stage = {"cmd": "python pipeline/go.py", "deps": deps}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"go": stage}}))


def test_the_check_finds_a_module_imported_inside_a_function_through_a_package(
    toy_project: Path,
) -> None:
    _write_stage(toy_project, ["pipeline/go.py", "src/lib/__init__.py", "src/lib/inner"])
    assert missing_deps(toy_project) == {"go": ["src/lib/helpers.py"]}
    _write_stage(toy_project, ["pipeline/go.py", "src/lib"])  # a whole folder covers all of it
    assert missing_deps(toy_project) == {}
    _write_stage(toy_project, ["src/lib"])  # the script itself is a dep too
    assert missing_deps(toy_project) == {"go": ["pipeline/go.py"]}


SLOW_FOLDERS = {"model": "slow", "serving": "slow", "integration": "integration", "e2e": "e2e"}


def test_slow_folders_hold_only_marked_tests(project_root: Path) -> None:
    # `make test-fast` collects tests/unit and tests/data only; that is the same as deselecting
    # slow, integration and e2e tests as long as every module of the other folders is marked.
    unmarked = []
    for folder, marker in SLOW_FOLDERS.items():
        for module in sorted((project_root / "tests" / folder).glob("test_*.py")):
            tree = ast.parse(module.read_text())
            marks = [
                ast.unparse(node.value)
                for node in tree.body
                if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            ]
            if not any(f"pytest.mark.{marker}" in m for m in marks):
                unmarked.append(f"{module.relative_to(project_root)} (needs pytest.mark.{marker})")
    assert unmarked == []
