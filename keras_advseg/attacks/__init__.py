"""Adversarial attacks on segmentation models, as pure functions (eq. 1-3, PGD).

Every attack takes a Keras model returning logits, inputs ``x`` and one-hot
labels (or a target), and returns the adversarial input. ``eps`` is relative
to each sample's intensity range (max - min) by default: the paper's "5% of
the maximum pixel magnitude" of inputs normalised to [0, 1].
"""

from keras_advseg.attacks.apgd import apgd
from keras_advseg.attacks.ensemble import DEFAULT_ENSEMBLE, min_eps, worst_case
from keras_advseg.attacks.fgsm import fgsm, fgsm_step, fgsm_sweep
from keras_advseg.attacks.ifgsm import (
    Trajectory,
    all_label_target,
    ifgsm,
    ifgsm_trajectory,
    targeted_ifgsm,
)
from keras_advseg.attacks.pgd import pgd
from keras_advseg.attacks.segmentation import cospgd, segpgd

__all__ = [
    "DEFAULT_ENSEMBLE",
    "apgd",
    "worst_case",
    "min_eps",
    "Trajectory",
    "all_label_target",
    "fgsm",
    "fgsm_step",
    "fgsm_sweep",
    "ifgsm",
    "ifgsm_trajectory",
    "pgd",
    "cospgd",
    "segpgd",
    "targeted_ifgsm",
]
