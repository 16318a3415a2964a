"""The shape of ``src/``: short functions, stages that stand on their own, no import circles.

- A function runs at most :data:`MAX_LINES` lines (``def`` to last line, docstring included),
  unless the line above it (above its decorators) says why, starting ``# Long because``.
- No stage package (:data:`STAGES`) imports another one: what two stages share lives in a
  neutral package (``core``, ``dataset``, ``scoring``, ``tracking``, ...), so that editing one
  stage's code reruns only that stage and what follows it (see ``test_dvc_deps.py``).
- No two modules import each other, directly or around a longer circle.

Imports are read with ``ast`` wherever they are (module level, inside functions, under
``TYPE_CHECKING``): each is a dependency of the module's code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from support import imported_names

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "recommender"
#: Longest a function may be without a written reason.
MAX_LINES = 80
REASON = "# Long because"
#: One package per DVC stage, under ``src/recommender``.
STAGES = ("data", "validation", "preprocess", "training", "evaluation", "registry", "serving")


def module_name(path: Path) -> str:
    """``src/recommender/a/b.py`` -> ``recommender.a.b`` (a package's ``__init__``: the package)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the library by dotted name."""
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def long_functions(path: Path, limit: int = MAX_LINES) -> Iterator[tuple[str, int, int]]:
    """``(name, first line, length)`` of each function in ``path`` over ``limit`` lines whose
    line above (above the decorators) does not start with :data:`REASON`."""
    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[top - 2].strip() if top >= 2 else ""
        if length > limit and not above.startswith(REASON):
            yield node.name, node.lineno, length


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The library modules that module ``name`` (at ``path``) imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = imported_names(path, package)
    found = set()
    for dotted in names:
        while dotted and dotted not in known:  # a.b.func -> a.b; an outside package -> ""
            dotted = dotted.rpartition(".")[0]
        if dotted and dotted != name:
            found.add(dotted)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports."""
    known = modules()
    return {name: imported(path, name, known) for name, path in known.items()}


def stage_of(module: str) -> str | None:
    """The stage package ``module`` belongs to, or None for shared code."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each strongly connected group of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_function_runs_over_80_lines_without_a_reason() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in sorted((SRC / PACKAGE).rglob("*.py"))
        for name, line, length in long_functions(path)
    ]
    assert offenders == [], (
        f"functions over {MAX_LINES} lines: split them into named steps, or write why one reads "
        f"best long on the line above its def ('{REASON} ...'):\n  " + "\n  ".join(offenders)
    )


def test_no_stage_package_imports_another() -> None:
    crossings = [
        f"{stage_of(m)} imports {stage_of(t)}: {m} -> {t}"
        for m, targets in sorted(import_graph().items())
        for t in sorted(targets)
        if stage_of(m) and stage_of(t) and stage_of(m) != stage_of(t)
    ]
    assert crossings == [], "move what two stages share out of both:\n  " + "\n  ".join(crossings)


def test_no_two_modules_import_each_other() -> None:
    found = circles(import_graph())
    assert found == [], "import circles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The helpers on made-up code: a long function, a reason, stages, relative imports, circles."""
    body = "\n".join(f"    x = {i}" for i in range(80))
    reason = "# Long because it is."
    code = f"def short():\n    pass\n\n\ndef long():\n{body}\n\n\n{reason}\ndef ok():\n{body}\n"
    (tmp_path / "m.py").write_text(code)
    assert list(long_functions(tmp_path / "m.py")) == [("long", 5, 81)]

    assert stage_of("recommender.training.fit") == "training"
    assert stage_of("recommender.scoring.bundle") is None
    known = {"recommender.a": Path(), "recommender.a.b": Path(), "recommender.a.c": Path()}
    (tmp_path / "b.py").write_text("from . import c\nfrom .c import f\nimport numpy\n")
    assert imported(tmp_path / "b.py", "recommender.a.b", known) == {
        "recommender.a",
        "recommender.a.c",
    }
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
