"""Nested results (``metrics.json``, the monitor's ``summary.json``) as flat MLflow metrics.

MLflow metric names may hold letters, digits, ``_ - . /`` and spaces, not ``@`` or ``+``:
``ranking.ndcg@10`` becomes ``ranking_ndcg_at_10`` and the activity slice ``1-5`` ``1_to_5``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any


def metric_name(path: str) -> str:
    """An MLflow metric name for a ``_``-joined key path."""
    name = path.replace("@", "_at_").replace("+", "_plus").replace("-", "_to_")
    return re.sub(r"[^A-Za-z0-9_. /]", "_", name)


def flat_metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number (a boolean as 0 or 1) under ``result``, keyed by its path's
    :func:`metric_name`; lists, text, nulls and NaN are left out."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        path = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, path))
        elif isinstance(value, bool | int | float) and math.isfinite(value):
            flat[metric_name(path)] = float(value)
    return flat
