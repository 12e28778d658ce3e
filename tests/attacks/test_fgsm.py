"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from support import span

from keras_advseg.attacks import fgsm, fgsm_sweep
from keras_advseg.losses import soft_dice_loss

TOL = 1e-6  # float32 rounding of x + eps * sign


def test_fgsm_equals_hand_computed(tiny, batch):
    x, y = batch
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(soft_dice_loss(y, tiny(xt, training=False)))
    grad = tape.gradient(loss, xt).numpy()
    scale = 0.05 * span(x).reshape(2, 1, 1, 1, 1)
    np.testing.assert_allclose(fgsm(tiny, x, y, eps=0.05), x + scale * np.sign(grad), atol=1e-6)


def test_sweep_equals_separate_fgsm_runs(tiny, batch):
    x, y = batch
    grid = [0.0, 0.01, 0.05]
    for eps, x_adv, logits in fgsm_sweep(tiny, x, y, grid):
        np.testing.assert_array_equal(x_adv, fgsm(tiny, x, y, eps=eps))
        np.testing.assert_allclose(logits, tiny(x_adv, training=False), atol=1e-4)
