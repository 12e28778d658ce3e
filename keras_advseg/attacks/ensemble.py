"""The per-sample worst case over a diverse set of attacks (Croce, Singh & Hein 2024, "SEA")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import (
    check_arguments,
    check_inputs,
    logits_function,
    mean_region_dice,
)
from keras_advseg.attacks.registry import DEFAULT_ENSEMBLE, canonical_attacks, run_attack


def worst_case(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 10,
    attacks: Sequence[str] = DEFAULT_ENSEMBLE,
    reduced_eps: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    stop_dice: float | None = 0.0,
    info: dict | None = None,
):
    """Per sample, the adversarial input with the lowest mean Dice (WT, TC, ET) over an ensemble.

    Args:
        model, x, y, temperature: as :func:`~keras_advseg.attacks.fast_gradient.fgsm`.
        eps: Budget.
        steps: Iterations of each attack.
        attacks: Attacks registered with ``ensemble=True``
            (:data:`~keras_advseg.attacks.registry.ATTACKS`).
        reduced_eps: SEA's schedule for APGD: a third of the steps each at 2 eps, 1.5 eps and eps,
            each stage starting from the previous one's result projected onto the smaller ball.
        seed: Random starts.
        stop_dice: Early stopping per sample: APGD stops a sample once its mean Dice reaches
            this (:func:`~keras_advseg.attacks.auto_pgd.apgd`), and a sample the ensemble has
            already brought to it is left out of the remaining attacks. None: never.
        info: A dict that receives ``gradients`` (input gradients over all samples and
            attacks) and ``per_attack``.

    Returns:
        ``(x_adv, found_by)``: the adversarial batch and, per sample, the attack that found it
        (``"none"`` when no attack lowered the clean Dice).

    Raises:
        ValueError: invalid arguments or an unknown attack.
    """
    check_arguments(eps=eps, steps=steps, temperature=temperature)
    if not attacks:
        raise ValueError("attacks must name at least one attack. Received: attacks=()")
    attacks = canonical_attacks(attacks, ensemble=True)
    x, y = check_inputs(x, y)
    best = x
    best_dice = mean_region_dice(y, logits_function(model)(x)).numpy()
    found_by = np.array(["none"] * len(best_dice), dtype=object)
    gradients = {}
    for name in attacks:
        # early stopping across the ensemble: a sample already at stop_dice is done
        active = np.flatnonzero(best_dice > stop_dice) if stop_dice is not None else None
        if active is not None and not len(active):
            break
        xs, ys = (x, y) if active is None else (tf.gather(x, active), tf.gather(y, active))
        kwargs = dict(seed=seed, temperature=temperature, stop_dice=stop_dice)
        counted, x_adv = {}, None
        if reduced_eps and name.startswith("apgd-"):
            stage = max(steps // 3, 1)
            for factor in (2.0, 1.5, 1.0):  # each stage starts where the last ended
                stage_info = {}
                x_adv = run_attack(
                    name,
                    model,
                    xs,
                    ys,
                    eps=eps * factor,
                    steps=stage,
                    start=x_adv,
                    info=stage_info,
                    **kwargs,
                )
                counted["gradients"] = counted.get("gradients", 0) + stage_info["gradients"]
        else:
            x_adv = run_attack(name, model, xs, ys, eps=eps, steps=steps, info=counted, **kwargs)
        gradients[name] = counted["gradients"]
        dice = mean_region_dice(ys, logits_function(model)(x_adv)).numpy()
        where = np.arange(len(best_dice)) if active is None else active
        lower = dice < best_dice[where]
        chosen = where[lower]
        if len(chosen):
            best = tf.tensor_scatter_nd_update(
                best, chosen[:, None], tf.gather(x_adv, np.flatnonzero(lower))
            )
            best_dice[chosen] = dice[lower]
            found_by[chosen] = name
    if info is not None:
        info.update(gradients=sum(gradients.values()), per_attack=gradients)
    return best, [str(v) for v in found_by]


def min_eps(
    model,
    x,
    y,
    *,
    dice_below: float = 0.1,
    eps_max: float = 0.5,
    attack: str = "apgd-masked-ce",
    steps: int = 10,
    iterations: int = 8,
    seed: int = 0,
    temperature: float = 1.0,
):
    """Per sample, the smallest budget at which a fixed attack drives mean Dice below ``dice_below``.

    Bisection on ``[0, eps_max]`` (``iterations`` halvings): a distribution of eps* per model
    instead of one point (the minimum-norm view).

    Returns:
        ``(upper, lower)`` arrays ``(B,)``: the attack reaches the threshold at ``upper`` and did
        not at ``lower`` (``upper`` is ``inf`` where even ``eps_max`` is not enough).

    Raises:
        ValueError: invalid arguments.
    """
    if not 0 < eps_max <= 1 or iterations < 1:
        raise ValueError(
            f"eps_max must be in (0, 1] and iterations >= 1. Received: {eps_max}, {iterations}"
        )
    x, y = check_inputs(x, y)
    batch = int(x.shape[0])
    lower, upper = np.zeros(batch), np.full(batch, eps_max)

    def reaches(eps_values):
        result = np.zeros(batch, bool)
        for i in range(batch):
            x_adv = run_attack(
                attack,
                model,
                x[i : i + 1],
                y[i : i + 1],
                eps=float(eps_values[i]),
                steps=steps,
                seed=seed,
                temperature=temperature,
                stop_dice=dice_below,
            )
            result[i] = (
                mean_region_dice(y[i : i + 1], logits_function(model)(x_adv)).numpy()[0]
                < dice_below
            )
        return result

    possible = reaches(upper)
    for _ in range(iterations):
        middle = (lower + upper) / 2
        ok = reaches(middle)
        upper = np.where(possible & ok, middle, upper)
        lower = np.where(possible & ~ok, middle, lower)
    return np.where(possible, upper, np.inf), lower


def run_worst_case(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int,
    seed: int = 0,
    temperature: float = 1.0,
    stop_dice: float | None = 0.0,
    attacks=DEFAULT_ENSEMBLE,
    info: dict | None = None,
    **_,
):
    """The registry's runner of ``worst``: :func:`worst_case`'s adversarial batch."""
    x_adv, _ = worst_case(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        attacks=attacks,
        seed=seed,
        temperature=temperature,
        stop_dice=stop_dice,
        info=info,
    )
    return x_adv
