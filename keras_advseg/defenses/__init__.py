"""Defenses: adversarial training (eq. 8-9: FGSM, PGD, fast, TRADES), distillation, noise."""

from keras_advseg.defenses.distillation import soft_labels
from keras_advseg.defenses.trainers import (
    AdversarialTrainer,
    FastTrainer,
    NoiseTrainer,
    PGDTrainer,
    SegmentationTrainer,
    TradesTrainer,
)

__all__ = [
    "AdversarialTrainer",
    "FastTrainer",
    "PGDTrainer",
    "TradesTrainer",
    "NoiseTrainer",
    "SegmentationTrainer",
    "soft_labels",
]
