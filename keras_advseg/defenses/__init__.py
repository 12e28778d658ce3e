"""Defenses: adversarial training (eq. 8-9), defensive distillation (eq. 4, 7), noise augmentation."""

from keras_advseg.defenses.distillation import write_soft_labels
from keras_advseg.defenses.trainers import AdversarialTrainer, NoiseTrainer, SegmentationTrainer

DEFENSES = ("none", "adversarial", "distillation", "noise")

__all__ = ["DEFENSES", "AdversarialTrainer", "NoiseTrainer", "SegmentationTrainer", "write_soft_labels"]
