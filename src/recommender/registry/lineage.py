"""Lineage: what a candidate model was made from (run, commit, data, params, the upstream
stages of ``dvc.lock``), as model version tags."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recommender import tracking
from recommender.core.config import Params
from recommender.tracking.registry import RUN_TAG


def _lock_paths(items: Any) -> list[str]:
    """The paths of a stage's ``deps`` or ``outs`` as ``dvc.lock`` (``- path: p``) or
    ``dvc.yaml`` (``- p`` or ``- p: {options}``) lists them, normalised."""
    paths = []
    for item in items or []:
        if isinstance(item, dict):
            item = item.get("path", next(iter(item), None) if len(item) == 1 else None)
        if isinstance(item, str) and item:
            paths.append(posixpath.normpath(item))
    return paths


def _overlaps(a: str, b: str) -> bool:
    """Whether one path is the other or inside it (a stage's out folder holds a file read)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream_stages(stages: dict[str, Any], reads: list[str], stage: str = "register") -> set[str]:
    """The stages of a ``dvc.lock`` whose outputs ``reads`` come from, directly or through others.

    Args:
        stages: The lock's ``stages`` mapping.
        reads: Paths (relative to the lock's folder) the stage reads.
        stage: The stage itself, never counted (its entry records its own previous run).
    """
    found: set[str] = set()
    frontier = list(reads)
    while frontier:
        path = frontier.pop()
        for other, entry in stages.items():
            if other == stage or other in found or not isinstance(entry, dict):
                continue
            outs = [out for key in ("outs", "metrics", "plots") for out in entry.get(key) or []]
            if any(_overlaps(path, out) for out in _lock_paths(outs)):
                found.add(other)
                frontier.extend(_lock_paths(entry.get("deps")))
    return found


def lock_digest(
    lock_path: str | Path,
    reads: Iterable[str | Path] | None = None,
    stage: str = "register",
) -> str | None:
    """SHA-256 of the entries of ``dvc.lock`` that ``stage`` depends on; None when there is no lock.

    What identifies the candidate is how its inputs were made: the entries (commands, dependency
    and output hashes, params) of the stages upstream of register, found by following its reads
    back through the other stages' outputs and dependencies. Everything else changes without the
    candidate changing: register's own entry records its previous output, and a downstream stage's
    (``package``, which reads ``promotion.json``) is rewritten after every register run, so hashing
    either would make each forced rerun describe the same model differently and rerun ``package``.

    Args:
        lock_path: ``dvc.lock``; its entries' paths are relative to its folder.
        reads: What the stage reads (relative to the working directory, or absolute). Default:
            the ``deps`` of ``stage``'s own entry; a lock without them (register has not run yet)
            hashes every other stage's entry.
        stage: The stage the digest is for.
    """
    import yaml

    path = Path(lock_path)
    if not path.is_file():
        return None
    lock = yaml.safe_load(path.read_text()) or {}
    stages = lock.get("stages") or {}
    own = stages.get(stage)
    own = own if isinstance(own, dict) else {}
    if reads is not None:
        root = path.resolve().parent
        paths = []
        for read in reads:
            absolute = Path(read).resolve()
            if absolute.is_relative_to(root):
                paths.append(absolute.relative_to(root).as_posix())
        kept = upstream_stages(stages, paths, stage)
    elif own.get("deps"):
        kept = upstream_stages(stages, _lock_paths(own["deps"]), stage)
    else:
        kept = {name for name in stages if name != stage}
    chosen = {name: stages[name] for name in sorted(kept)}
    canonical = json.dumps({**lock, "stages": chosen}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def params_digest(params: Params) -> str:
    """SHA-256 of the validated params (canonical JSON, defaults filled in)."""
    canonical = json.dumps(
        params.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def lineage(
    params: Params,
    run: dict[str, Any],
    data_dir: str | Path,
    lock_path: str | Path | None,
    project_dir: str | Path = ".",
    reads: Iterable[str | Path] | None = None,
) -> dict[str, str]:
    """What the candidate was made from, as model version tags (absent facts are left out).

    ``reads`` are the stage's inputs (model folder, data folder, metrics): the lock's digest
    covers the stages they come from (:func:`lock_digest`).
    """
    facts = {
        RUN_TAG: run["run_id"],
        "lineage.model_uri": run["model_uri"],
        "lineage.git_commit": tracking.git_commit(project_dir),
        "lineage.dvc_lock_sha256": lock_digest(lock_path, reads) if lock_path else None,
        "lineage.data_hash": tracking.file_digest([data_dir]),
        "lineage.params_sha256": params_digest(params),
    }
    return {k: v for k, v in facts.items() if v is not None}
