"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advseg.attacks import (all_label_target, fgsm, fgsm_sweep, ifgsm, ifgsm_trajectory, pgd,
                                  targeted_ifgsm)
from keras_advseg.attacks.core import compiled, per_sample_scale
from keras_advseg.losses import soft_dice_loss
from keras_advseg.metrics import brats_dice, predict_labels
from keras_advseg.models import SliceWise, unet2d, unet3d

TOL = 1e-6  # float32 rounding of x + eps * sign


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return unet3d((16, 16, 16, 4), base_filters=2, depth=3)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 4)).astype("float32")
    x[1] *= 3.0  # a second sample with another intensity scale
    y = tf.one_hot(rng.integers(0, 4, size=(2, 16, 16, 16)), 4).numpy()
    return x, y


def linf(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).max(axis=1)


def span(x):
    """Each sample's intensity range, the unit of relative budgets."""
    flat = np.asarray(x).reshape(len(x), -1)
    return flat.max(axis=1) - flat.min(axis=1)


def test_relative_budget_is_a_fraction_of_the_intensity_range(batch):
    x, _ = batch
    scale = per_sample_scale(tf.constant(x), 0.05, relative=True).numpy().reshape(-1)
    np.testing.assert_allclose(scale, 0.05 * span(x), rtol=1e-6)
    # a shift of the intensities (another normalisation) leaves the budget unchanged
    shifted = per_sample_scale(tf.constant(x + 7.0), 0.05, relative=True).numpy().reshape(-1)
    np.testing.assert_allclose(shifted, scale, rtol=1e-5)
    assert per_sample_scale(tf.constant(x), 0.05, relative=False).numpy().reshape(-1).tolist() == \
        pytest.approx([0.05, 0.05])


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "targeted", "pgd"])
def test_linf_bound_relative_and_absolute(tiny, batch, attack):
    x, y = batch
    fn = {"fgsm": fgsm, "ifgsm": ifgsm, "targeted": targeted_ifgsm, "pgd": pgd}[attack]
    unit = span(x)
    rel = fn(tiny, x, y, eps=0.05)
    assert np.all(linf(rel, x) <= 0.05 * unit * (1 + TOL))
    assert np.all(linf(rel, x) > 0.01 * unit)
    absolute = fn(tiny, x, y, eps=0.1, relative=False)
    assert np.all(linf(absolute, x) <= 0.1 + TOL)


@pytest.mark.parametrize("attack", [fgsm, ifgsm, pgd])
def test_clip_and_eps_zero(tiny, batch, attack):
    x, y = batch
    clipped = attack(tiny, x, y, eps=0.2, clip=(-1.0, 1.0)).numpy()
    assert clipped.min() >= -1.0 and clipped.max() <= 1.0
    np.testing.assert_array_equal(attack(tiny, x, y, eps=0.0), x)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -0.1}, r"eps must be >= 0. Received: eps=-0.1"),
    ({"eps": 0.1, "steps": 0}, r"steps must be >= 1. Received: steps=0"),
    ({"eps": 0.1, "clip": (1.0, 0.0)}, r"lo <= hi. Received: clip=\(1.0, 0.0\)"),
    ({"eps": 0.1, "loss": "l2"}, r"loss must be one of"),
    ({"eps": 0.1, "temperature": 0}, r"temperature must be positive"),
])
def test_validation(tiny, batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ifgsm(tiny, *batch, **kwargs)


def test_fgsm_equals_hand_computed(tiny, batch):
    x, y = batch
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(soft_dice_loss(y, tiny(xt, training=False)))
    grad = tape.gradient(loss, xt).numpy()
    scale = 0.05 * span(x).reshape(2, 1, 1, 1, 1)
    np.testing.assert_allclose(fgsm(tiny, x, y, eps=0.05), x + scale * np.sign(grad), atol=1e-6)


def test_each_ifgsm_step_is_fgsm_then_projection(tiny, batch):
    x, y = batch
    eps, steps = 0.04, 3
    alpha = eps / steps
    unit = span(x).reshape(2, 1, 1, 1, 1)
    x_k = x
    for _ in range(steps):
        step = fgsm(tiny, x_k, y, eps=1.0, relative=False).numpy() - x_k  # sign(grad) at x_k
        x_k = np.clip(x_k + alpha * unit * step, x - eps * unit, x + eps * unit)
    got = ifgsm(tiny, x, y, eps=eps, steps=steps).numpy()
    # a gradient component within rounding of 0 may take the other sign in another graph
    assert np.mean(np.abs(got - x_k) > 1e-5) < 1e-3


def test_sweep_equals_separate_fgsm_runs(tiny, batch):
    x, y = batch
    grid = [0.0, 0.01, 0.05]
    for eps, x_adv, logits in fgsm_sweep(tiny, x, y, grid):
        np.testing.assert_array_equal(x_adv, fgsm(tiny, x, y, eps=eps))
        np.testing.assert_allclose(logits, tiny(x_adv, training=False), atol=1e-4)


def test_trajectory_equals_separate_ifgsm_runs(tiny, batch):
    x, y = batch
    eps, steps = 0.05, 4
    alpha = eps / steps
    trajectory = ifgsm_trajectory(tiny, x, y, eps=eps, steps=steps, keep_inputs=True)
    assert trajectory.labels.shape == (steps, 2, 16, 16, 16) and trajectory.losses.shape == (steps, 2)
    for k in range(1, steps + 1):
        separate = ifgsm(tiny, x, y, eps=eps, steps=k, alpha=alpha)
        np.testing.assert_allclose(trajectory.inputs[k - 1], separate, atol=1e-5)
        np.testing.assert_array_equal(trajectory.labels[k - 1], predict_labels(tiny, separate))
    np.testing.assert_allclose(trajectory.x_adv, ifgsm(tiny, x, y, eps=eps, steps=steps), atol=1e-5)


def test_pgd_seed_and_best_restart(tiny, batch):
    x, y = batch
    a = pgd(tiny, x, y, eps=0.05, steps=2, seed=1)
    b = pgd(tiny, x, y, eps=0.05, steps=2, seed=2)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, pgd(tiny, x, y, eps=0.05, steps=2, seed=1))
    singles = [pgd(tiny, x, y, eps=0.05, steps=2, seed=5, restarts=1) for _ in range(1)]
    best = pgd(tiny, x, y, eps=0.05, steps=2, seed=5, restarts=3)
    loss = lambda z: soft_dice_loss(y, tiny(z, training=False)).numpy()
    # restart 0 of the 3-restart run is the single run; the kept one is at least as strong per sample
    assert np.all(loss(best) >= loss(singles[0]) - 1e-6)
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        pgd(tiny, x, y, eps=0.05, restarts=0)


def test_no_retracing_across_parameter_values(batch):
    model = unet3d((16, 16, 16, 4), base_filters=2, depth=3)
    x, y = batch
    ifgsm(model, x, y, eps=0.05, steps=2)
    fgsm(model, x, y, eps=0.05)
    fns = compiled(model)
    count = fns.tracing_count()
    for eps, steps in ((0.02, 3), (0.07, 5)):
        ifgsm(model, x, y, eps=eps, steps=steps)
        fgsm(model, x, y, eps=eps)
    assert fns.tracing_count() == count


def test_slicewise_2d_model_attacked_at_volume_level(batch):
    x, y = batch
    model = SliceWise(unet2d((16, 16, 4), base_filters=2, depth=3))
    adv = ifgsm(model, x, y, eps=0.05, steps=2)
    assert adv.shape == x.shape
    assert np.all(linf(adv, x) <= 0.05 * span(x) * (1 + TOL))
    assert np.all(linf(adv, x) > 0)


@pytest.fixture(scope="module")
def trained(prepared_dir):
    """A small 3-D UNet trained for 150 steps on the 16^3 phantom (cross-entropy learns fastest)."""
    from keras_advseg.data.pipeline import volume_dataset
    from keras_advseg.data.prepare import load_prepared

    keras.utils.set_random_seed(1)
    prepared = load_prepared(prepared_dir)
    model = unet3d((16, 16, 16, 4), base_filters=8, depth=3, dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(volume_dataset(prepared, "train", batch_size=2, seed=0).repeat(), steps_per_epoch=150, epochs=1,
              verbose=0)
    images, labels = zip(*(prepared.load(i) for i in prepared.ids("train") + prepared.ids("test")))
    x = np.stack(images)
    from keras_advseg.data.pipeline import one_hot_labels

    return model, x, one_hot_labels(np.stack(labels)).numpy(), np.stack(labels)


def whole_tumour_dice(model, x, labels):
    return brats_dice(labels, predict_labels(model, x))["wt"].mean()


def test_attacks_on_trained_model(trained):
    model, x, y, labels = trained
    clean = whole_tumour_dice(model, x, labels)
    assert clean > 0.4, "the small model should have learnt something"
    after_fgsm = whole_tumour_dice(model, fgsm(model, x, y, eps=0.05), labels)
    after_ifgsm = whole_tumour_dice(model, ifgsm(model, x, y, eps=0.05, steps=5), labels)
    assert after_fgsm < clean - 0.05
    assert after_ifgsm <= after_fgsm + 1e-9
    target = all_label_target(y)
    target_dice = lambda z: brats_dice(np.ones_like(labels), predict_labels(model, z))["tc"].mean()
    assert target_dice(targeted_ifgsm(model, x, target, eps=0.05, steps=5)) > target_dice(x)
