"""Runs on MLflow's tracking server: where it is, what a run logs, and how a stage fails when the
server is down or refuses a login.

The registry client (versions, aliases) is :mod:`.registry`, the gate's lock :mod:`.gate_lock`, the
logged model :mod:`.pyfunc`, the model folder's layout :mod:`.layout`.

Nothing happens at import: the tracking URI is set when a stage calls :func:`configure`, from
``MLFLOW_TRACKING_URI`` when the environment has it (a remote ``mlflow server``), otherwise a SQLite
file in the project (``mlflow.db``), which also gives the model registry that a plain ``./mlruns``
file store lacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from recommender.core.errors import RecommenderError, first_line, redact
from recommender.core.io import pid_alive
from recommender.tracking.layout import BUNDLE_ARTIFACT
from recommender.tracking.layout import BUNDLE_DIR as BUNDLE_DIR  # re-exported for the stages
from recommender.tracking.layout import RUN_FILE as RUN_FILE
from recommender.tracking.layout import bundle_dir as bundle_dir
from recommender.tracking.layout import read_run as read_run

DEFAULT_DB = "mlflow.db"


def tracking_uri(project_dir: str | Path = ".") -> str:
    """The tracking URI in force: the environment's, or the project's SQLite file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(project_dir) / DEFAULT_DB).resolve()}"


#: MLflow's HTTP client retries 7 times with exponential back-off (about 4 minutes against a dead
#: server). Ours: 2 retries, 1 s apart then 2 s, so a server that is down fails a stage in seconds.
#: A value the user set in the environment wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
#: Run tags that say which process owns a RUNNING run (see :func:`end_stale_runs`).
HOST_TAG, PID_TAG = "recommender.host", "recommender.pid"


class TrackingUnavailable(RecommenderError):
    """The tracking server cannot be reached (down, wrong address, or it died mid-stage)."""


def configure(project_dir: str | Path = ".") -> str:
    """Point MLflow at :func:`tracking_uri` (and its registry at the same store); return the URI.

    Runs started afterwards record portable source tags (:func:`portable_run_context`).
    """
    import mlflow

    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    portable_run_context()
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(project_dir)
    mlflow.set_tracking_uri(uri)
    # One store for runs and registry, always set together: MLflow keeps both in process-wide
    # state (and writes them into os.environ), so setting only one could leave the other pointing
    # at a store an earlier call configured.
    mlflow.set_registry_uri(uri)
    return uri


#: The run tags MLflow infers from the machine that name a place on it.
REPO_URL_TAG, SOURCE_NAME_TAG = "mlflow.source.git.repoURL", "mlflow.source.name"


def portable_remote(url: str | None) -> str | None:
    """A git remote's URL as a run may record it: a network URL without credentials, else None.

    ``https://user:token@host/org/repo.git`` -> ``https://host/org/repo.git`` (query and fragment
    go too); ``git@host:org/repo.git`` (scp-like) stays. A local remote (``/home/me/repo``,
    ``../repo``, ``file:///...``, ``C:\\repo``) is a path of one machine: None.
    """
    from urllib.parse import urlsplit, urlunsplit

    url = (url or "").strip()
    if "://" in url:
        parts = urlsplit(redact(url))
        host = parts.netloc.rpartition("@")[2]
        if parts.scheme.lower() == "file" or not host:
            return None
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    scp = re.fullmatch(r"(?:([^@/:\s]+)(?::[^@/\s]*)?@)?([^@/:\s\\]{2,}):(.*)", url)
    if scp is None:  # a path
        return None
    user, host, path = scp.groups()
    return f"{user}@{host}:{path}" if user else f"{host}:{path}"


def portable_source_name(name: str) -> str:
    """The entry point a run records: an absolute path made relative to its git checkout (the
    current directory outside one), or only its file name when it lies outside both."""
    path = Path(name)
    if not path.is_absolute():
        return name
    roots = [p for p in path.parents if (p / ".git").exists()][:1] + [Path.cwd()]
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def portable_source_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's inferred run tags with the machine taken out of the source tags.

    ``mlflow.source.git.repoURL`` is the first git remote's URL, which for a clone of a local
    folder is that folder's absolute path: :func:`portable_remote` keeps a network URL and drops
    anything else (the tag is then unset). ``mlflow.source.name`` (the entry point, as
    ``sys.argv[0]`` gave it) goes through :func:`portable_source_name`.
    """
    out = dict(tags)
    if REPO_URL_TAG in out:
        remote = portable_remote(out.pop(REPO_URL_TAG))
        if remote:
            out[REPO_URL_TAG] = remote
    if out.get(SOURCE_NAME_TAG):
        out[SOURCE_NAME_TAG] = portable_source_name(out[SOURCE_NAME_TAG])
    return out


def portable_run_context() -> None:
    """Have MLflow's run context (the tags every new run gets) go through
    :func:`portable_source_tags`: its git and default providers are wrapped, once per process.

    MLflow offers no switch for it and a tag passed to ``start_run`` can override a context tag
    but not remove it; the wrappers sit in MLflow's own provider registry, in its order.
    """
    from mlflow.tracking.context import registry
    from mlflow.tracking.context.abstract_context import RunContextProvider
    from mlflow.tracking.context.default_context import DefaultRunContext
    from mlflow.tracking.context.git_context import GitRunContext

    class PortableSource(RunContextProvider):
        def __init__(self, inner: RunContextProvider) -> None:
            self.inner = inner

        def in_context(self) -> bool:
            return bool(self.inner.in_context())

        def tags(self) -> dict[str, str]:
            return portable_source_tags(self.inner.tags())

    providers = registry._run_context_provider_registry._registry
    providers[:] = [
        PortableSource(p) if type(p) in (DefaultRunContext, GitRunContext) else p for p in providers
    ]


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``, the form MLflow's params table wants."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def file_digest(paths: Iterable[str | Path]) -> str:
    """SHA-256 over the given files (folders: every file below, in sorted order), names included."""
    digest = hashlib.sha256()
    for root in sorted(Path(p) for p in paths):
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                digest.update(str(path.relative_to(root.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def git_commit(cwd: str | Path = ".") -> str | None:
    """The checked-out commit (with ``-dirty`` when the tree has changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def epoch_logger(prefix: str = "") -> Any:
    """A Keras callback logging each epoch's metrics (loss, rmse, val_*) to the active run,
    named ``prefix + name`` (the refit's curves are ``refit_loss``, ``refit_rmse``)."""
    import keras
    import mlflow

    from recommender.core import failpoints

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs:
                metrics = {prefix + k: float(v) for k, v in logs.items()}
                mlflow.log_metrics(metrics, step=epoch + 1)

    class KilledMidEpoch(EpochLogger):
        # Only when a test arms it. ``train.batch@n`` dies after the call holding the n-th batch
        # of the run: the training loop calls this once per compiled call of up to
        # ``loop.STEPS_PER_CALL`` batches, with the last one's index in the epoch.
        done = 0
        first_of_epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.first_of_epoch = self.done

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.done = self.first_of_epoch + batch + 1
            failpoints.reached("train.batch", self.done)

    return KilledMidEpoch() if failpoints.armed("train.batch") else EpochLogger()


def log_history(history: dict[str, list[float]], prefix: str = "") -> None:
    """Per-epoch curves logged to the active run after training, at the steps the
    :func:`epoch_logger` uses (a search's chosen trial, whose epochs ran in a nested run)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [
        Metric(prefix + name, float(value), now, step)
        for name, values in history.items()
        for step, value in enumerate(values, start=1)
    ]
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    for start in range(0, len(points), 1000):  # MLflow takes 1,000 metrics a batch
        client.log_batch(run_id, metrics=points[start : start + 1000])


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to this environment (no slow inference)."""
    from importlib.metadata import version

    names = [
        "tensorflow-cpu",
        "keras",
        "mlflow",
        "numpy",
        "pandas",
        "pyarrow",
        "pydantic",
        "pyyaml",
    ]
    return [f"{name}=={version(name)}" for name in names]


def log_bundle_model(folder: str | Path, input_example: dict[str, Any], output: Any) -> str:
    """Log the bundle as an MLflow pyfunc model (from code, nothing pickled); return its URI.

    The library itself goes along as ``code_paths``, so the model loads wherever the pinned
    requirements are installed, with or without this project. The MLmodel file keeps no path of
    this machine (see :func:`recommender.tracking.pyfunc.log_model`).
    """
    from mlflow.models import infer_signature

    import recommender
    from recommender.tracking import pyfunc

    info = pyfunc.log_model(
        name="model",
        python_model=pyfunc.__file__,
        artifacts={BUNDLE_ARTIFACT: str(folder)},
        code_paths=[str(Path(recommender.__file__).parent)],
        signature=infer_signature(input_example, output),
        input_example=input_example,
        pip_requirements=pip_requirements(),
    )
    return info.model_uri


def connect(project_dir: str | Path = ".") -> str:
    """:func:`configure`, then prove the store answers: one quick call, no retries.

    Raises:
        TrackingUnavailable: Naming the (redacted) URI, within seconds, instead of minutes of
            HTTP retries followed by a traceback.
    """
    import mlflow

    uri = configure(project_dir)
    with no_retries():
        try:
            mlflow.MlflowClient().search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 (MLflow raises many kinds; all mean "unusable")
            raise TrackingUnavailable(
                f"cannot reach the MLflow tracking store at {redact(uri)} ({first_line(exc)}); "
                "start it or set MLFLOW_TRACKING_URI to one that is running"
            ) from None
    return uri


@contextlib.contextmanager
def no_retries(timeout_s: int = 10) -> Iterator[None]:
    """No retries and a short timeout for MLflow's HTTP calls inside the block (probes)."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tag_owner() -> dict[str, str]:
    """Run tags naming this process, so a later stage can tell its run from a crashed one."""
    import socket

    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def end_stale_runs(experiment: str) -> list[str]:
    """Mark KILLED the runs of ``experiment`` left RUNNING by a process of this host that died.

    MLflow ends a run when its ``with`` block exits, but a SIGKILL (an OOM kill, a pulled plug)
    skips that, and the run would show as RUNNING forever in the UI. Only runs whose owner tags
    (:func:`tag_owner`) name this host and a process that no longer exists are touched.
    """
    import socket

    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    host = socket.gethostname()
    ended = []
    for run in client.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    ):
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
    return ended
