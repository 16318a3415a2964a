"""The shared tracking server with a login, as ``make tracking-server`` starts it, and the pipeline
against it.

``python -m recommender.stack up`` starts the real stack (PostgreSQL, SeaweedFS, ``mlflow server
--app-name basic-auth``) once for the module; an admin creates two users through MLflow's own auth
API: ``reader`` with READ and ``editor`` with EDIT on the experiment and the registered model. The
editor trains and evaluates a tiny model; register (a real process) then fails in one clear line
for the reader and a wrong password, leaving the registry and promotion.json as they were, and
works for the editor. ``down`` stops every process ``up`` started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support import ROOT, child_env, free_port, run_checked, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "recommender-auth"
EXPERIMENT = "recommender-auth"
USERS = {"reader": ("reader-password-1", "READ"), "editor": ("editor-password-1", "EDIT")}
REGISTER = [
    "--data", "processed", "--model", "models", "--metrics", "metrics.json",
    "--out", "promotion.json",
]  # fmt: skip


@dataclass(frozen=True)
class Stack:
    folder: Path
    uri: str
    admin_password: str
    up_output: str


def _stack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recommender.stack", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not under pytest's tmp_path: its parent is private to root, and PostgreSQL runs as its
    # own user (start_postgres hands it the folder).
    base = Path(tempfile.mkdtemp(prefix="stack-test-"))
    os.chmod(base, 0o711)
    folder = base / "stack"
    try:
        up = _stack("up", "--dir", str(folder), "--port", str(free_port()), "--workers", "1")
        assert up.returncode == 0, up.stdout + up.stderr
        uri = json.loads((folder / "stack.json").read_text())["uri"]
        yield Stack(folder, uri, (folder / "admin-password").read_text().strip(), up.stdout)
    finally:
        _stack("down", "--dir", str(folder))
        shutil.rmtree(base, ignore_errors=True)


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_up_serves_health_openly_and_everything_else_only_after_login(stack: Stack) -> None:
    assert stack.uri in stack.up_output and "admin user: admin" in stack.up_output
    assert str(stack.folder / "admin-password") in stack.up_output
    api = stack.uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(stack.uri + "/health") == 200
    assert _get(api) == 401
    assert _get(api, ("admin", "not-the-password")) == 401
    assert _get(api, ("admin", stack.admin_password)) == 200
    # The generated password is the owner's alone and leaks nowhere the server writes or shows.
    assert (stack.folder / "admin-password").stat().st_mode & 0o077 == 0
    pid = int((stack.folder / "mlflow.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    for shown in (cmdline, *(p.read_text() for p in (stack.folder / "mlflow").iterdir())):
        assert stack.admin_password not in shown
    assert "--app-name\0basic-auth" in cmdline


@pytest.fixture(scope="module")
def project(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users and grants made by the admin; a tiny model trained and evaluated by ``editor``."""
    import mlflow
    from mlflow.server import get_app_client

    from recommender.data.synthetic import generate
    from recommender.preprocess.processed import write_processed
    from recommender.preprocess.split import preprocess

    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": stack.admin_password}
    with pytest.MonkeyPatch.context() as env:
        for key, value in admin.items():
            env.setenv(key, value)
        auth = get_app_client("basic-auth", tracking_uri=stack.uri)
        client = mlflow.MlflowClient(stack.uri, registry_uri=stack.uri)
        experiment_id = client.create_experiment(EXPERIMENT)
        client.create_registered_model(NAME)
        for user, (password, permission) in USERS.items():
            auth.create_user(user, password)
            auth.grant_user_permission(user, "experiment", experiment_id, permission)
            auth.grant_user_permission(user, "registered_model", NAME, permission)

    root = tmp_path_factory.mktemp("auth-project")
    # The default family on the tiny data beats its baselines, so the editor's model is promoted.
    params = tiny_params(tracking={"experiment": EXPERIMENT, "registered_model": NAME})
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    dataset = generate(params.synthetic, params.seed)
    write_processed(preprocess(dataset, params.preprocess, params.seed), root / "processed")
    env = _as(stack, "editor")
    common = ["--params", "params.yaml", "--data", "processed", "--model", "models"]
    run_checked([*_stage("train"), "--params", "params.yaml", "--data", "processed",
                 "--out", "models", "--history", "history.csv"], root, env)  # fmt: skip
    run_checked([*_stage("evaluate"), *common, "--metrics", "metrics.json", "--plots", "plots",
                 "--history", "history.csv"], root, env)  # fmt: skip
    return root


def _stage(name: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline" / f"{name}.py")]


def _as(stack: Stack, user: str, password: str | None = None) -> dict[str, str]:
    return child_env(
        MLFLOW_TRACKING_URI=stack.uri,
        MLFLOW_TRACKING_USERNAME=user,
        MLFLOW_TRACKING_PASSWORD=password or USERS[user][0],
    )


def _admin_client(stack: Stack, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.admin_password)
    return mlflow.MlflowClient(stack.uri, registry_uri=stack.uri)


def _register(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_stage("register"), "--params", "params.yaml", *REGISTER],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        (
            "reader",
            None,
            "MLflow refused user 'reader' permission to create a version of registered model "
            f"'{NAME}' (403 PERMISSION_DENIED) at {{uri}}: ask an admin for EDIT on it; no alias "
            "moved and the promotion report was not written",
        ),
        (
            "editor",
            "not-the-password",
            "MLflow at {uri} refused the login of user 'editor' (401 UNAUTHENTICATED) while "
            "trying to search the model registry: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to an account on that server",
        ),
    ],
)
def test_a_refused_register_says_who_and_what_in_one_line_and_changes_nothing(
    stack: Stack,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    user: str,
    password: str | None,
    expected: str,
) -> None:
    promotion = project / "promotion.json"
    promotion.write_text('{"decision": "from an earlier run"}\n')

    proc = _register(project, _as(stack, user, password))

    assert proc.returncode == 1, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: stage 'register' failed: " + expected.format(uri=stack.uri))
    assert "Traceback" not in proc.stderr and (password or "@@") not in proc.stderr
    assert promotion.read_text() == '{"decision": "from an earlier run"}\n'
    client = _admin_client(stack, monkeypatch)
    assert client.search_model_versions(f"name = '{NAME}'") == []
    assert client.get_registered_model(NAME).aliases == {}
    assert client.search_registered_models(f"name = '{NAME}.gate-lock'") == []


def test_an_editor_registers_and_the_champion_moves(
    stack: Stack, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _register(project, _as(stack, "editor"))

    assert proc.returncode == 0, proc.stderr
    promotion = json.loads((project / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion["reason"]
    client = _admin_client(stack, monkeypatch)
    champion = client.get_model_version_by_alias(NAME, "champion")
    run_id = json.loads((project / "models" / "run.json").read_text())["run_id"]
    assert champion.version == "1" and champion.run_id == run_id
    assert client.search_registered_models(f"name = '{NAME}.gate-lock'") == []


def test_down_stops_every_process_up_started(stack: Stack) -> None:
    folder = stack.folder
    pids = [int((folder / name).read_text()) for name in ("mlflow.pid", "seaweedfs.pid")]
    pids.append(int((folder / "postgres" / "data" / "postmaster.pid").read_text().split()[0]))

    down = _stack("down", "--dir", str(folder))

    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "stopped: mlflow server, SeaweedFS, PostgreSQL"
    assert [pid for pid in pids if _running(pid)] == []
    left = [
        p.name for p in Path("/proc").iterdir() if p.name.isdigit() and str(folder) in _cmdline(p)
    ]
    assert left == []
    assert not _listening(stack.uri)


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (ended, its exit status not yet collected by
    whichever process adopted it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # it ended meanwhile
        return ""


def _listening(uri: str) -> bool:
    import socket

    host, port = uri.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0
