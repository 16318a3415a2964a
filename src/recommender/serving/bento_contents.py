"""What the Bento carries: the library modules the service imports, and pinned requirement sets.

Modules: :func:`modules` is the closure of ``serving/service.py``'s module-level imports inside
``recommender``, plus the modules the service imports lazily (:data:`LAZY`): ``stack/``,
``training/``, ``evaluation/`` and the other stages stay out.

Requirements: the Bento installs only what the service imports, pinned from ``requirements.lock``.

The service needs far less than the project: BentoML (with its server), NumPy, pandas (the
bundle's tables) and pyarrow (its parquet files), pydantic and PyYAML (the model layout), for a
family scored by its factors
(``two_tower``'s retrieval factors, the matrix-factorization families), plus FAISS for a model
with an ANN index, plus OpenTelemetry's OTLP/HTTP exporter for ``serve.inference_log_exporter:
otlp``. A family scored by its Keras graph (``ncf``, ``hybrid``, ``autorec`` ...)
also loads TensorFlow and Keras in the worker, so its Bento installs them too: the package stage
picks the sets by the champion's bundle and ``serve`` (:func:`sets_for`), and carries
``recommender/models/`` only then (:data:`LAZY`).

Each set is the dependency closure of its :data:`ROOTS` in this environment (installed from
``requirements.lock``), written as ``name==version`` lines from the lock into ``requirements/``
(``python -m recommender.serving.bento_contents`` rewrites them after the lock changes);
an extra set lists only what the base set lacks. ``tests/serving/test_bento_contents.py``
checks that every line is a pin of the lock with the same version, and that each set is still
closed under its packages' requirements.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

#: The distributions each set starts from (its closure is what it pins).
ROOTS: dict[str, tuple[str, ...]] = {
    "base": ("bentoml", "numpy", "pandas", "pyarrow", "pydantic", "PyYAML"),
    "ann": ("faiss-cpu",),
    "keras": ("keras", "tensorflow-cpu"),
    "otlp": ("opentelemetry-exporter-otlp-proto-http",),
}
#: Where the sets are written (package data, so the package stage finds them installed).
FOLDER = Path(__file__).with_name("requirements")
#: Packaging tools pip leaves out of a lock (``pip freeze``); every Python image has them.
TOOLS = frozenset({"pip", "setuptools", "wheel"})
#: Files of the library, not modules, that the service reads at run time (relative to the folder
#: holding ``recommender/``): the inference log's logging config.
DATA_FILES = ("recommender/serving/inference_log.yaml",)
#: Modules the service imports inside functions (the closure of their module-level imports is
#: carried too): always, with an ANN index, for a family scored by its Keras graph, and for an
#: inference log sent over OTLP.
LAZY: dict[str, tuple[str, ...]] = {
    "base": ("recommender.tracking.layout", "recommender.scoring.bundle"),
    "ann": ("recommender.scoring.ann",),
    "keras": ("recommender.core.imports", "recommender.models.factory"),
    "otlp": ("recommender.serving.inference_otlp",),
}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: str | Path) -> dict[str, str]:
    """``{normalized name: version}`` of a file of ``name==version`` lines (comments skipped)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path}: {line!r} is not pinned (name==version)")
        pins[normalize(name)] = version.strip()
    return pins


def closure(roots: Iterable[str]) -> set[str]:
    """The installed distributions ``roots`` need, themselves included (no extras)."""
    found: set[str] = set()
    todo = [normalize(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in TOOLS:
            continue
        found.add(name)
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalize(req.name))
    return found


def compute(lock: str | Path) -> dict[str, dict[str, str]]:
    """Each set's pins, from ``lock``: the base set whole, the others less the base set."""
    pins = read_pins(lock)
    base = closure(ROOTS["base"])
    sets = {}
    for name, roots in ROOTS.items():
        names = closure(roots) | base if name != "base" else base
        missing = sorted(n for n in names if n not in pins)
        if missing:
            raise ValueError(f"{lock} lacks pins the serving set {name!r} needs: {missing}")
        keep = names if name == "base" else names - base
        sets[name] = {n: pins[n] for n in sorted(keep)}
    return sets


def sets_for(keras: bool, ann: bool, otlp: bool = False) -> tuple[str, ...]:
    """The sets a Bento installs: the base set, FAISS with an ANN index, Keras for its graph, the
    OTLP exporter for an inference log sent to a collector."""
    extras = (("ann", ann), ("keras", keras), ("otlp", otlp))
    return ("base", *(name for name, wanted in extras if wanted))


def requirements_text(names: Iterable[str], lock: str | Path | None = None) -> str:
    """The Bento's ``requirements.txt`` from the named sets; with ``lock``, each pin is checked
    to be the lock's (a lock changed without rewriting the sets fails the build, naming them)."""
    pins: dict[str, str] = {}
    for name in names:
        pins.update(read_pins(FOLDER / f"{name}.txt"))
    if lock is not None:
        locked = read_pins(lock)
        stale = sorted(
            f"{n}=={v} (lock: {locked.get(n)})" for n, v in pins.items() if locked.get(n) != v
        )
        if stale:
            raise ValueError(
                f"the serving requirement sets disagree with {lock}: {', '.join(stale)}; rewrite "
                "them with `python -m recommender.serving.bento_contents`"
            )
    return "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def write(lock: str | Path, folder: Path = FOLDER) -> dict[str, int]:
    """Write each set to ``folder/<set>.txt``; returns the number of pins of each."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, pins in compute(lock).items():
        roots = ", ".join(ROOTS[name])
        head = f"# Serving set {name!r}: the closure of {roots}, pinned from {Path(lock).name}.\n"
        if name != "base":
            head += "# Installed on top of base.txt.\n"
        body = "".join(f"{n}=={v}\n" for n, v in pins.items())
        (folder / f"{name}.txt").write_text(head + body)
        counts[name] = len(pins)
    return counts


def installed_bytes(names: Iterable[str]) -> int:
    """What the named distributions take installed here (their RECORD files' sizes)."""
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total


def _module_file(root: Path, name: str) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _top_level_imports(path: Path, name: str) -> set[str]:
    """The modules ``path`` imports at module level (``try``/``if`` blocks included), and for
    ``from X import y`` both ``X`` and ``X.y`` (``y`` may be a module)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    nodes = [
        n
        for stmt in tree.body
        for n in (ast.walk(stmt) if isinstance(stmt, ast.Try | ast.If) else [stmt])
    ]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules(service: str | Path, sets: Iterable[str], root: Path | None = None) -> list[Path]:
    """The ``recommender`` files the service needs with the named sets, relative to ``root``
    (the folder holding ``recommender/``; default: this installed library's)."""
    import recommender

    root = root or Path(recommender.__file__).parent.parent
    todo = sorted(_top_level_imports(Path(service), "service"))
    for name in sets:
        todo += LAZY.get(name, ())
    seen: dict[str, Path] = {}
    while todo:
        dotted = todo.pop()
        if dotted.partition(".")[0] != "recommender":
            continue
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages run their __init__ first
            name = ".".join(parts[:i])
            path = _module_file(root, name)
            if path is not None and name not in seen:
                seen[name] = path
                todo += sorted(_top_level_imports(path, name))
    return sorted(p.relative_to(root) for p in seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", default="requirements.lock")
    args = parser.parse_args()
    for name, count in write(args.lock).items():
        print(f"{FOLDER / name}.txt: {count} pins")


if __name__ == "__main__":
    main()
