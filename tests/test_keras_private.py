"""The Keras internals the trainers rely on: each fails here, loudly, when a Keras release changes it."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advseg import keras_private


def test_every_internal_is_present_in_this_keras():
    assert keras_private.check() == [], (
        f"keras {keras.__version__} changed internals used by keras_private"
    )


def test_loss_tracker_is_the_logged_loss():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(RuntimeError, match="compile the model first"):
        keras_private.loss_tracker(model)
    model.compile(loss="mse", optimizer="sgd")
    tracker = keras_private.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    history = model.fit(np.ones((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(float(tracker.result()))


def test_unscale_matches_keras_own_helper():
    from keras.src.losses.loss import unscale_loss_for_distribution as theirs

    value = tf.constant(0.25)
    assert float(keras_private.unscale_loss_for_distribution(value)) == float(theirs(value)) == 0.25


def test_seed_state_variables_drive_dropout():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5)])
    (state,) = keras_private.seed_state_variables(model)
    x = np.ones((1, 64), "float32")
    state.assign(np.array([3, 7], dtype=state.dtype))
    first = np.asarray(model(x, training=True))
    state.assign(np.array([3, 7], dtype=state.dtype))
    assert np.array_equal(
        np.asarray(model(x, training=True)), first
    )  # resetting the state repeats the mask


def test_build_from_local_replica_defers_to_keras_outside_multiworker():
    calls = []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keras_private.build_from_local_replica(model, "iterator", None, lambda **kw: calls.append(kw))
    assert calls == [{"iterator": "iterator", "data_batch": None}]


def test_saving_reads_the_cached_skip_sets_and_saves_the_same_weights(tmp_path, monkeypatch):
    from keras.src.layers.layer import Layer
    from keras.src.saving import saving_lib

    keras.backend.clear_session()  # Keras' global state, where the cache lives, starts empty
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    references = []
    init = Layer.__init__

    def counted(self, *args, **kwargs):
        references.append(type(self))
        init(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__init__", counted)
    fresh = {kind: saving_lib.get_attr_skipset(kind) for kind in keras_private.SKIPSET_TYPES}
    references.clear()
    model.save_weights(tmp_path / "before.weights.h5")
    assert references  # this Keras builds a reference layer per saved object: no cache hit
    assert keras_private.cache_saving_skipsets()
    for kind, skipset in fresh.items():
        assert saving_lib.get_attr_skipset(kind) == skipset  # the sets Keras computes
    references.clear()
    model.save_weights(tmp_path / "after.weights.h5")
    assert references == []  # now read from the cache
    copy = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    copy.load_weights(tmp_path / "after.weights.h5")
    for a, b in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_local_replica_build_is_keras_own_first_batch_build(monkeypatch):
    from keras_advseg.defenses.trainers import PGDTrainer, SegmentationTrainer

    hook = keras_private.LocalReplicaBuild._maybe_symbolic_build
    assert SegmentationTrainer._maybe_symbolic_build is hook
    assert PGDTrainer._maybe_symbolic_build is hook
    calls = []
    delegate = keras_private.build_from_local_replica

    def spy(model, iterator, data_batch, default):
        calls.append((model, default.__func__))
        return delegate(model, iterator, data_batch, default)

    monkeypatch.setattr(keras_private, "build_from_local_replica", spy)

    class Doubling(keras_private.LocalReplicaBuild, keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    model = Doubling()
    model.compile(loss="mse", optimizer="sgd")
    model.fit(np.ones((4, 2)), np.full((4, 1), 2.0), epochs=1, verbose=0)
    assert calls == [(model, keras.Model._maybe_symbolic_build)]
    assert model.built and model.dense.kernel.shape == (2, 1)


def private_keras_uses(source: str) -> list[str]:
    """Overrides and reads of private Keras attributes and imports of ``keras.src`` in ``source``."""
    compiled = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    compiled.compile(loss="mse", optimizer="sgd")  # instance attributes too (_loss_tracker)
    bases = (
        compiled,
        keras.Model,
        keras.layers.Layer,
        keras.callbacks.Callback,
        keras.optimizers.Optimizer,
        keras.metrics.Metric,
        keras.losses.Loss,
    )

    def private(name: str) -> bool:
        return (
            name.startswith("_")
            and not name.endswith("__")
            and any(hasattr(base, name) for base in bases)
        )

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and private(node.name):
            found.append(f"line {node.lineno}: overrides {node.name}")
        elif isinstance(node, ast.Attribute) and private(node.attr):
            found.append(f"line {node.lineno}: reads {node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras.src"):
            found.append(f"line {node.lineno}: imports {node.module}")
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: imports {a.name}"
                for a in node.names
                if a.name.startswith("keras.src")
            ]
    return found


def test_private_keras_is_used_only_in_keras_private():
    package = Path(keras_private.__file__).parent
    found = [
        f"{path.relative_to(package.parent)} {use}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "keras_private.py"
        for use in private_keras_uses(path.read_text())
    ]
    assert found == [], "\n".join(found)
    old_trainer = (
        "class T(keras.Model):\n"
        "    def _maybe_symbolic_build(self, iterator=None, data_batch=None):\n"
        "        return self._loss_tracker\n"
    )
    assert private_keras_uses(old_trainer) == [
        "line 2: overrides _maybe_symbolic_build",
        "line 3: reads _loss_tracker",
    ]
