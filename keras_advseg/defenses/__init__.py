"""Defenses: adversarial training (eq. 8-9: FGSM, PGD, fast, TRADES), distillation, uniform and
Gaussian noise.

The names are imported on first use: the trainers start TensorFlow.
"""

from __future__ import annotations

from keras_advseg._lazy import by_module, lazy_exports

_EXPORTS = by_module(
    {
        "trainers": (
            "AdversarialTrainer",
            "FastTrainer",
            "GaussianNoiseTrainer",
            "PGDTrainer",
            "TradesTrainer",
            "NoiseTrainer",
            "SegmentationTrainer",
        ),
        "distillation": ("soft_labels",),
    }
)

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
