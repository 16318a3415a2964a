"""Imports of heavy libraries that cost less done one particular way."""

from __future__ import annotations

import sys
from types import ModuleType


def keras() -> ModuleType:
    """``import keras``, without the scikit-learn that Keras' ``keras.wrappers`` loads.

    Keras imports ``sklearn`` (if installed) for its scikit-learn estimator wrappers, which this
    project never uses: 0.8-1.4 s of CPU in every process that trains or loads a Keras model.
    Hidden while Keras loads, it is skipped (Keras supports its absence: the wrappers then raise
    if used); a later ``import sklearn`` still works. Call it where Keras is first imported.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    hide = "sklearn" not in sys.modules
    if hide:
        sys.modules["sklearn"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import keras
    finally:
        if hide and "sklearn" in sys.modules and sys.modules["sklearn"] is None:
            del sys.modules["sklearn"]
    return keras
