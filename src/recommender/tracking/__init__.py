"""The one place that talks to MLflow's tracking server.

Nothing happens at import: the tracking URI is set when a stage calls :func:`configure`, from
``MLFLOW_TRACKING_URI`` when the environment has it (a remote ``mlflow server``), otherwise a SQLite
file in the project (``mlflow.db``), which also gives the model registry that a plain ``./mlruns``
file store lacks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"
#: The pyfunc model's artifact that holds the model bundle (see :mod:`recommender.tracking.pyfunc`).
BUNDLE_ARTIFACT = "bundle"
#: The train stage's folder (``models/``): the bundle, and the MLflow run and model it logged.
BUNDLE_DIR = "bundle"
RUN_FILE = "run.json"


def tracking_uri(project_dir: str | Path = ".") -> str:
    """The tracking URI in force: the environment's, or the project's SQLite file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(project_dir) / DEFAULT_DB).resolve()}"


def configure(project_dir: str | Path = ".") -> str:
    """Point MLflow at :func:`tracking_uri` (and its registry at the same store); return the URI."""
    import mlflow

    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    uri = tracking_uri(project_dir)
    mlflow.set_tracking_uri(uri)
    # One store for runs and registry, always set together: MLflow keeps both in process-wide
    # state (and writes them into os.environ), so setting only one could leave the other pointing
    # at a store an earlier call configured.
    mlflow.set_registry_uri(uri)
    return uri


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

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs:
                metrics = {prefix + k: float(v) for k, v in logs.items()}
                mlflow.log_metrics(metrics, step=epoch + 1)

    return EpochLogger()


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


def log_bundle_model(bundle_dir: str | Path, input_example: dict[str, Any], output: Any) -> str:
    """Log the bundle as an MLflow pyfunc model (from code, nothing pickled); return its URI.

    The library itself goes along as ``code_paths``, so the model loads wherever the pinned
    requirements are installed, with or without this project.
    """
    import mlflow
    from mlflow.models import infer_signature

    import recommender
    from recommender.tracking import pyfunc

    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=pyfunc.__file__,
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        code_paths=[str(Path(recommender.__file__).parent)],
        signature=infer_signature(input_example, output),
        input_example=input_example,
        pip_requirements=pip_requirements(),
    )
    return info.model_uri


def bundle_dir(mlflow_model_dir: str | Path) -> Path:
    """The bundle folder inside a downloaded (or BentoML-imported) copy of our MLflow model.

    The model is the pyfunc :mod:`recommender.tracking.pyfunc` logs; its ``MLmodel`` names the
    folder of the ``bundle`` artifact. Raises :class:`~recommender.core.errors.DataError` when
    the folder holds some other model.
    """
    import yaml

    from recommender.core.errors import DataError

    root = Path(mlflow_model_dir)
    mlmodel = root / "MLmodel"
    try:
        flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
        folder = root / flavor["artifacts"][BUNDLE_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise DataError(
            mlmodel, f"not a recommender bundle model ({exc!r})", expected="this project's model"
        ) from None
    if not folder.is_dir():
        raise DataError(folder, "missing", expected="the model bundle inside the MLflow model")
    return folder


def read_run(model_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` the train stage wrote into its model folder."""
    import json

    from recommender.core.errors import DataError

    path = Path(model_dir) / RUN_FILE
    if not path.is_file():
        raise DataError(path, "missing", expected="the train stage's output (run dvc repro train)")
    return json.loads(path.read_text())


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***`` (for error messages, logs and outputs)."""
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", uri)
