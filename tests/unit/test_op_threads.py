"""train.intra_op_threads: TensorFlow's threads per op, set before its runtime starts."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
import tensorflow as tf
from recommender.core.config import TrainConfig
from recommender.training.strategy import set_op_threads, strategy_for

strategy_for("none", TrainConfig().intra_op_threads)
print("configured", tf.config.threading.get_intra_op_parallelism_threads())
print("sum", float(tf.reduce_sum(tf.ones([1000]))))  # the runtime starts
set_op_threads(TrainConfig().intra_op_threads)  # the same: nothing to do, no warning
set_op_threads(2)  # too late: kept, with a warning
print("after", tf.config.threading.get_intra_op_parallelism_threads())
"""


def test_the_train_stage_gives_each_op_one_thread_and_says_when_it_cannot() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    assert "configured 1" in done.stdout
    assert "sum 1000.0" in done.stdout
    assert "after 1" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "intra_op_threads" in line]
    assert warnings == [
        "train.intra_op_threads 2 not applied: TensorFlow's runtime already started in this "
        "process with 1"
    ]
