"""The MLflow model: a pyfunc over a :class:`~recommender.scoring.bundle.ModelBundle`, from code.

MLflow's ``tensorflow`` flavor would pickle every registered Keras class into the model (and need
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` to load it back). Logged as "models from code" instead,
MLflow stores this file and the bundle folder; loading runs this file and
:meth:`ModelBundle.load`, which reads the Keras model with ``safe_mode=True``. Nothing is pickled.

Input: ``user_id`` and ``item_id`` (raw ids, as columns of a DataFrame or a dict of arrays).
Output: predicted ratings on the dataset's scale; unknown ids get the out-of-vocabulary row.

Log it with :func:`log_model`, not ``mlflow.pyfunc.log_model``: the same model, but its ``MLmodel``
names no path of the machine that logged it.
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from recommender.tracking.layout import BUNDLE_ARTIFACT


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Rates raw (user_id, item_id) pairs with the bundled model."""

    def load_context(self, context):  # noqa: ANN001, ANN201
        from recommender.scoring.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    # ``pd.DataFrame``: MLflow infers no schema from this hint (the logged signature is the
    # schema) and, hinted, stops printing its "add type hints to predict" advice at every log
    # and load, which no warnings filter can silence (it resets them around the check).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:  # noqa: ANN001
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = {"user_id", "item_id"} - set(frame.columns)
        if missing:
            raise ValueError(f"model input needs columns user_id and item_id; missing {missing}")
        return self.bundle.predict_raw(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())


def log_model(**kwargs: Any) -> Any:
    """:func:`mlflow.pyfunc.log_model` (same arguments and result), with a portable ``MLmodel``.

    MLflow writes three paths of the logging machine into ``MLmodel``; none is needed to load the
    model, and the model travels (registry downloads, the Bento built from it):

    - ``model_code_path``: this file, resolved to an absolute path. The loader reads only its base
      name (the file is copied into the model), so the base name is kept.
    - each artifact's ``uri``: the folder it was copied from (the train stage's staging folder).
      The loader reads only ``path``, inside the model, so ``uri`` goes.
    - ``artifact_path``: where the store keeps the model, for a local store a folder on this
      machine. The tracking store records it anyway (the logged model's artifact location, which
      is what ``models:/`` URIs resolve through); MLflow drops the key from ``MLmodel`` when unset.
    """
    from mlflow.models import Model

    code = isinstance(kwargs.get("python_model"), str | os.PathLike)
    # What mlflow.pyfunc.log_model tags the logged model with.
    flavor_name = "pyfunc.ModelFromCode" if code else "pyfunc"
    kwargs.setdefault("artifact_path", None)  # deprecated for ``name``, but still positional
    return Model.log(flavor=_PortablePyfunc, flavor_name=flavor_name, **kwargs)


class _PortablePyfunc:
    """``mlflow.pyfunc`` as the flavor ``Model.log`` saves with, minus the machine's paths."""

    @staticmethod
    def save_model(path: str, mlflow_model: Any, **kwargs: Any) -> None:
        from mlflow.models.model import MLMODEL_FILE_NAME

        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        conf = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME]
        if conf.get("model_code_path"):
            conf["model_code_path"] = os.path.basename(conf["model_code_path"])
        for artifact in (conf.get("artifacts") or {}).values():
            artifact.pop("uri", None)
        # Model.log keeps this object and saves it again if it adds to it: the edits stay.
        mlflow_model.artifact_path = None
        mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


mlflow.models.set_model(RecommenderModel())
