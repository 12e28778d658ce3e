"""Each defense on a tiny model and a few phantom subjects."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import small_segmenter, span

from keras_advseg.attacks import fgsm
from keras_advseg.data.pipeline import one_hot_labels, volume_dataset
from keras_advseg.data.prepare import load_prepared
from keras_advseg.defenses import (
    AdversarialTrainer,
    FastTrainer,
    NoiseTrainer,
    PGDTrainer,
    SegmentationTrainer,
    TradesTrainer,
)
from keras_advseg.defenses.trainers import voxel_kl
from keras_advseg.losses import SoftDiceLoss, soft_dice_loss
from keras_advseg.training import write_soft_labels


def tiny_network(seed=0):
    """The network the trainers train here (what is under test is each trainer's step)."""
    return small_segmenter(seed)


@pytest.fixture(scope="module")
def batch(prepared_dir):
    prepared = load_prepared(prepared_dir)
    images, labels = zip(*(prepared.load(i) for i in prepared.train_ids[:2]))
    return np.stack(images), one_hot_labels(np.stack(labels)).numpy()


def losses_over_training(trainer, x, y, steps=12, lr=3e-3):
    trainer.compile(optimizer=keras.optimizers.Adam(lr))
    history = trainer.fit(x, y, batch_size=2, epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda n: SegmentationTrainer(n),
        lambda n: AdversarialTrainer(n, eps=0.05, mode="joint"),
        lambda n: AdversarialTrainer(n, eps=0.05, mode="alternating"),
        lambda n: NoiseTrainer(n, radius=0.01),
        lambda n: SegmentationTrainer(n, temperature=20.0),
    ],
    ids=["none", "adversarial-joint", "adversarial-alternating", "noise", "temperature-20"],
)
def test_loss_decreases(batch, make):
    x, y = batch
    trainer = make(tiny_network())
    # at T the logits move T times less per step (Adam's steps do not grow with the gradient)
    losses = losses_over_training(trainer, x, y, lr=3e-3 * trainer.temperature)
    assert losses[-1] < losses[0] - 0.003
    assert all(np.isfinite(losses))


@pytest.mark.parametrize("make", [SegmentationTrainer, lambda n: FastTrainer(n, eps=0.05)])
def test_compile_builds_the_optimizer_so_the_first_fit_traces_its_step_once(batch, make):
    """Keras on TensorFlow creates unbuilt optimizer variables inside the first traced step,
    and TensorFlow then traces that step a second time; compile builds them first."""
    x, y = batch
    trainer = make(tiny_network())
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert trainer.optimizer.built
    assert len(trainer.optimizer.variables) > 2 * len(trainer.network.trainable_variables)
    traces = []
    step = type(trainer).train_step

    def counted(self, data):
        traces.append(1)  # runs once per trace, not per executed step
        return step(self, data)

    trainer.train_step = counted.__get__(trainer)
    trainer.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    assert len(traces) == 1
    before = [np.asarray(v) for v in trainer.optimizer.variables]
    trainer.compile(optimizer=trainer.optimizer)  # compiled again: built once, state kept
    after = [np.asarray(v) for v in trainer.optimizer.variables]
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_compile_builds_a_loss_scale_optimizer_once():
    """Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer, whose build adds
    its variables again when called twice: compiling twice must not."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trainer = SegmentationTrainer(tiny_network())
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        count = len(trainer.optimizer.variables)
        assert count > 2 * len(trainer.network.trainable_variables)
        trainer.compile(optimizer=trainer.optimizer)
        assert len(trainer.optimizer.variables) == count
    finally:
        keras.mixed_precision.set_global_policy(policy)


@pytest.mark.slow
def test_adversarial_examples_within_eps_and_from_current_weights(batch):
    x, y = batch
    network = tiny_network()
    trainer = AdversarialTrainer(network, eps=0.05)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = trainer.adversarial_examples(tf.constant(x), tf.constant(y)).numpy()
    unit = span(x)
    assert np.all(np.abs(before - x).reshape(2, -1).max(axis=1) <= 0.05 * unit * (1 + 1e-6))
    np.testing.assert_allclose(before, fgsm(network, x, y, eps=0.05), atol=1e-6)
    trainer.fit(x, y, batch_size=2, epochs=3, verbose=0)
    after = trainer.adversarial_examples(tf.constant(x), tf.constant(y)).numpy()
    np.testing.assert_allclose(after, fgsm(network, x, y, eps=0.05), atol=1e-6)  # current weights
    assert np.mean(np.sign(after - x) != np.sign(before - x)) > 0.01


def test_noise_stays_within_radius(batch):
    x, _ = batch
    trainer = NoiseTrainer(tiny_network(), radius=0.01, seed=3)
    noisy = trainer.noisy(tf.constant(x)).numpy()
    unit = span(x)
    distance = np.abs(noisy - x).reshape(2, -1).max(axis=1)
    assert np.all(distance <= 0.01 * unit * (1 + 1e-6)) and np.all(distance > 0.005 * unit)


def test_distillation_targets_are_teacher_temperature_softmax(prepared_dir, tmp_path):
    prepared = load_prepared(prepared_dir)
    teacher = tiny_network(1)
    ids = prepared.train_ids[:2]
    write_soft_labels(teacher, prepared, ids, tmp_path, temperature=20.0)
    image, _ = prepared.load(ids[0])
    expected = keras.ops.softmax(teacher(image[None]) / 20.0, axis=-1)[0]
    soft = np.load(tmp_path / f"{ids[0]}.npy")
    np.testing.assert_allclose(soft, expected, atol=1e-6)
    assert soft.max() < 0.9  # T = 20 softens the teacher
    ds = volume_dataset(
        prepared,
        ids=ids,
        batch_size=1,
        shuffle=False,
        augment_data=False,
        soft_labels=str(tmp_path),
    )
    _, target = next(iter(ds))
    np.testing.assert_allclose(target[0], soft)


def test_student_trains_at_t_and_deploys_at_one(batch):
    x, y = batch
    soft = keras.ops.convert_to_numpy(keras.ops.softmax(tiny_network(1)(x) / 20.0, axis=-1))
    network = tiny_network()
    student = SegmentationTrainer(network, temperature=20.0)
    student.compile(optimizer=keras.optimizers.Adam(3e-3))
    assert isinstance(student.loss, SoftDiceLoss) and student.loss.temperature == 20.0
    student.fit(x, soft, batch_size=2, epochs=2, verbose=0)
    # the deployable network is the plain logits model: its probabilities are softmax at T = 1
    np.testing.assert_array_equal(student(x), network(x))
    assert not any(isinstance(layer, keras.layers.Softmax) for layer in network.layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -1}, "eps must be >= 0"),
        ({"beta": 2}, r"beta must be in \[0, 1\]"),
        ({"mode": "mixed"}, "mode must be one of"),
    ],
)
def test_adversarial_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdversarialTrainer(tiny_network(), **kwargs)


@pytest.mark.slow
def test_joint_step_follows_equation_9_with_fgsm_from_current_weights(batch):
    x, y = batch
    network = tiny_network()
    trainer = AdversarialTrainer(network, eps=0.05, beta=0.3, mode="joint")
    trainer.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [np.array(w) for w in network.trainable_weights]
    x_adv = fgsm(network, x, y, eps=0.05)  # the current weights' FGSM example
    loss = SoftDiceLoss()
    with tf.GradientTape() as tape:
        total = 0.3 * loss(y, network(x, training=True)) + 0.7 * loss(
            y, network(x_adv, training=True)
        )
    grads = tape.gradient(total, network.trainable_weights)
    trainer.train_on_batch(x, y)
    moved = 0.0
    for w0, g, w1 in zip(before, grads, network.trainable_weights):
        np.testing.assert_allclose(np.array(w1), w0 - np.array(g), atol=2e-5)
        moved = max(moved, float(np.abs(np.array(g)).max()))
    assert moved > 1e-3


@pytest.mark.parametrize(
    "make, fields",
    [
        (lambda n: SegmentationTrainer(n, temperature=20.0), {"temperature": 20.0}),
        (
            lambda n: AdversarialTrainer(n, eps=0.1, beta=0.3, mode="alternating"),
            {"eps": 0.1, "beta": 0.3, "mode": "alternating"},
        ),
        (
            lambda n: NoiseTrainer(n, radius=0.02, seed=5, temperature=2.0),
            {"radius": 0.02, "seed": 5, "temperature": 2.0},
        ),
        (
            lambda n: PGDTrainer(n, eps=0.02, steps=4, alpha=0.01, beta=0.25, seed=3),
            {"eps": 0.02, "steps": 4, "alpha": 0.01, "beta": 0.25, "seed": 3},
        ),
        (lambda n: FastTrainer(n, eps=0.04, seed=2), {"eps": 0.04, "alpha": 0.05, "beta": 0.0}),
        (
            lambda n: TradesTrainer(n, eps=0.03, steps=2, beta=4.0),
            {"eps": 0.03, "steps": 2, "beta": 4.0},
        ),
    ],
)
def test_trainers_round_trip_through_get_config_and_keras_files(make, fields, tmp_path):
    trainer = make(tiny_network())
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 4)).astype("float32")
    expected = np.asarray(trainer(x))
    rebuilt = type(trainer).from_config(trainer.get_config())
    assert {k: getattr(rebuilt, k) for k in fields} == fields
    assert [tuple(w.shape) for w in rebuilt.network.weights] == [
        tuple(w.shape) for w in trainer.network.weights
    ]
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras", safe_mode=True, compile=False)
    assert type(loaded) is type(trainer) and {k: getattr(loaded, k) for k in fields} == fields
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, rtol=1e-5, atol=1e-5)


def _input_gradient(network, x, loss):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(loss(network(x, training=False)))
    return tape.gradient(value, x).numpy()


def _reference_step(trainer_cls, kwargs, x, y, lr=0.5):
    """One hand-written step of the robust trainers: PGD / fast / TRADES, then one SGD update."""
    network = tiny_network()
    eps_t = kwargs["eps"] * span(x).reshape(-1, 1, 1, 1, 1)
    loss_fn = SoftDiceLoss()

    def noise(draw, **extra):  # per sample, from (seed + the sample's bits, step 0)
        keys = [int(tf.bitcast(tf.reduce_sum(tf.constant(v)), tf.int32)) for v in x]
        return np.stack(
            [draw(v.shape, [k + kwargs["seed"], 0], **extra).numpy() for v, k in zip(x, keys)]
        )

    if trainer_cls is TradesTrainer:
        start = x + 0.001 * noise(tf.random.stateless_normal)
        clean = tf.nn.softmax(network(x, training=False)).numpy()

        def ascent(v):
            return _input_gradient(network, v, lambda z: voxel_kl(clean, z))
    else:
        start = x + eps_t * noise(tf.random.stateless_uniform, minval=-1.0, maxval=1.0)

        def ascent(v):
            return _input_gradient(network, v, lambda z: soft_dice_loss(tf.constant(y), z))

    steps = 1 if trainer_cls is FastTrainer else kwargs["steps"]
    alpha = 1.25 * kwargs["eps"] if trainer_cls is FastTrainer else 2.5 * kwargs["eps"] / steps
    x_k = np.clip(start, x - eps_t, x + eps_t)
    for _ in range(steps):
        x_k = np.clip(
            x_k + alpha * span(x).reshape(-1, 1, 1, 1, 1) * np.sign(ascent(x_k)),
            x - eps_t,
            x + eps_t,
        )
    with tf.GradientTape() as tape:
        if trainer_cls is TradesTrainer:
            z = network(x, training=True)
            loss = loss_fn(y, z) + kwargs["beta"] * tf.reduce_mean(
                voxel_kl(tf.nn.softmax(z), network(x_k, training=True))
            )
        else:
            beta = kwargs["beta"]
            loss = (1 - beta) * loss_fn(y, network(x_k, training=True))
            if beta:
                loss += beta * loss_fn(y, network(x, training=True))
    grads = tape.gradient(loss, network.trainable_weights)
    return [np.asarray(w) - lr * np.asarray(g) for w, g in zip(network.trainable_weights, grads)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "trainer_cls, kwargs",
    [
        (PGDTrainer, {"eps": 0.05, "steps": 2, "beta": 0.5, "seed": 3}),
        (FastTrainer, {"eps": 0.05, "beta": 0.0, "seed": 4}),
        (TradesTrainer, {"eps": 0.05, "steps": 2, "beta": 6.0, "seed": 5}),
    ],
    ids=["pgd", "fast", "trades"],
)
def test_robust_trainers_match_a_hand_written_step(batch, trainer_cls, kwargs):
    x, y = batch
    trainer = trainer_cls(tiny_network(), **kwargs)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    before = [np.asarray(w) for w in trainer.network.trainable_weights]
    trainer.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    after = [np.asarray(w) for w in trainer.network.trainable_weights]
    expected = _reference_step(trainer_cls, kwargs, x, y)
    assert max(float(np.abs(a - b).max()) for a, b in zip(after, before)) > 1e-4  # it moved
    for got, want in zip(after, expected):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
