"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import numpy as np
import pytest

from keras_advseg.attacks import pgd
from keras_advseg.losses import soft_dice_loss

TOL = 1e-6  # float32 rounding of x + eps * sign


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
