"""Scale-out with ``tf.distribute``: the strategy, and this process's role in the cluster."""

from __future__ import annotations

import tensorflow as tf


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, or CPU) or ``multiworker`` (TF_CONFIG).

    Create it before any other TensorFlow work: ``MultiWorkerMirroredStrategy`` needs that.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy: str = "multiworker") -> tuple[bool, str]:
    """``(is_chief, "type-index")`` from ``TF_CONFIG``; a single process is the chief.

    The chief is the ``chief`` task, or worker 0 when the cluster has no chief
    (as ``MultiWorkerMirroredStrategy`` decides). Only the ``multiworker`` strategy reads
    ``TF_CONFIG``: under ``default`` and ``mirrored`` the process is alone, and a
    ``TF_CONFIG`` left in the environment must not turn it into a worker that writes
    nothing.
    """
    if strategy != "multiworker":
        return True, "chief-0"
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    kind = resolver.task_type or "chief"
    index = int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    return chief, f"{kind}-{index}"
