"""Evaluation scaled out with ``tf.distribute``: subjects spread over devices and workers.

Subjects are independent, so the work splits without changing any number: worker ``w`` of
``W`` takes subjects ``w, w + W, ...``; on each worker a thread per local device (the
strategy's ``worker_devices``) attacks its share under ``tf.device``. The workers' rows are
then all-gathered through the strategy's collectives, so every worker (and the chief, which
writes them) holds the same merged :class:`Evaluation`, in the order of ``ids``.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from keras_advseg.evaluation.results import Evaluation
from keras_advseg.evaluation.robustness import evaluate


def cluster_position(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """``(index, count)`` of this worker among the strategy's workers (``(0, 1)`` in one process).

    The chief (or worker 0 when there is none) is index 0.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1
    cluster = resolver.cluster_spec().as_dict()
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if resolver.task_type == "chief":
        return 0, chiefs + workers
    return chiefs + int(resolver.task_id or 0), chiefs + workers


def local_devices(strategy: tf.distribute.Strategy) -> list[str | None]:
    """The devices of this worker that the strategy replicates over (``[None]``: the default)."""
    try:
        return list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError):  # the default strategy has no device list
        return [None]


def evaluate_distributed(
    strategy: tf.distribute.Strategy,
    model,
    prepared,
    ids: list[str],
    config,
    *,
    transfer_model=None,
    native=None,
    native_rows: str = "all",
    progress: bool | None = None,
) -> Evaluation:
    """:func:`~keras_advseg.evaluation.robustness.evaluate` over the strategy's devices and workers.

    Args:
        strategy: From :func:`~keras_advseg.training.make_strategy`.
        Others: as :func:`~keras_advseg.evaluation.robustness.evaluate`.

    Returns:
        The merged evaluation of every subject, identical on every worker; rows and iteration
        curves in the order of ``ids``, the example figure's arrays on the worker that
        evaluated ``ids[0]`` (the chief).
    """
    index, count = cluster_position(strategy)
    mine = ids[index::count]
    devices = local_devices(strategy)
    shares = [mine[d :: len(devices)] for d in range(len(devices))]

    def run(device, share):
        if not share:
            return Evaluation()
        with tf.device(device) if device else contextlib.nullcontext():
            return evaluate(
                model,
                prepared,
                share,
                config,
                transfer_model=transfer_model,
                native=native,
                native_rows=native_rows,
                progress=progress if len(devices) == 1 else False,
            )

    if len(devices) == 1:
        parts = [run(devices[0], shares[0])]
    else:
        with ThreadPoolExecutor(len(devices)) as pool:
            parts = list(pool.map(run, devices, shares))
    if count > 1:
        local = {
            "rows": [r for p in parts for r in p.rows],
            "iterations": [r for p in parts for r in p.iterations],
        }
        gathered = [json.loads(b) for b in all_gather_bytes(strategy, _dumps(local))]
        parts += [
            Evaluation(g["rows"], g["iterations"]) for i, g in enumerate(gathered) if i != index
        ]
    return merge(parts, ids)


def merge(parts: list[Evaluation], ids: list[str]) -> Evaluation:
    """One evaluation from shards: rows and curves ordered by ``ids`` (stable within a subject)."""
    order = {subject: i for i, subject in enumerate(ids)}
    rows = sorted((r for p in parts for r in p.rows), key=lambda r: order[r["subject"]])
    curves = sorted((r for p in parts for r in p.iterations), key=lambda r: order[r["subject"]])
    example = next(
        (p.example for p in parts if p.example is not None and p.example["subject"] == ids[0]),
        None,
    )
    return Evaluation(rows, curves, example)


def all_gather_bytes(strategy: tf.distribute.Strategy, payload: bytes) -> list[bytes]:
    """Every worker's ``payload``, in worker order, through the strategy's collectives.

    Each replica contributes its worker's bytes, padded to the longest; replica ``r``
    belongs to worker ``r // replicas_per_worker``.
    """
    _, count = cluster_position(strategy)
    per_worker = strategy.num_replicas_in_sync // count
    length = strategy.gather(
        strategy.run(lambda: tf.constant([len(payload)], tf.int64)), axis=0
    ).numpy()
    longest = int(length.max())
    padded = np.zeros(longest, np.int32)  # collectives gather 32-bit integers, not bytes
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    data = strategy.gather(strategy.run(lambda: tf.constant(padded[None])), axis=0).numpy()
    return [
        data[r, : length[r]].astype(np.uint8).tobytes() for r in range(0, len(length), per_worker)
    ]


def _dumps(value) -> bytes:
    def default(v):
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        raise TypeError(f"not JSON serialisable: {type(v)}")

    return json.dumps(value, default=default).encode()
