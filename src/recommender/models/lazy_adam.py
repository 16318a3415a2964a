"""Adam that updates only the embedding rows a batch touched (lazy Adam).

Keras 3's Adam is dense: a gradient of an embedding lookup arrives as ``tf.IndexedSlices`` (the
rows the batch used), but Adam's moment updates subtract it from the whole moment tables, so
every step reads and writes every row of every table, three times. The work per step then
grows with the catalog, not with the batch (``make bench-scale`` measures both).

For a sparse gradient, only the touched rows' moments and weights move (the rule of TF
Addons' ``LazyAdam`` and PyTorch's ``SparseAdam``): a row's moments decay only on the steps
that use it, the usual choice for embedding tables, where most rows sit out most steps. Dense
gradients (an NCF tower's kernels, ``two_tower``'s item tower under the full softmax) take
Keras' Adam update unchanged.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="recommender")
class LazyAdam(keras.optimizers.Adam):
    """Adam with row-wise updates for sparse (``IndexedSlices``) gradients; Adam otherwise.

    Example:
        >>> model.compile(optimizer=LazyAdam(3e-3), loss="mse")
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        import tensorflow as tf

        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        # One update per distinct row: a row looked up twice in the batch sums its gradients.
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(
            tf.cast(gradient.values, dtype), position, tf.shape(rows)[0]
        )
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        step_rows = alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(step_rows, rows))
