"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import numpy as np
from support import span

from keras_advseg.attacks import fgsm, ifgsm, ifgsm_trajectory
from keras_advseg.metrics import predict_labels

TOL = 1e-6  # float32 rounding of x + eps * sign


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


def test_trajectory_equals_separate_ifgsm_runs(tiny, batch):
    x, y = batch
    eps, steps = 0.05, 4
    alpha = eps / steps
    trajectory = ifgsm_trajectory(tiny, x, y, eps=eps, steps=steps, keep_inputs=True)
    assert trajectory.labels.shape == (steps, 2, 16, 16, 16) and trajectory.losses.shape == (
        steps,
        2,
    )
    for k in range(1, steps + 1):
        separate = ifgsm(tiny, x, y, eps=eps, steps=k, alpha=alpha)
        np.testing.assert_allclose(trajectory.inputs[k - 1], separate, atol=1e-5)
        np.testing.assert_array_equal(trajectory.labels[k - 1], predict_labels(tiny, separate))
    np.testing.assert_allclose(trajectory.x_adv, ifgsm(tiny, x, y, eps=eps, steps=steps), atol=1e-5)
