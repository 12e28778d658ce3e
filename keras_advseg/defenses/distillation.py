"""Defensive distillation's soft labels (eq. 4, 7; Papernot et al. 2016).

The paper's procedure: train a teacher F at temperature T; F predicts every
training volume once; its ``softmax(z / T)`` replaces the one-hot labels; the
student F^d (same architecture) trains on them at the same T with the soft
Dice loss (eq. 7) and is deployed at T = 1. The augmentation is then applied
jointly to each image and its cached soft labels, exactly like to one-hot
labels, so a student step costs what a clean step costs (no teacher forward
pass per step; see ``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from keras_advseg.metrics import logits_to_probabilities


def write_soft_labels(teacher: keras.Model, prepared, ids: list[str], out: str | Path, temperature: float) -> Path:
    """Saves ``softmax(teacher(x) / T)`` of each subject as ``out/<id>.npy`` (float32, (X, Y, Z, 4)).

    Args:
        teacher: Trained network returning logits on volumes (wrap 2-D models in SliceWise).
        prepared: The prepared dataset the ids belong to.
        ids: Subjects to label.
        out: Folder (created); files are written atomically.
        temperature: Distillation temperature T (eq. 4).

    Returns:
        ``out``.

    Raises:
        ValueError: ``temperature <= 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive. Received: temperature={temperature}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for subject_id in ids:
        image, _ = prepared.load(subject_id)
        probabilities = logits_to_probabilities(teacher(image[None], training=False), temperature)
        final = out / f"{subject_id}.npy"
        tmp = out / f".{subject_id}.npy.partial"
        with open(tmp, "wb") as handle:
            np.save(handle, keras.ops.convert_to_numpy(probabilities)[0].astype(np.float32))
        os.replace(tmp, final)
    return out
