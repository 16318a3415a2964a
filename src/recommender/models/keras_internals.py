"""The one place that reaches into Keras' private modules (``keras.src``).

Keras 3 has no public name for what its own losses do under ``tf.distribute``: divide a loss by
the number of replicas, so that summing the replicas' gradients gives the mean. The two-tower's
loss needs the same. Imported here, once, so that a Keras upgrade that moves it fails with one
line naming it (tests/model/test_keras_internals.py imports this module) instead of somewhere
inside a training step.
"""

from __future__ import annotations

import keras

try:
    from keras.src.losses.loss import scale_loss_for_distribution
except ImportError as exc:  # pragma: no cover (only on a Keras that moved it)
    raise ImportError(
        f"keras {keras.__version__} no longer has keras.src.losses.loss."
        "scale_loss_for_distribution (pinned: keras==3.15.1): find where it moved, or copy its "
        "few lines, in src/recommender/models/keras_internals.py"
    ) from exc

__all__ = ["scale_loss_for_distribution"]
