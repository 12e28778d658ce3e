"""Scale-out with ``tf.distribute``: the strategy, and this process's role in the cluster."""

from __future__ import annotations

import os
import socket
import time

import tensorflow as tf

from keras_advseg.errors import ClusterError

CHIEF_WAIT_S = 300
"""How long a worker that is not the chief waits for the chief to listen (override with the
environment variable ``ADVSEG_CHIEF_WAIT_S``): the chief may start a little later."""


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, or CPU) or ``multiworker`` (TF_CONFIG).

    Create it before any other TensorFlow work: ``MultiWorkerMirroredStrategy`` needs that.
    A worker that is not the chief first waits, bounded, for the chief to listen
    (:func:`wait_for_chief`): TensorFlow's own wait has no end.

    Raises:
        ClusterError: the chief did not answer in time.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        chief, role = worker_role(name)
        if not chief:
            wait_for_chief(role)
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def chief_address() -> str | None:
    """``host:port`` of the chief in ``TF_CONFIG`` (the ``chief`` task, else worker 0)."""
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec().as_dict()
    tasks = cluster.get("chief") or cluster.get("worker") or []
    if isinstance(tasks, dict):  # a sparse cluster spec: {index: address}
        tasks = [tasks[k] for k in sorted(tasks)]
    return tasks[0] if tasks else None


def wait_for_chief(role: str, timeout: float | None = None) -> None:
    """Waits until the chief accepts a TCP connection, at most ``timeout`` seconds.

    Raises:
        ClusterError: naming this worker and the chief's address, when it never answered.
    """
    address = chief_address()
    if address is None:
        return
    if timeout is None:
        timeout = float(os.environ.get("ADVSEG_CHIEF_WAIT_S", CHIEF_WAIT_S))
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{role}: the chief at {address} (TF_CONFIG) did not answer in "
                    f"{timeout:g} s; start it, or run without --strategy multiworker"
                ) from None
            time.sleep(0.5)


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
