"""Keras' private API we use, checked at the pinned version: an upgrade that moves it fails here,
naming it, rather than inside a training step."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import child_env

pytestmark = pytest.mark.slow

# In a fresh interpreter: two logical CPUs must be set before TensorFlow starts.
CHECK = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from recommender.models.keras_internals import scale_loss_for_distribution
loss = tf.constant(6.0)
alone = float(scale_loss_for_distribution(loss))
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    scaled = strategy.run(lambda: scale_loss_for_distribution(loss))
print(alone, *(float(v) for v in strategy.experimental_local_results(scaled)))
"""


def test_the_private_loss_scaling_is_where_the_adapter_takes_it_and_does_what_we_rely_on() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # One replica: unchanged. Two replicas: each holds half, so their gradients sum to the mean.
    assert proc.stdout.split() == ["6.0", "3.0", "3.0"]
