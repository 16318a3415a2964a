"""The memory guard: refuse a stage up front, with a clear message, when it would not fit.

A stage that outgrows the machine's memory is killed by the kernel with no message (or swaps for
hours). Each stage whose memory grows with the data estimates its peak from sizes it knows
cheaply (table shapes, row counts, batch sizes) and calls :func:`check` before the heavy work:
if the estimate exceeds the memory available to this process, it raises
:class:`MemoryLimitExceeded` (a :class:`~recommender.core.errors.RecommenderError`, so the stage
prints one line and exits 1, its previous outputs untouched) naming the stage, the estimate and
what it is made of, what is available, and what to do.

Available memory (:func:`available_memory`): ``RECOMMENDER_MEMORY_LIMIT`` (``2GB``, ``512MB``,
binary units) when set; else the smaller of the cgroup's free room (v2 ``memory.max``, v1
``hierarchical_memory_limit``, less what the group uses) and ``MemAvailable`` in
``/proc/meminfo``.

The estimates are deliberately simple upper-end sums of the big arrays, documented where they
are made (:func:`recommender.models.sizing.train_estimate`,
:func:`recommender.evaluation.evaluate.evaluate_estimate`, :func:`rows_estimate`); they leave
out what does not grow with the data. Nothing here imports TensorFlow or reads more than a few
small files.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from recommender.core.errors import RecommenderError

#: The environment variable that sets the memory a stage may use (``2GB``, ``512MB``, ``1.5G``).
LIMIT_ENV = "RECOMMENDER_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: A cgroup v1 limit at or above this is "no limit" (the kernel's default is 2^63 - page size).
_NO_LIMIT = 2**60

#: Resident bytes per rating of the pandas stages (ingest, validate, preprocess), measured at
#: 1M and 10M ratings (130-180 B) and rounded up.
TABLE_BYTES_PER_ROW = 200

#: TensorFlow, Keras and MLflow once imported (measured ~0.6 GB resident on this stack); the
#: train and evaluate stages check before importing them.
TENSORFLOW_RUNTIME_BYTES = 700 * 1024**2


class MemoryLimitExceeded(RecommenderError):
    """A stage's estimated peak memory is more than this process may use."""


@dataclass(frozen=True)
class Part:
    """One term of an estimate: what it is (shapes spelled out) and its bytes."""

    what: str
    nbytes: int


@dataclass(frozen=True)
class Estimate:
    """A stage's estimated peak memory: its parts, and what to do when it does not fit."""

    stage: str
    parts: tuple[Part, ...]
    #: The remedies that apply to this stage, most specific first.
    advice: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(p.nbytes for p in self.parts)


@dataclass(frozen=True)
class Available:
    """Memory this process may still allocate, and where the figure comes from."""

    nbytes: int
    source: str


def parse_size(text: str) -> int:
    """``"2GB"``, ``"512 MB"``, ``"1.5G"``, ``"64MiB"`` or ``"1048576"`` as bytes (binary units:
    1 KB = 1024 bytes, as cgroups and Docker count)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise RecommenderError(
            f"{LIMIT_ENV}={text!r} is not a size; expected e.g. 2GB, 512MB or 1073741824"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def human(nbytes: float) -> str:
    """``1536`` -> ``"1.5 KB"``, ``3 * 2**30`` -> ``"3.0 GB"`` (binary, as :func:`parse_size`)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(nbytes) < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"


def available_memory(
    environ: dict[str, str] | None = None,
    proc: str | Path = "/proc",
    cgroup: str | Path = "/sys/fs/cgroup",
) -> Available:
    """Memory this process may still allocate (see the module docstring for the rule).

    ``proc`` and ``cgroup`` name the file trees to read (tests point them at copies).
    """
    env = os.environ if environ is None else environ
    if env.get(LIMIT_ENV, "").strip():
        return Available(parse_size(env[LIMIT_ENV]), f"{LIMIT_ENV}={env[LIMIT_ENV].strip()}")
    proc, cgroup = Path(proc), Path(cgroup)
    free = _meminfo_available(proc / "meminfo")
    found = [Available(free, "MemAvailable in /proc/meminfo")] if free is not None else []
    room = _cgroup_room(proc / "self" / "cgroup", cgroup)
    if room is not None:
        limit, used = room
        found.append(
            Available(
                max(limit - used, 0),
                f"the cgroup's memory limit {human(limit)}, {human(used)} of it in use",
            )
        )
    if not found:  # not Linux, or nothing readable: nothing to hold the stage to
        return Available(2**63, "unknown (no /proc/meminfo or cgroup limit)")
    return min(found, key=lambda a: a.nbytes)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _meminfo_available(path: Path) -> int | None:
    text = _read(path)
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text or "", re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _stat(text: str | None, key: str) -> int:
    match = re.search(rf"^{key}\s+(\d+)", text or "", re.MULTILINE)
    return int(match.group(1)) if match else 0


def _number(path: Path) -> int | None:
    """A cgroup file holding one integer; None when absent or not a number (``max``)."""
    text = (_read(path) or "").strip()
    return int(text) if text.isdigit() else None


def _cgroup_room(self_cgroup: Path, root: Path) -> tuple[int, int] | None:
    """``(limit, in use)`` of the tightest cgroup memory limit over this process, or None.

    In use = usage less inactive file cache (what the kernel reclaims before it kills).
    """
    lines = (_read(self_cgroup) or "").splitlines()
    v2 = next((line[3:] for line in lines if line.startswith("0::")), None)
    if v2 is not None and (root / "cgroup.controllers").exists():  # cgroup v2
        best: tuple[int, int] | None = None
        folder = root / v2.strip().strip("/")
        while folder == root or root in folder.parents:  # the group and each parent
            limit = _number(folder / "memory.max")
            if limit is not None:
                used = (_number(folder / "memory.current") or 0) - _stat(
                    _read(folder / "memory.stat"), "inactive_file"
                )
                if best is None or limit - max(used, 0) < best[0] - best[1]:
                    best = (limit, max(used, 0))
            folder = folder.parent
        return best
    v1 = next(  # cgroup v1: "4:memory:/path" (or "memory,other:/path")
        (f[2] for f in (line.split(":", 2) for line in lines)
         if len(f) == 3 and "memory" in f[1].split(",")),
        None,
    )  # fmt: skip
    memory = root / "memory"
    for folder in ([memory / v1.strip().strip("/")] if v1 else []) + [memory]:
        stat = _read(folder / "memory.stat")
        if stat is None:
            continue
        # The group's limit with its parents' (hierarchical), else its own.
        limit = _stat(stat, "hierarchical_memory_limit") or _number(
            folder / "memory.limit_in_bytes"
        )
        if not limit or limit >= _NO_LIMIT:
            return None
        used = (_number(folder / "memory.usage_in_bytes") or 0) - _stat(stat, "total_inactive_file")
        return limit, max(used, 0)
    return None


def check(estimate: Estimate, available: Available | None = None) -> None:
    """Raise :class:`MemoryLimitExceeded` if ``estimate`` does not fit in ``available``
    (default: :func:`available_memory`)."""
    available = available_memory() if available is None else available
    if estimate.total <= available.nbytes:
        return
    parts = " + ".join(f"{p.what} = {human(p.nbytes)}" for p in estimate.parts if p.nbytes)
    remedies = [*estimate.advice, "run on a machine with more memory"]
    raise MemoryLimitExceeded(
        f"not enough memory: the {estimate.stage} stage needs about {human(estimate.total)} "
        f"but {human(available.nbytes)} is available ({available.source}); "
        f"the estimate: {parts}. To fix: {'; '.join(remedies)}; or, if more memory is in fact "
        f"free, raise the limit ({LIMIT_ENV}=...)"
    )


def rows_estimate(stage: str, rows: int, what: str) -> Estimate:
    """A pandas stage (ingest, validate, preprocess): ``rows`` x :data:`TABLE_BYTES_PER_ROW`."""
    return Estimate(
        stage,
        (Part(f"{what}: {rows:,} ratings x {TABLE_BYTES_PER_ROW} B", rows * TABLE_BYTES_PER_ROW),),
        ("a smaller data set (a sample of the ratings)",),
    )


def tensorflow_part() -> Part:
    """TensorFlow's own memory, unless this process has already imported it (then it is in use,
    not to come)."""
    loaded = "tensorflow" in sys.modules
    return Part("TensorFlow", 0 if loaded else TENSORFLOW_RUNTIME_BYTES)
