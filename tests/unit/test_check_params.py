"""The ``check_params`` stage: a typo anywhere in ``params.yaml`` stops ``dvc repro`` first.

The entry point runs as DVC runs it (a subprocess from the project folder); ``dvc.yaml`` is
checked for the wiring that makes it run before every other stage.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import ROOT, child_env

SCRIPT = ROOT / "pipeline" / "check_params.py"
OUT = "reports/params_check.txt"


def _check(folder: Path, params_text: str) -> subprocess.CompletedProcess[str]:
    (folder / "params.yaml").write_text(params_text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", OUT],
        cwd=folder,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_valid_params_pass_and_leave_the_output_byte_for_byte(tmp_path: Path) -> None:
    params = (ROOT / "params.yaml").read_text()
    first = _check(tmp_path, params)
    assert first.returncode == 0, first.stderr
    out = tmp_path / OUT
    content, stamp = out.read_bytes(), out.stat().st_mtime_ns

    again = _check(tmp_path, params.replace("seed: 42", "seed: 7"))  # other values, same bytes
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == content
    assert out.stat().st_mtime_ns == stamp  # not even rewritten
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no staging file left behind


def _check_in_process(folder: Path, params_text: str) -> tuple[int, str]:
    """The entry point's own ``run_stage`` call, in this process (the subprocess runs above and
    in tests/e2e/test_params_check.py already prove the command line): exit code and stderr."""
    import contextlib
    import io
    import os
    import runpy

    from recommender.core.stage import run_stage

    (folder / "params.yaml").write_text(params_text)
    stage = runpy.run_path(str(SCRIPT))  # not as __main__: its stage function and arguments
    stderr, cwd = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr):
            code = run_stage(
                "check_params", stage["check_params"], stage["configure"], ["--out", OUT]
            )
    finally:
        os.chdir(cwd)
    return code, stderr.getvalue()


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda text: text + "\ntrian:\n  epochs: 3\n", "trian"),  # a section no stage declares
        (lambda text: text.replace("n_trials: 20", "n_trails: 20"), "tune.n_trails"),
        (lambda text: text.replace("max_k: 100", "max_k: lots"), "serve.max_k"),  # a wrong type
        (
            lambda text: text.replace(
                "inference_log_exporter: file", "inference_log_exporter: kafka"
            ),
            "serve.inference_log_exporter",
        ),
        (
            lambda text: text.replace("http://127.0.0.1:4318/v1/logs", "127.0.0.1:4318"),
            "serve.otlp_endpoint",
        ),
        (lambda text: text.replace("user_block: auto", "user_block: 0"), "train.user_block"),
    ],
    ids=["top-level", "nested", "type", "exporter", "endpoint", "user-block"],
)
def test_a_typo_anywhere_exits_1_naming_the_key(tmp_path: Path, edit, key: str) -> None:  # noqa: ANN001
    params = (ROOT / "params.yaml").read_text()
    assert _check_in_process(tmp_path, params)[0] == 0
    before = (tmp_path / OUT).read_bytes()

    code, stderr = _check_in_process(tmp_path, edit(params))
    assert code == 1
    assert stderr.startswith("error: stage 'check_params' failed: params.yaml is invalid:")
    assert f"  {key}: " in stderr
    assert "Traceback" not in stderr
    assert (tmp_path / OUT).read_bytes() == before  # the last good output stays


def test_the_command_line_names_a_typo(tmp_path: Path) -> None:
    failed = _check(tmp_path, (ROOT / "params.yaml").read_text() + "\ntrian:\n  epochs: 3\n")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: stage 'check_params' failed: params.yaml is invalid:")
    assert "  trian: " in failed.stderr and "Traceback" not in failed.stderr


def test_the_check_imports_nothing_heavy(tmp_path: Path) -> None:
    # A no-op `dvc repro` runs this stage every time: no TensorFlow, MLflow, pandas or GX.
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{str(SCRIPT)!r}, '--out', {OUT!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = {'tensorflow', 'keras', 'mlflow', 'pandas', 'great_expectations', 'numpy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=child_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_dvc_yaml_runs_the_check_before_every_other_stage(project_root: Path) -> None:
    stages = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]
    check = stages["check_params"]
    # It reruns on any edit of params.yaml's bytes (DVC's params compare by value: 30 == 30.0),
    # and only then or when the loader changes: a no-op `dvc repro` does not start it.
    assert "params.yaml" in check["deps"] and "src/recommender/core/config.py" in check["deps"]
    assert "always_changed" not in check
    (out, spec), *rest = (next(iter(o.items())) for o in check["outs"])
    assert rest == [] and out in check["cmd"]
    assert spec == {"persist": True, "cache": False}  # rewritten in place, never in the cache

    producer = {
        next(iter(o)) if isinstance(o, dict) else o: name
        for name, stage in stages.items()
        for kind in ("outs", "metrics", "plots")
        for o in stage.get(kind, [])
    }

    def upstream(name: str) -> set[str]:
        found: set[str] = set()
        for dep in stages[name].get("deps", []):
            if dep in producer and producer[dep] not in found:
                found |= {producer[dep]} | upstream(producer[dep])
        return found

    assert out in stages["ingest"]["deps"]
    for name in stages:
        if name != "check_params":
            assert "check_params" in upstream(name), name
