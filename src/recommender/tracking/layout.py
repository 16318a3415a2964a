"""Where things are: the train stage's model folder and our MLflow model's artifacts.

Kept apart from :mod:`recommender.tracking` so that :mod:`recommender.tracking.pyfunc` (the file
MLflow runs to load the model) and the service can read the layout without importing MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The pyfunc model's artifact that holds the model bundle (see :mod:`recommender.tracking.pyfunc`).
BUNDLE_ARTIFACT = "bundle"
#: The train stage's folder (``models/``): the bundle, and the MLflow run and model it logged.
BUNDLE_DIR = "bundle"
RUN_FILE = "run.json"


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
