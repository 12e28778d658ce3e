"""A gradient-free attack: random search over voxel blocks (Square attack, Andriushchenko et al. 2020).

It uses the model's predictions only, never a gradient, so it is the gradient-masking audit's
reference: a model whose gradients hide its weakness falls to it while gradient attacks fail.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import (
    check_arguments,
    check_inputs,
    logits_function,
    mean_region_dice,
    per_sample_scale,
)

_HALVINGS = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
"""Fractions of the queries after which the block's volume halves (Square attack's schedule)."""


def random_search(
    model,
    x,
    y,
    *,
    eps: float,
    queries: int = 100,
    p_init: float = 0.1,
    seed: int = 0,
    relative: bool = True,
) -> tf.Tensor:
    """Square-attack-style random search on the L-inf sphere, minimising mean Dice (WT, TC, ET).

    Starts from ``x + eps * s`` with ``s = ±1`` constant along the last spatial axis per
    stripe (Square's initialisation), then repeatedly redraws the sign of every channel
    inside one random cube and keeps the change when a sample's mean Dice falls (on ties,
    when its cross-entropy rises). The cube's volume starts at ``p_init`` of the volume and
    halves on Square's schedule. One forward pass per query; no gradients.

    Args:
        model, x, y, relative: as :func:`~keras_advseg.attacks.fast_gradient.fgsm` (``model``
            may also be any callable ``(x, training=False) -> logits``: a black box).
        eps: Budget of the L-inf ball.
        queries: Forward passes after the initial one.
        p_init: Initial fraction of the voxels a cube covers.
        seed: Seed of the positions and signs.

    Returns:
        The adversarial batch; every sample keeps its best point.

    Raises:
        ValueError: invalid arguments.
    """
    check_arguments(eps=eps)
    if queries < 0 or not 0 < p_init <= 1:
        raise ValueError(
            f"queries must be >= 0 and p_init in (0, 1]. Received: {queries}, {p_init}"
        )
    x, y = check_inputs(x, y)
    if eps == 0:
        return x
    rng = np.random.default_rng(seed)
    eps_t = per_sample_scale(x, eps, relative).numpy()
    spatial, channels = tuple(x.shape[1:-1]), int(x.shape[-1])
    batch = int(x.shape[0])
    stripes = rng.choice([-1.0, 1.0], size=(batch, *spatial[:-1], 1, channels))
    sign = np.broadcast_to(stripes, (batch, *spatial, channels)).astype("float32").copy()

    # a Keras model runs as its traced forward pass, shared with the attacks; any other
    # callable (a black box) as it is
    forward = logits_function(model) if isinstance(model, keras.Model) else model

    def score(s):
        logits = forward(x + eps_t * s, training=False)
        dice = mean_region_dice(y, logits).numpy()
        ce = tf.reduce_mean(
            tf.reshape(tf.nn.softmax_cross_entropy_with_logits(y, logits), [batch, -1]), 1
        ).numpy()
        return dice, ce

    best_dice, best_ce = score(sign)
    volume = int(np.prod(spatial))
    for query in range(queries):
        fraction = p_init * 0.5 ** sum(query >= f * queries for f in _HALVINGS)
        side = [max(1, min(n, round((fraction * volume) ** (1 / len(spatial))))) for n in spatial]
        candidate = sign.copy()
        for i in range(batch):
            corner = [rng.integers(0, n - s + 1) for n, s in zip(spatial, side)]
            block = tuple(slice(c, c + s) for c, s in zip(corner, side))
            candidate[(i, *block)] = rng.choice([-1.0, 1.0], size=channels)
        dice, ce = score(candidate)
        better = (dice < best_dice) | ((dice == best_dice) & (ce > best_ce))
        sign[better] = candidate[better]
        best_dice = np.where(better, dice, best_dice)
        best_ce = np.where(better, ce, best_ce)
    return x + tf.constant(eps_t * sign)


def run_random_search(model, x, y, *, eps: float, steps: int, seed: int = 0, **_):
    """The registry's runner of ``random-search``: ``10 * steps`` queries, so that it spends
    about the forward passes of ``steps`` gradients, ten times over."""
    return random_search(model, x, y, eps=eps, queries=10 * steps, seed=seed)
