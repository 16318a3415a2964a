"""Every module a stage runs is among its ``dvc.yaml`` deps, so an edit to it reruns the stage.

For each stage, the script its ``cmd`` names is parsed with ``ast``, and so, transitively, is every
module under ``src/`` it imports (at module level or inside a function: both run); each file
found must lie under one of the stage's deps. A package's ``__init__.py`` counts, because
importing ``recommender.x.y`` runs it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

if __name__ == "__main__":  # run as a script (see the end): tests/ holds support.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import imported_names  # noqa: E402

SRC = "src"


def module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``src`` (a module or a package), if it is ours."""
    path = src.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


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


def _stage_code(root: Path, name: str, stage: dict) -> tuple[list[Path], set[Path]]:
    """A stage's deps, and the code it runs: the scripts its ``cmd`` names, the Python files
    among its deps outside ``src/`` (the service the package stage builds into the Bento), and
    every module under ``src/`` they import, transitively."""
    cmd = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
    scripts = [root / s for s in re.findall(r"[\w./-]+\.py", cmd) if (root / s).is_file()]
    assert scripts, f"stage {name}: no Python script found in its cmd {cmd!r}"
    deps = [(root / d).resolve() for d in stage.get("deps", [])]
    src = (root / SRC).resolve()
    scripts += [d for d in deps if d.suffix == ".py" and src not in d.parents]
    files: set[Path] = {s.resolve() for s in scripts}
    for script in scripts:
        files |= {f.resolve() for f in import_closure(script, root / SRC)}
    return deps, files


def missing_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, the files its code imports that none of its deps covers."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    gaps: dict[str, list[str]] = {}
    for name, stage in stages.items():
        deps, files = _stage_code(root, name, stage)
        missing = sorted(
            str(f.relative_to(root.resolve()))
            for f in files
            if not any(f == d or d in f.parents for d in deps)
        )
        if missing:
            gaps[name] = missing
    return gaps


def extra_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, the code deps its code does not run: a module under ``src/`` or a script
    outside its import closure, or a folder holding Python files (code deps are listed per
    module, so an edit reruns only the stages that run it; a folder of data, such as the Data
    Docs assets, is fine)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    code_roots = [(root / d).resolve() for d in (SRC, "pipeline")]
    extras: dict[str, list[str]] = {}
    for name, stage in stages.items():
        deps, files = _stage_code(root, name, stage)
        extra = []
        for dep in deps:
            if not any(dep == r or r in dep.parents for r in code_roots):
                continue
            if dep.is_dir() and any(dep.rglob("*.py")):
                extra.append(f"{dep.relative_to(root.resolve())}/ (a folder of code)")
            elif dep.suffix == ".py" and dep not in files:
                extra.append(str(dep.relative_to(root.resolve())))
        if extra:
            extras[name] = sorted(extra)
    return extras


def expected_code_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, its exact code deps under ``src/``: the import closure, sorted."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    src = (root / SRC).resolve()
    out = {}
    for name, stage in stages.items():
        _, files = _stage_code(root, name, stage)
        out[name] = sorted(str(f.relative_to(root.resolve())) for f in files if src in f.parents)
    return out


HOW = "(python tests/unit/test_dvc_deps.py prints every stage's exact src/ deps)"


def test_every_stage_depends_on_the_code_it_imports(project_root: Path) -> None:
    gaps = missing_deps(project_root)
    assert gaps == {}, f"dvc.yaml deps miss modules their stage imports {HOW}:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in gaps.items()
    )


def test_no_stage_depends_on_code_it_does_not_run(project_root: Path) -> None:
    # The other direction: a stage that lists a module it never imports reruns when that module
    # changes (editing evaluation/plots.py would retrain the model).
    extras = extra_deps(project_root)
    assert extras == {}, f"dvc.yaml deps list code their stage never runs {HOW}:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in extras.items()
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


def test_the_reverse_check_finds_code_a_stage_does_not_run(toy_project: Path) -> None:
    modules = ("__init__.py", "inner/__init__.py", "inner/work.py", "helpers.py")
    exact = ["pipeline/go.py", *(f"src/lib/{m}" for m in modules)]
    (toy_project / SRC / "lib" / "unused.py").write_text("")
    (toy_project / SRC / "lib" / "assets").mkdir()
    (toy_project / SRC / "lib" / "assets" / "style.css").write_text("")
    _write_stage(toy_project, [*exact, "src/lib/assets"])  # a folder of data is no code
    assert extra_deps(toy_project) == {}
    _write_stage(toy_project, [*exact, "src/lib/unused.py"])
    assert extra_deps(toy_project) == {"go": ["src/lib/unused.py"]}
    _write_stage(toy_project, ["pipeline/go.py", "src/lib"])  # covers it all, and more
    assert missing_deps(toy_project) == {}
    assert extra_deps(toy_project) == {"go": ["src/lib/ (a folder of code)"]}


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


if __name__ == "__main__":  # print what dvc.yaml's code deps should be
    for stage, files in expected_code_deps(Path(__file__).resolve().parents[2]).items():
        print(f"{stage}:")
        print("".join(f"      - {f}\n" for f in files), end="")
