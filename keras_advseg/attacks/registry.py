"""The attack and attack-loss registries: every attack's one name, and how to run it by name.

Each attack module defines its functions (``fgsm``, ``apgd``, ...) and one *runner* with
the family's common signature::

    runner(model, x, y, *, eps, steps, seed, temperature, restarts, stop_dice, start, info,
           **entry.defaults) -> x_adv

which takes what it needs and ignores the rest. The entry below names the runner, so
:func:`run_attack` runs any attack by name, and the CLI, ``EvalConfig``, the worst-case
ensemble, the audit and the reports offer exactly what is registered here. To add an
attack: write its module (with tests), then one ``ATTACKS.register(...)`` call, here or in
your own code before the CLI is built (see CONTRIBUTING.md).

This module imports no TensorFlow.
"""

from __future__ import annotations

import inspect

from keras_advseg.errors import InputError
from keras_advseg.registry import Registry

ATTACKS = Registry("attack")
"""Every attack of ``advseg evaluate --attacks``, the ensemble and the audit, by name."""

ATTACK_LOSSES = Registry("attack loss")
"""The per-sample losses an attack's ``loss=`` accepts (``fgsm``, ``ifgsm``, ``pgd``, ``apgd``)."""

_M = "keras_advseg.attacks."

for _name, _display, _description in (
    ("dice", "soft Dice", "1 - soft Dice of softmax(z / T) (the paper's eq. 5-7)"),
    ("ce", "CE", "mean voxel cross-entropy of softmax(z / T)"),
    ("masked-ce", "masked CE", "CE over the voxels still classified correctly"),
    (
        "balanced-masked-ce",
        "balanced masked CE",
        "masked CE with each class weighted by 1 / its voxels (aims at Dice)",
    ),
    ("js", "JS", "Jensen-Shannon divergence of softmax and one-hot label"),
):
    ATTACK_LOSSES.register(
        _name,
        display=_display,
        target=f"{_M}losses:{_name.replace('-', '_')}_loss",
        description=_description,
        iterative=False,
    )

_ALL_LOSSES = ATTACK_LOSSES.names()

ATTACKS.register(
    "none",
    display="No attack",
    target=f"{_M}core:run_none",
    description="the clean input",
    iterative=False,
    gradients=False,
)
ATTACKS.register(
    "fgsm",
    display="FGSM",
    target=f"{_M}fast_gradient:run_fgsm",
    description="fast gradient sign method, one step (eq. 1)",
    losses=_ALL_LOSSES,
    iterative=False,
)
ATTACKS.register(
    "ifgsm",
    display="i-FGSM",
    target=f"{_M}iterative:run_ifgsm",
    description="iterative FGSM, steps of eps / steps from the clean input (eq. 2)",
    losses=_ALL_LOSSES,
)
ATTACKS.register(
    "targeted-ifgsm",
    display="targeted i-FGSM",
    target=f"{_M}iterative:run_targeted_ifgsm",
    description="i-FGSM descending the loss towards every voxel labelled 1 (eq. 3)",
    losses=_ALL_LOSSES,
    aliases=("tifgsm",),
)
ATTACKS.register(
    "pgd-dice",
    display="PGD (soft Dice)",
    target=f"{_M}projected_gradient:run_pgd",
    description="PGD on soft Dice from a random start, best of --restarts (Madry et al. 2018)",
    losses=_ALL_LOSSES,
    ensemble=True,
    aliases=("pgd",),
)
ATTACKS.register(
    "pgd-softened",
    display="PGD (soft Dice, softened logits)",
    target=f"{_M}softened:run_pgd_softened",
    description="PGD on soft Dice at the temperature that brings the median logit margin to 2: "
    "sees through saturated logits (the audit's item 6)",
    ensemble=True,
)
ATTACKS.register(
    "pgd-l2",
    display="PGD (l2, soft Dice)",
    target=f"{_M}projected_gradient:run_pgd",
    description="PGD in the l2 ball of radius eps x the intensity range: the threat model of a "
    "randomized-smoothing certificate (whose radius R is in standardised units: pass "
    "eps = R / (max - min) of the standardised input)",
    losses=_ALL_LOSSES,
    defaults={"norm": "l2"},
)
ATTACKS.register(
    "vafa",
    display="VAFA (DCT quantisation)",
    target=f"{_M}frequency:run_vafa",
    description="block-DCT quantisation tables learned to raise the loss (Hanif et al. 2023); "
    "outside the l-inf ball, eps does not apply",
    losses=_ALL_LOSSES,
)
ATTACKS.register(
    "segpgd",
    display="SegPGD",
    target=f"{_M}segmentation:run_segpgd",
    description="PGD on SegPGD's weighted CE (Gu et al. 2022)",
    ensemble=True,
)
ATTACKS.register(
    "cospgd",
    display="CosPGD",
    target=f"{_M}segmentation:run_cospgd",
    description="PGD on the cosine-weighted CE (Agnihotri et al. 2024)",
    ensemble=True,
)
for _loss, _aliases in (
    ("ce", ()),
    ("dice", ()),
    ("masked-ce", ()),
    ("balanced-masked-ce", ("apgd-balanced",)),
    ("js", ()),
):
    ATTACKS.register(
        f"apgd-{_loss}",
        display=f"APGD ({ATTACK_LOSSES.display(_loss)})",
        target=f"{_M}auto_pgd:run_apgd",
        description=f"Auto-PGD on {ATTACK_LOSSES.display(_loss)} (Croce & Hein 2020)",
        losses=(_loss,),
        defaults={"loss": _loss},
        ensemble=True,
        aliases=_aliases,
    )
ATTACKS.register(
    "random-search",
    display="random search (gradient-free)",
    target=f"{_M}gradient_free:run_random_search",
    description="Square-attack random search, 10 x steps forward passes, no gradients",
    gradients=False,
    ensemble=True,
)
ATTACKS.register(
    "worst",
    display="Worst case",
    target=f"{_M}ensemble:run_worst_case",
    description="per subject, the lowest Dice over the ensemble (and FGSM; SEA, Croce et al. 2024)",
)

DEFAULT_ENSEMBLE = (
    "apgd-masked-ce",
    "apgd-balanced-masked-ce",
    "apgd-js",
    "segpgd",
    "cospgd",
    "pgd-dice",
    "pgd-softened",
)
"""The worst-case ensemble: APGD with three segmentation losses, SegPGD, CosPGD, PGD on soft Dice
at temperature 1 and at softened logits (what the audit's item 6 would otherwise find)."""


def canonical_attacks(names, *, what: str = "attacks", ensemble: bool = False) -> tuple[str, ...]:
    """``names`` with deprecated spellings replaced (a DeprecationWarning each).

    Args:
        names: Attack names.
        what: The option or field, for the message.
        ensemble: Require members that may join the worst-case ensemble.

    Raises:
        InputError: an unknown name, or (``ensemble``) one that cannot join the ensemble.
    """
    result = []
    for name in names:
        if name not in ATTACKS:
            raise InputError(
                f"{what} must be among {', '.join(ATTACKS.names())}. Received: {name!r}"
            )
        current = ATTACKS.canonical(name)
        if ensemble and not ATTACKS.get(current).ensemble:
            raise InputError(
                f"{what} must be among {', '.join(ATTACKS.names(ensemble=True))}. "
                f"Received: {name!r}"
            )
        result.append(current)
    return tuple(result)


def run_attack(name: str, model, x, y, *, info: dict | None = None, **options):
    """Runs the attack ``name`` with the family's common options.

    Args:
        name: A registered attack (or a deprecated alias).
        model: Keras model returning logits.
        x: Inputs ``(B, X, Y, Z, C)``.
        y: One-hot labels ``(B, X, Y, Z, K)``.
        info: A dict that receives ``gradients``: the input gradients the attack took,
            summed over the batch's samples and over ``restarts`` where the runner takes
            them (0 for a gradient-free attack and at ``eps`` 0, where every attack returns
            its input; APGD counts its own, as early stopping and step-size restarts change
            it).
        **options: ``eps``, ``steps``, ``seed``, ``temperature``, ``restarts``,
            ``stop_dice``, ``start``; each runner takes what it uses. The entry's
            ``defaults`` fill in what is not given.

    Returns:
        The adversarial batch.

    Raises:
        InputError: unknown name.
        ValueError: invalid options (from the attack).
    """
    entry = ATTACKS.get(name)
    runner = entry.load()
    options = {**entry.defaults, **options}
    if info is not None:
        per_sample = options.get("steps", 1) if entry.iterative else 1
        if "restarts" in inspect.signature(runner).parameters:
            per_sample *= options.get("restarts", 1)
        taken = entry.gradients and options.get("eps") != 0
        info["gradients"] = per_sample * int(x.shape[0]) if taken else 0
    return runner(model, x, y, info=info, **options)
