"""Turn off the usage telemetry of DVC, MLflow, Great Expectations and BentoML."""

from __future__ import annotations

import os

#: Each variable's value is the one its tool documents (BentoML wants the literal ``true``).
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
}


#: Not telemetry, but noise in a pipeline's log: TensorFlow's start-up banners, MLflow's
#: per-file download bars, and the "View run ... at: <tracking URI>/#/..." links MLflow prints
#: whenever a run ends, which carry the URI's password when it has one (stage output goes to CI
#: logs; the stage runner also redacts what still gets through, see
#: :func:`recommender.core.redaction.redacted_output`). Set before TensorFlow is imported; explicit
#: settings win.
QUIET = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def disable_telemetry() -> None:
    """Set the opt-out variables for this process and its children, keeping explicit settings."""
    for key, value in {**TELEMETRY_OFF, **QUIET}.items():
        os.environ.setdefault(key, value)
