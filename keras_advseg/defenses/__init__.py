"""Defenses: adversarial training (eq. 8-9), defensive distillation (eq. 4, 7), noise augmentation."""

from keras_advseg.defenses.distillation import soft_labels
from keras_advseg.defenses.trainers import AdversarialTrainer, NoiseTrainer, SegmentationTrainer

__all__ = ["AdversarialTrainer", "NoiseTrainer", "SegmentationTrainer", "soft_labels"]
