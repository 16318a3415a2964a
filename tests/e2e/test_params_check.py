"""End to end: a typo anywhere in params.yaml stops `dvc repro` before any stage runs.

DVC reruns a stage only when the params it declares change, so a key no stage declares (a
top-level `trian:`, `tune.n_trails`) used to pass `dvc repro` untouched; the `check_params` stage
(always run, first) reads the whole file with the strict loader.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import child_env, make_scratch_repo, tiny_raw

pytestmark = pytest.mark.e2e


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=child_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _snapshot(repo: Path) -> dict[str, str]:
    """Every file DVC and the stages wrote, by content (ingest's outputs and dvc.lock)."""
    files = [*sorted((repo / "data").rglob("*")), repo / "dvc.lock"]
    files += sorted((repo / "reports").rglob("*"))
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file()
    }


def test_a_typo_stops_dvc_repro_before_any_stage_runs(tmp_path: Path) -> None:
    repo = make_scratch_repo(tmp_path)
    params = repo / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    for name, values in tiny_raw().items():
        raw[name] = {**(raw.get(name) or {}), **values}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    good = params.read_text()

    done = _dvc(repo, "repro", "ingest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Running stage 'check_params'" in done.stdout
    before = _snapshot(repo)
    stamp = (repo / "data" / "interim").stat().st_mtime_ns

    # A section no stage declares: without the check, `dvc repro` would go on to validate and
    # the rest (none of them has run yet) and the typo would pass.
    params.write_text(good + "trian:\n  epochs: 3\n")
    failed = _dvc(repo, "repro")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "trian: unknown key" in output
    assert "check_params" in output
    ran = [line for line in failed.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'check_params':"]
    assert _snapshot(repo) == before
    assert (repo / "data" / "interim").stat().st_mtime_ns == stamp
    for never in ("data/processed", "reports/validation.json", "models"):
        assert not (repo / never).exists(), never

    # A nested key of a section only `make tune` reads, with ingest up to date: still stopped.
    params.write_text(good.replace("n_trials: 20", "n_trails: 20"))
    failed = _dvc(repo, "repro", "ingest")
    assert failed.returncode != 0
    assert "tune.n_trails: unknown key" in failed.stdout + failed.stderr
    assert _snapshot(repo) == before

    # A value DVC's params comparison finds equal (42.0 == 42) but the strict loader refuses: the
    # check reruns because params.yaml's bytes changed.
    retyped = re.sub(r"(?m)^seed: 42$", "seed: 42.0", good)
    assert retyped != good
    params.write_text(retyped)
    failed = _dvc(repo, "repro", "ingest")
    assert failed.returncode != 0
    assert "seed: Input should be a valid integer" in failed.stdout + failed.stderr
    assert _snapshot(repo) == before

    # Fixed: the check passes, its output is the same bytes, and ingest does not rerun.
    params.write_text(good)
    again = _dvc(repo, "repro", "ingest")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Stage 'ingest' didn't change, skipping" in again.stdout
    assert _snapshot(repo) == before

    # Nothing changed: a no-op `dvc repro` does not even start the check. Only the feedback stage
    # runs (DVC always runs it: it reads the service's log), and its unchanged snapshot leaves
    # ingest as it was.
    again = _dvc(repo, "repro", "ingest")
    assert again.returncode == 0, again.stdout + again.stderr
    ran = [line for line in again.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'feedback':"]
    assert "Stage 'ingest' didn't change, skipping" in again.stdout
    assert "Stage 'check_params' didn't change, skipping" in again.stdout
