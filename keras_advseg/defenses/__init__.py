"""Defenses: adversarial training (eq. 8-9: FGSM, PGD, fast, TRADES), distillation, uniform and
Gaussian noise."""

from keras_advseg.defenses.distillation import soft_labels
from keras_advseg.defenses.trainers import (
    AdversarialTrainer,
    FastTrainer,
    GaussianNoiseTrainer,
    NoiseTrainer,
    PGDTrainer,
    SegmentationTrainer,
    TradesTrainer,
)

__all__ = [
    "AdversarialTrainer",
    "FastTrainer",
    "GaussianNoiseTrainer",
    "PGDTrainer",
    "TradesTrainer",
    "NoiseTrainer",
    "SegmentationTrainer",
    "soft_labels",
]
