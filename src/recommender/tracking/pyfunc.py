"""The MLflow model: a pyfunc over a :class:`~recommender.scoring.bundle.ModelBundle`, from code.

MLflow's ``tensorflow`` flavor would pickle every registered Keras class into the model (and need
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` to load it back). Logged as "models from code" instead,
MLflow stores this file and the bundle folder; loading runs this file and
:meth:`ModelBundle.load`, which reads the Keras model with ``safe_mode=True``. Nothing is pickled.

Input: ``user_id`` and ``item_id`` (raw ids, as columns of a DataFrame or a dict of arrays).
Output: predicted ratings on the dataset's scale; unknown ids get the out-of-vocabulary row.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from recommender.tracking import BUNDLE_ARTIFACT


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


mlflow.models.set_model(RecommenderModel())
