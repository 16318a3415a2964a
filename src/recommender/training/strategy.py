"""Which ``tf.distribute`` strategy ``train.distribute`` names, and who the chief is.

``none`` is TensorFlow's default strategy (one process, one replica); ``mirrored`` spreads the
training loop (:mod:`recommender.training.loop`) over this machine's devices (one on a CPU: the
single-process reference of the multi-worker run); ``multi_worker`` over the processes
``TF_CONFIG`` names, one per worker, each started with the same command and its own
``TF_CONFIG``::

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}' python pipeline/train.py ...

The gradients of the embedding tables are gathered, not summed densely: every worker keeps whole
tables, so they must fit one worker (``ParameterServerStrategy``'s sharded tables fail in Keras 3,
keras-team/keras#18624).
"""

from __future__ import annotations

import json
import os
from typing import Any

from recommender.core.errors import ConfigError

TF_CONFIG = "TF_CONFIG"
_strategies: dict[str, Any] = {}


def cluster_spec(raw: str | None = None) -> dict[str, Any]:
    """``TF_CONFIG`` (or ``raw``) checked: ``{"cluster": {"worker": [...]}, "task": {...}}``.

    Raises:
        ConfigError: It is missing, not JSON, or does not name this task among the workers.
    """
    raw = os.environ.get(TF_CONFIG) if raw is None else raw
    expected = (
        'expected e.g. {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not raw:
        raise ConfigError(
            f"train.distribute is multi_worker but {TF_CONFIG} is not set: each worker needs "
            f"the cluster and its own task in it; {expected}"
        )
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{TF_CONFIG} is not JSON ({exc}); {expected}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"{TF_CONFIG} needs a 'cluster' and a 'task' object; {expected}")
    kind, index = task.get("type"), task.get("index")
    members = cluster.get(kind) if isinstance(kind, str) else None
    if kind not in ("worker", "chief") or not isinstance(members, list):
        raise ConfigError(
            f"{TF_CONFIG}'s task.type must be 'worker' or 'chief' and name a list in its "
            f"cluster, got task {task!r}, cluster keys {sorted(cluster)}; {expected}"
        )
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise ConfigError(
            f"{TF_CONFIG}'s task.index must be 0..{len(members) - 1} (its cluster's {kind} "
            f"list), got {index!r}"
        )
    return spec


def is_chief(kind: str) -> bool:
    """Whether this process logs and saves: always outside ``multi_worker``; there, the task
    ``chief``, or worker 0 of a cluster without one (TensorFlow's rule)."""
    if kind != "multi_worker":
        return True
    spec = cluster_spec()
    task = spec["task"]
    if task["type"] == "chief":
        return True
    return "chief" not in spec["cluster"] and task["index"] == 0


def strategy_for(kind: str) -> Any:
    """The strategy ``train.distribute`` names, made once per process (a second
    ``MultiWorkerMirroredStrategy`` cannot re-join the cluster: it resets the process's
    collective state while its peers may already use it, and the first collective hangs; see
    the ``__main__`` block of :mod:`recommender.training.distributed`): call it before any
    TensorFlow op, which would fix the runtime's collective setup."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind in _strategies:
        return _strategies[kind]
    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif kind == "multi_worker":
        cluster_spec()  # a clear error before TensorFlow's own
        ring = tf.distribute.experimental.CommunicationImplementation.RING
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=ring
            )
        )
    else:
        raise ConfigError(f"train.distribute must be none, mirrored or multi_worker, got {kind!r}")
    _strategies[kind] = strategy
    return strategy
