"""Adversarial attacks on segmentation models, as pure functions (eq. 1-3, PGD and beyond).

Every attack takes a Keras model returning logits, inputs ``x`` of shape
``(B, X, Y, Z, C)`` and one-hot labels (or a target) ``(B, X, Y, Z, 4)``, and returns the
adversarial input. ``eps`` is relative to each sample's intensity range (max - min) by
default: the paper's "5% of the maximum pixel magnitude" of inputs normalised to [0, 1].

Every attack is registered by name in :data:`ATTACKS` and runs by name through
:func:`run_attack`; the losses an attack's ``loss=`` accepts are :data:`ATTACK_LOSSES`.

One module per attack family: ``fast_gradient`` (FGSM and its sweep), ``iterative``
(i-FGSM, targeted i-FGSM, the trajectory), ``projected_gradient`` (PGD), ``auto_pgd``
(APGD), ``segmentation`` (SegPGD, CosPGD), ``gradient_free`` (random search), ``ensemble``
(the per-subject worst case, ``min_eps``); ``core`` holds what they share and ``losses``
their losses. Names are imported on first use, so that the registry (and the CLI) can be
read without starting TensorFlow.
"""

from __future__ import annotations

from keras_advseg._lazy import lazy_exports

_EXPORTS = {
    "ATTACKS": "registry",
    "ATTACK_LOSSES": "registry",
    "DEFAULT_ENSEMBLE": "registry",
    "run_attack": "registry",
    "fgsm": "fast_gradient",
    "fgsm_step": "fast_gradient",
    "fgsm_sweep": "fast_gradient",
    "ifgsm": "iterative",
    "targeted_ifgsm": "iterative",
    "ifgsm_trajectory": "iterative",
    "all_label_target": "iterative",
    "Trajectory": "iterative",
    "pgd": "projected_gradient",
    "apgd": "auto_pgd",
    "apgd_loop": "auto_pgd",
    "segpgd": "segmentation",
    "cospgd": "segmentation",
    "random_search": "gradient_free",
    "worst_case": "ensemble",
    "min_eps": "ensemble",
    "attack_loss": "losses",
    "check_inputs": "core",
    "logits_function": "core",
    "mean_region_dice": "core",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
