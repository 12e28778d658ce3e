"""The gradient-free random search stays on the eps-sphere, never uses a gradient, and only improves."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from support import linf, span

from keras_advseg.attacks.core import mean_region_dice
from keras_advseg.attacks.gradient_free import random_search


def test_random_search_stays_on_the_sphere_and_keeps_its_best(tiny, batch):
    x, y = batch
    start = random_search(tiny, x, y, eps=0.05, queries=0, seed=3)
    x_adv = random_search(tiny, x, y, eps=0.05, queries=15, seed=3)
    # every voxel sits at +-eps (Square's L-inf vertices), scaled per sample by its range
    offsets = np.abs(np.asarray(x_adv) - x) / (0.05 * span(x)).reshape(-1, 1, 1, 1, 1)
    np.testing.assert_allclose(offsets, 1.0, rtol=1e-4)
    assert np.all(linf(x_adv, x) <= 0.05 * span(x) * (1 + 1e-6))
    # accepted only when Dice falls (or CE rises on a tie): never worse than the start
    assert np.all(
        mean_region_dice(y, tiny(x_adv)).numpy() <= mean_region_dice(y, tiny(start)).numpy()
    )
    again = random_search(tiny, x, y, eps=0.05, queries=15, seed=3)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(x_adv))


def test_random_search_needs_only_predictions(tiny, batch):
    x, y = batch
    calls = []

    def black_box(inputs, training=False):  # NumPy in between: no gradient can flow
        calls.append(1)
        return tf.constant(np.asarray(tiny(inputs, training=training)))

    x_adv = random_search(black_box, x, y, eps=0.02, queries=5)
    assert len(calls) == 1 + 5  # the start, then one forward pass per query
    assert x_adv.shape == x.shape
    np.testing.assert_array_equal(random_search(tiny, x, y, eps=0.0), x)
    with pytest.raises(ValueError, match="queries"):
        random_search(tiny, x, y, eps=0.02, queries=-1)
