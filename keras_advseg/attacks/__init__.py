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

from keras_advseg._lazy import by_module, lazy_exports

_EXPORTS = by_module(
    {
        "registry": ("ATTACKS", "ATTACK_LOSSES", "DEFAULT_ENSEMBLE", "run_attack"),
        "fast_gradient": ("fgsm", "fgsm_step", "fgsm_sweep"),
        "iterative": (
            "ifgsm",
            "targeted_ifgsm",
            "ifgsm_trajectory",
            "all_label_target",
            "Trajectory",
        ),
        "projected_gradient": ("pgd",),
        "auto_pgd": ("apgd", "apgd_loop"),
        "segmentation": ("segpgd", "cospgd"),
        "gradient_free": ("random_search",),
        "ensemble": ("worst_case", "min_eps"),
        "losses": ("attack_loss",),
        "core": ("check_inputs", "logits_function", "mean_region_dice"),
    }
)

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
