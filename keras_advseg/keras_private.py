"""Every use of Keras internals, in one place.

The trainers override ``train_step`` and must behave exactly like Keras' own
step (the loss shown in the logs, distribution, the first-batch build), and
training must reset the random state of dropout layers per epoch. Keras offers
no public API for four of these things; each is wrapped here, with the reason,
and ``tests/test_keras_private.py`` fails loudly when a Keras release changes
one of them. ``pyproject.toml`` pins Keras to the minor versions the suite ran on.

- :func:`loss_tracker`: ``Model._loss_tracker``, the ``loss`` entry of the logs.
- :func:`seed_state_variables`: the state variables of ``keras.random.SeedGenerator``
  (dropout, noise), found by their variable name.
- :class:`LocalReplicaBuild`: overrides the hook ``Model._maybe_symbolic_build`` with
  :func:`build_from_local_replica` (``Model._symbolic_build``), to work around
  keras-team/keras#20585 under ``MultiWorkerMirroredStrategy``.
- :func:`unscale_loss_for_distribution`: our copy of Keras' private helper of the
  same name (``keras.src.losses.loss``), written with ``tf.distribute`` only.
- :func:`cache_saving_skipsets`: fills the cache Keras' saving code reads but never
  writes (``keras.src.saving.saving_lib.get_attr_skipset``), a speed-up of every save
  and load that changes nothing saved.
"""

from __future__ import annotations

import keras
import tensorflow as tf

SEED_STATE_NAME = "seed_generator_state"
"""The name Keras gives a ``SeedGenerator``'s state variable."""


def loss_tracker(model: keras.Model) -> keras.metrics.Metric:
    """The compiled model's ``loss`` tracker (``Model._loss_tracker``).

    Raises:
        RuntimeError: the model is not compiled, or Keras no longer has the attribute.
    """
    tracker = getattr(model, "_loss_tracker", None)
    if tracker is None:
        raise RuntimeError(
            f"keras {keras.__version__}: Model._loss_tracker is missing; compile the model first "
            "(or Keras changed its internals: see keras_advseg/keras_private.py)"
        )
    return tracker


def unscale_loss_for_distribution(value):
    """``value`` times the number of replicas in sync, as Keras' own ``train_step`` reports its loss.

    ``compute_loss`` divides the loss by the number of replicas under a
    ``tf.distribute`` strategy (so that summing gradients over replicas gives
    the global batch's); the loss shown in the logs is unscaled again.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = keras.ops.multiply(value, keras.ops.cast(replicas, value.dtype))
    return value


def seed_state_variables(model: keras.Model) -> list:
    """The state variables of every ``keras.random.SeedGenerator`` the model tracks, in a fixed order."""
    return [v for v in model.variables if v.path.endswith(SEED_STATE_NAME)]


def build_from_local_replica(model: keras.Model, iterator, data_batch, default) -> None:
    """``Model._maybe_symbolic_build`` that works under ``MultiWorkerMirroredStrategy``.

    Keras' version all-reduces the first distributed batch with MEAN, which
    fails across workers (keras-team/keras#20585, "Attempt to convert a value
    (PerReplica ...)"). Only the batch's structure and shapes matter for the
    build, so one local replica value serves.

    Args:
        model: The model being fitted.
        iterator, data_batch: As Keras passes them.
        default: The bound ``super()._maybe_symbolic_build``, used under any other strategy.
    """
    strategy = model.distribute_strategy
    if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return default(iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
        batch = next(batches)
        data_batch = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0], batch
        )
        break
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)
    return None


class LocalReplicaBuild:
    """Mixin for a :class:`keras.Model` subclass: Keras' first-batch build (the private hook
    ``Model._maybe_symbolic_build``) through :func:`build_from_local_replica`, so that it works
    under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).

    Example::

        class Trainer(keras_private.LocalReplicaBuild, keras.Model): ...
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return build_from_local_replica(self, iterator, data_batch, super()._maybe_symbolic_build)


SKIPSET_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")
"""The object kinds Keras' saving code walks with a skip set of attributes."""


def cache_saving_skipsets() -> bool:
    """Caches Keras' per-kind sets of attributes its saving code skips, under the key it reads.

    Keras 3 (3.15 and earlier) saves and loads a model by walking every layer, variable
    holder and optimiser, and for each one asks ``get_attr_skipset(kind)``: the attributes
    of a fresh reference object of that kind. The result is meant to be cached in Keras'
    global state, but it is read under ``saving_attr_skiplist_<kind>`` and written under
    ``saving_attr_skipset_<kind>``, so it never is: each object of each save builds a new
    reference ``Layer`` and lists its attributes, about 40 % of the time of saving or
    loading a 3-D UNet (a training checkpoint, ``model.keras``, every evaluation's load).
    The sets are the same each time; storing each once under the key Keras reads changes
    nothing that is saved or loaded. Keras' global state is per thread and
    ``keras.backend.clear_session`` clears it, so callers call this before each save or load
    (after the first call it only looks the keys up).

    Returns:
        True when the cache is filled, False when this Keras has no such function (nothing
        to do).
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:
        return False
    skipset = getattr(saving_lib, "get_attr_skipset", None)
    if skipset is None:
        return False
    for kind in SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, skipset(kind))
    return True


def check() -> list[str]:
    """Names of the internals this Keras lacks (empty when all are present)."""
    missing = []
    if not callable(getattr(keras.Model, "_maybe_symbolic_build", None)):
        missing.append("Model._maybe_symbolic_build")
    if not callable(getattr(keras.Model, "_symbolic_build", None)):
        missing.append("Model._symbolic_build")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    model.compile(loss="mse")
    if getattr(model, "_loss_tracker", None) is None:
        missing.append("Model._loss_tracker")
    if not seed_state_variables(model):
        missing.append(f"SeedGenerator variable named {SEED_STATE_NAME!r}")
    return missing
