"""The shared tracking server with a login, as ``make tracking-server`` starts it, and the pipeline
against it.

``python -m recommender.stack up`` starts the real stack (PostgreSQL, SeaweedFS, ``mlflow server
--app-name basic-auth``) once for the module; an admin creates two users through MLflow's own auth
API: ``reader`` with READ and ``editor`` with EDIT on the experiment and the registered model. The
editor trains and evaluates a tiny model; register (a real process) then fails in one clear line
for the reader and a wrong password, leaving the registry and promotion.json as they were, and
works for the editor. ``down`` stops every process ``up`` started.

The editor's stages get the login inside the tracking URI (``http://editor:<password>@host``,
percent-encoded: the password holds ``@`` and ``:``): no stage output (stdout and stderr of train,
evaluate, register, and of a real ``dvc repro`` of the three), no file the pipeline writes and no
MLflow tag or param shows it. MLflow's run links are switched back on for train and the ``dvc
repro`` (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false``), so the stage runner's redaction alone
keeps the password out of them.
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
from urllib.parse import quote

import pytest
import yaml
from support import ROOT, child_env, free_port, make_scratch_repo, run_checked, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "recommender-auth"
EXPERIMENT = "recommender-auth"
#: In the editor's password: what must never show in any output (its parts, too).
MARK = "Zq9x"
USERS = {"reader": ("reader-password-1", "READ"), "editor": (f"ed1tor-p@ss:{MARK}-w0rd", "EDIT")}
#: MLflow prints "View run ... at: <tracking URI>/#/..." when a run ends; on for the stages whose
#: output shows that the stage runner's redaction alone keeps the password out.
LINKS_ON = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}
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
def outputs() -> dict[str, str]:
    """Every stage's stdout and stderr, by stage (and user), as the tests ran them."""
    return {}


@pytest.fixture(scope="module")
def project(
    stack: Stack, outputs: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Users and grants made by the admin; a tiny model trained and evaluated by ``editor``, the
    login in the tracking URI."""
    import mlflow
    from mlflow.server import get_app_client

    from recommender.data.synthetic import generate
    from recommender.dataset.processed import write_processed
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
    env = _as(stack, "editor", in_uri=True)
    common = ["--params", "params.yaml", "--data", "processed", "--model", "models"]
    train = run_checked([*_stage("train"), "--params", "params.yaml", "--data", "processed",
                         "--out", "models", "--history", "history.csv"], root,
                        {**env, **LINKS_ON})  # fmt: skip
    evaluate = run_checked([*_stage("evaluate"), *common, "--metrics", "metrics.json",
                            "--plots", "plots", "--history", "history.csv"], root, env)  # fmt: skip
    for name, proc in (("train", train), ("evaluate", evaluate)):
        outputs[name] = proc.stdout + proc.stderr
    return root


def _stage(name: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline" / f"{name}.py")]


def _as(
    stack: Stack, user: str, password: str | None = None, in_uri: bool = False
) -> dict[str, str]:
    """The environment of a stage run as ``user``: the login in MLflow's variables, or inside
    the tracking URI (``in_uri``)."""
    password = password or USERS[user][0]
    if in_uri:
        env = child_env(MLFLOW_TRACKING_URI=_uri_with_login(stack, user, password))
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(key, None)
        return env
    return child_env(
        MLFLOW_TRACKING_URI=stack.uri,
        MLFLOW_TRACKING_USERNAME=user,
        MLFLOW_TRACKING_PASSWORD=password,
    )


def _uri_with_login(stack: Stack, user: str, password: str) -> str:
    return stack.uri.replace("://", f"://{quote(user, safe='')}:{quote(password, safe='')}@", 1)


def _redacted_uri(stack: Stack, user: str) -> str:
    """The tracking URI with ``user``'s login as outputs show it."""
    return stack.uri.replace("://", f"://{user}:***@", 1)


def _leaks(text: str) -> list[str]:
    """The forms of any password of this module that ``text`` shows (raw, percent-encoded, or
    the editor's in part)."""
    forms = {MARK} | {f(p) for p, _ in USERS.values() for f in (str, lambda p: quote(p, safe=""))}
    return sorted(form for form in forms if form in text)


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
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: stage 'register' failed: " + expected.format(uri=stack.uri))
    assert "Traceback" not in proc.stderr and (password or "@@") not in proc.stderr
    assert _leaks(proc.stdout + proc.stderr) == []
    assert promotion.read_text() == '{"decision": "from an earlier run"}\n'
    client = _admin_client(stack, monkeypatch)
    assert client.search_model_versions(f"name = '{NAME}'") == []
    assert client.get_registered_model(NAME).aliases == {}
    assert client.search_registered_models(f"name = '{NAME}.gate-lock'") == []


def test_an_editor_registers_and_the_champion_moves(
    stack: Stack, project: Path, outputs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _register(project, _as(stack, "editor", in_uri=True))
    outputs["register"] = proc.stdout + proc.stderr

    assert proc.returncode == 0, proc.stderr
    promotion = json.loads((project / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion["reason"]
    client = _admin_client(stack, monkeypatch)
    champion = client.get_model_version_by_alias(NAME, "champion")
    run_id = json.loads((project / "models" / "run.json").read_text())["run_id"]
    assert champion.version == "1" and champion.run_id == run_id
    assert client.search_registered_models(f"name = '{NAME}.gate-lock'") == []


def test_no_stage_output_file_or_run_shows_the_password(
    stack: Stack, project: Path, outputs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(outputs) == {"train", "evaluate", "register"}  # the editor's, login in the URI
    assert {name: _leaks(text) for name, text in outputs.items()} == dict.fromkeys(outputs, [])
    # MLflow did print its run link (switched on for train), with the password redacted.
    assert f"at: {_redacted_uri(stack, 'editor')}/#/experiments/" in outputs["train"]
    # What the stages wrote (run.json, metrics, plots, promotion.json, the model bundle).
    files = {
        str(p.relative_to(project)): _leaks(p.read_bytes().decode("utf-8", "replace"))
        for p in project.rglob("*")
        if p.is_file()
    }
    assert {name: found for name, found in files.items() if found} == {}
    run = json.loads((project / "models" / "run.json").read_text())
    assert run["tracking_uri"] == _redacted_uri(stack, "editor")
    # What MLflow keeps of the run and its model: tags and params, no password, no machine path.
    assert _run_record_leaks(_admin_client(stack, monkeypatch), run, [project]) == {}


def _run_record_leaks(client, run: dict, folders: list[Path]) -> dict[str, list[str]]:  # noqa: ANN001
    """The run's and its logged model's tags and params that show a password or a path of this
    machine (one of ``folders``, the checkout, the temporary folder)."""
    record = client.get_run(run["run_id"]).data
    model = client.get_logged_model(run["model_uri"].removeprefix("models:/"))
    entries = {
        **{f"run tag {k}": v for k, v in record.tags.items()},
        **{f"run param {k}": v for k, v in record.params.items()},
        **{f"model tag {k}": v for k, v in (model.tags or {}).items()},
        **{f"model param {k}": v for k, v in (model.params or {}).items()},
    }
    paths = [str(p) for p in (*folders, ROOT, Path(tempfile.gettempdir()))]
    found = {k: _leaks(str(v)) + [p for p in paths if p in str(v)] for k, v in entries.items()}
    return {k: v for k, v in found.items() if v}


def test_dvc_repro_of_the_tracking_stages_shows_no_password(
    stack: Stack, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``dvc repro`` of train, evaluate and register in a scratch clone whose ``origin`` is a
    folder of this machine: DVC passes the stages' output through and records what it keeps."""
    upstream = make_scratch_repo(tmp_path)
    repo = tmp_path / "clone"
    run_checked(["git", "clone", "-q", str(upstream), str(repo)], tmp_path)
    shutil.copy(project / "params.yaml", repo / "params.yaml")
    shutil.copytree(project / "processed", repo / "data" / "processed")
    env = {**_as(stack, "editor", in_uri=True), **LINKS_ON}

    proc = run_checked(
        [sys.executable, "-m", "dvc", "repro", "--single-item", "train", "evaluate", "register"],
        repo, env,
    )  # fmt: skip

    output = proc.stdout + proc.stderr
    assert _leaks(output) == []
    assert "Running stage 'register'" in output
    assert f"at: {_redacted_uri(stack, 'editor')}/#/experiments/" in output
    kept = {
        str(p.relative_to(repo)): found
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.parts
        if (found := _leaks(p.read_bytes().decode("utf-8", "replace")))
    }
    assert kept == {}
    run = json.loads((repo / "models" / "run.json").read_text())
    client = _admin_client(stack, monkeypatch)
    assert _run_record_leaks(client, run, [tmp_path]) == {}
    tags = client.get_run(run["run_id"]).data.tags
    # The clone's origin is a folder: no repo URL (MLflow alone records the folder's path).
    assert "mlflow.source.git.repoURL" not in tags
    assert tags["mlflow.source.name"] == "pipeline/train.py" and tags["mlflow.source.git.commit"]


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
