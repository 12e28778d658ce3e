"""Defensive distillation's soft labels (eq. 4, 7; Papernot et al. 2016).

The paper's procedure: train a teacher F at temperature T; F predicts every
training volume once; its ``softmax(z / T)`` replaces the one-hot labels; the
student F^d (same architecture) trains on them at the same T with the soft
Dice loss (eq. 7) and is deployed at T = 1. The training workflow caches the
soft labels once (``keras_advseg.training.soft_labels``) and augments them
jointly with each image, exactly like one-hot labels, so a student step costs
what a clean step costs (no teacher forward pass per step; see
``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_advseg.metrics import logits_to_probabilities


def soft_labels(teacher: keras.Model, image: np.ndarray, temperature: float) -> np.ndarray:
    """The teacher's ``softmax(z / T)`` for one volume (eq. 4).

    Args:
        teacher: Trained network returning logits on volumes (wrap 2-D models in SliceWise).
        image: One volume ``(X, Y, Z, 4)``.
        temperature: Distillation temperature T.

    Returns:
        float32 ``(X, Y, Z, 4)`` probabilities.

    Raises:
        ValueError: ``temperature <= 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive. Received: temperature={temperature}")
    probabilities = logits_to_probabilities(teacher(image[None], training=False), temperature)
    return keras.ops.convert_to_numpy(probabilities)[0].astype(np.float32)
