"""The cache of a distillation teacher's soft labels: ``OUT/soft_labels/<id>.npy``."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from keras_advseg.defenses.distillation import soft_labels
from keras_advseg.io import atomic_path


def write_soft_labels(
    teacher: keras.Model, prepared, ids: list[str], out: str | Path, temperature: float
) -> Path:
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
        with atomic_path(out / f"{subject_id}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, soft_labels(teacher, image, temperature))
    return out
