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


def disable_telemetry() -> None:
    """Set the opt-out variables for this process and its children, keeping explicit settings."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
