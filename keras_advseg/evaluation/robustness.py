"""Robustness evaluation (the paper's "Measuring Robustness"): ``advseg evaluate``.

Per test subject: BraTS Dice (WT/TC/ET) clean and under each attack, and the
PSNR/SSIM/RMSE of the perturbed input against the clean one; FGSM sweeps over
eps from one gradient; i-FGSM curves over iterations from one trajectory. The clean
row also has the BraTS 2023 lesion-wise Dice and HD95 (:mod:`keras_advseg.lesionwise`).
"""

from __future__ import annotations

import functools

import numpy as np

from keras_advseg.attacks.core import labels_of, logits_function
from keras_advseg.attacks.ensemble import worst_case
from keras_advseg.attacks.fast_gradient import fgsm_sweep
from keras_advseg.attacks.iterative import all_label_target, ifgsm_trajectory
from keras_advseg.attacks.registry import run_attack
from keras_advseg.config import QUALITY_METRICS, REGIONS, EvalConfig
from keras_advseg.data.pipeline import one_hot_labels
from keras_advseg.errors import InputError
from keras_advseg.evaluation.results import Evaluation
from keras_advseg.lesionwise import LESION_METRICS, lesion_wise
from keras_advseg.metrics import (
    brats_dice,
    image_quality,
    logits_to_probabilities,
    predict_labels,
)


def evaluate(
    model,
    prepared,
    ids: list[str],
    config: EvalConfig,
    *,
    transfer_model=None,
    native=None,
    native_rows: str = "all",
    lesion_spacing=None,
    progress: bool | None = None,
) -> Evaluation:
    """Attacks ``model`` on every subject in ``ids`` and scores it.

    Args:
        model: Deployable model (volumes in, logits out).
        prepared: The prepared dataset.
        ids: Subjects with labels.
        config: What to run.
        transfer_model: Craft the attacks on this model instead (black-box
            transfer) and apply them to ``model``.
        native: ``native(subject_id)`` -> :class:`~keras_advseg.inference.NativeGrid`: also
            score every row in the scan's own space (the perturbation is made in model
            space, the prediction mapped back): columns ``native_dice_*`` and ``native_hd95_*``.
        native_rows: ``"all"``, or ``"clean"``: only the clean row (each native score resamples
            a prediction and measures HD95, about a third of a second at 32^3).
        lesion_spacing: Voxel size (mm) of the prepared grid for the clean row's lesion-wise
            scores (columns ``lesion_dice_*``, ``lesion_hd95_*``, in model space); None:
            :func:`lesion_spacing_of` ``prepared``, or 1 mm per voxel when that is unknown.
        progress: Show a progress bar (None: when on a terminal).

    Returns:
        An :class:`Evaluation`: one row per subject x attack x eps (the clean
        row has attack ``none`` and eps 0), the i-FGSM iteration curves, and
        the arrays of the first subject for the example figure.

    Raises:
        ValueError: a subject has no labels.
    """
    from tqdm.auto import tqdm

    source = transfer_model or model
    forward = logits_function(model)  # the attacks' own trace of the model
    if lesion_spacing is None:
        lesion_spacing = lesion_spacing_of(prepared) or (1.0, 1.0, 1.0)
    result = Evaluation()
    kwargs = dict(temperature=config.attack_temperature)
    for index, subject_id in enumerate(
        tqdm(
            ids, desc="evaluate", unit="subject", disable=None if progress is None else not progress
        )
    ):
        image, labels = prepared.load(subject_id)
        if labels is None:
            raise InputError(f"subject {subject_id} has no labels; evaluation needs them")
        x, y = image[None], one_hot_labels(labels[None]).numpy()

        grid = native(subject_id) if native is not None else None
        clean_grid, grid = grid, (grid if native_rows == "all" else None)
        score = functools.partial(_score, result.rows, forward, subject_id, image, labels, grid)
        clean = predict_labels(forward, x)[0]
        row = _score(
            result.rows, forward, subject_id, image, labels, clean_grid, "none", 0.0, x, 0, clean
        )
        row.update(_lesion_columns(labels, clean, lesion_spacing))  # the clean row only
        # The i-FGSM curves' last iterate is the i-FGSM (targeted i-FGSM) attack at eps[0]:
        # run the trajectories first and reuse it instead of attacking twice.
        finished = {}
        if config.iterations_sweep:
            eps = config.budgets_iterative[0]
            for attack, target, targeted in (
                ("ifgsm", y, False),
                ("targeted-ifgsm", all_label_target(y), True),
            ):
                trajectory = ifgsm_trajectory(
                    source,
                    x,
                    target,
                    eps=eps,
                    steps=config.steps,
                    targeted=targeted,
                    keep_inputs=True,
                    **kwargs,
                )
                for k in range(config.steps):
                    x_k = np.asarray(trajectory.inputs[k])
                    predicted = (
                        trajectory.labels[k][0]
                        if transfer_model is None
                        else predict_labels(forward, x_k)[0]
                    )
                    result.iterations.append(
                        {
                            "subject": subject_id,
                            "attack": attack,
                            "iteration": k + 1,
                            **_dice_columns(labels, predicted),
                            **image_quality(image, x_k[0]),
                        }
                    )
                finished[(attack, eps)] = (
                    trajectory.x_adv,
                    trajectory.labels[-1][0] if transfer_model is None else None,
                )
        adversarial_examples = {}
        tried = {}  # eps -> [(mean Dice, attack, x_adv)]: the worst case also weighs these
        # (those in config.worst_weighs, when given)
        # FGSM at every budget (the attack's and the sweep's) from ONE gradient: sign(grad) does not
        # depend on eps, and fgsm_sweep returns exactly what fgsm would.
        fgsm_eps = list(config.budgets_fgsm) if "fgsm" in config.attacks else []
        budgets = sorted(set(fgsm_eps) | set(config.eps_sweep))
        if budgets:
            for eps, x_adv, logits in fgsm_sweep(source, x, y, budgets, **kwargs):
                # without transfer, the sweep's own forward pass is the evaluated model's prediction
                predicted = np.asarray(labels_of(logits))[0] if transfer_model is None else None
                if eps in fgsm_eps:
                    row = score("fgsm", eps, x_adv, predicted=predicted)
                    tried.setdefault(eps, []).append((_mean_dice(row), "fgsm", x_adv))
                    if eps > 0:  # the example figure shows the largest budget
                        adversarial_examples["fgsm"] = (x_adv, eps)
                if eps in config.eps_sweep:
                    score("fgsm_sweep", eps, x_adv, predicted=predicted)
        for attack in sorted(config.attacks, key=lambda a: a == "worst"):  # the worst case last
            if attack in ("none", "fgsm"):
                continue
            broken = None  # with the eps curve: the input that took Dice to 0 at a smaller eps
            for eps in config.budgets_iterative:
                x_adv, predicted = finished.get((attack, eps), (None, None))
                found_by = None
                if x_adv is None and broken is not None:
                    x_adv, found_by = broken
                elif x_adv is None and attack == "worst":
                    x_adv, found = worst_case(
                        source,
                        x,
                        y,
                        eps=eps,
                        steps=config.worst_steps or config.steps,
                        attacks=config.ensemble,
                        seed=config.seed,
                        **kwargs,
                    )
                    found_by = found[0]
                    # per subject, the lowest Dice of every attack run at this budget
                    predicted = predict_labels(forward, x_adv)[0]  # scored below, once
                    ensemble = _mean_dice(_dice_columns(labels, predicted))
                    weighed = [
                        t
                        for t in tried.get(eps, [])
                        if config.worst_weighs is None or t[1] in config.worst_weighs
                    ]
                    other = min(weighed, key=lambda t: t[0], default=None)
                    if other is not None and other[0] < ensemble:
                        _, found_by, x_adv = other
                        predicted = None
                elif x_adv is None:  # FGSM came from the shared sweep gradient above
                    x_adv = run_attack(
                        attack,
                        source,
                        x,
                        y,
                        eps=eps,
                        steps=_steps(config, attack),
                        seed=config.seed,
                        restarts=config.restarts,
                        **({"setting": config.vafa_setting} if attack == "vafa" else {}),
                        **kwargs,
                    )
                row = score(attack, eps, x_adv, steps=_steps(config, attack), predicted=predicted)
                if found_by is not None:
                    row["found_by"] = found_by
                if attack != "worst":
                    tried.setdefault(eps, []).append((_mean_dice(row), attack, x_adv))
                if config.eps_curve and broken is None and _all_zero(row):
                    broken = (x_adv, found_by)
                adversarial_examples[attack] = (x_adv, eps)
        if index == 0:
            chosen = next(iter(adversarial_examples.items()), None)
            if chosen is not None:
                attack, (x_adv, eps) = chosen
                result.example = {
                    "subject": subject_id,
                    "image": image,
                    "labels": labels,
                    "attack": attack,
                    "eps": eps,
                    "adversarial": np.asarray(x_adv)[0],
                    "clean_prediction": predict_labels(forward, x)[0],
                    "adversarial_prediction": predict_labels(forward, x_adv)[0],
                }
    return result


def _score(
    rows, forward, subject_id, image, labels, grid, attack, eps, x_adv, steps=0, predicted=None
) -> dict:
    """Appends one row: Dice of ``predicted`` (default: the model on ``x_adv``) and input quality,
    and with a native ``grid``, Dice and HD95 of the prediction mapped back to the scan."""
    if predicted is None:
        predicted = predict_labels(forward, x_adv)[0]
    row = {
        "subject": subject_id,
        "attack": attack,
        "eps": eps,
        "steps": steps,
        **_dice_columns(labels, predicted),
    }
    quality = image_quality(image, np.asarray(x_adv)[0]) if attack != "none" and eps > 0 else {}
    row.update({q: quality.get(q, "") for q in QUALITY_METRICS})
    if grid is not None:
        probabilities = np.asarray(logits_to_probabilities(forward(x_adv, training=False)))[0]
        row.update({f"native_{k}": v for k, v in grid.scores(probabilities).items()})
    rows.append(row)
    return row


def _steps(config: EvalConfig, attack: str) -> int:
    """The iterations ``attack`` runs for under ``config``."""
    if attack == "vafa":
        from keras_advseg.attacks.frequency import VAFA_SETTINGS

        return VAFA_SETTINGS[config.vafa_setting].steps or config.vafa_steps or config.steps
    own = {"worst": config.worst_steps}.get(attack)
    return own or config.steps


def _mean_dice(row) -> float:
    """The mean of a row's three region Dice (what the worst case minimises)."""
    return sum(row[f"dice_{r}"] for r in REGIONS) / len(REGIONS)


def _all_zero(row) -> bool:
    """Whether a row's three regions all have Dice 0 (nothing left for a larger budget to do)."""
    return all(row[f"dice_{r}"] == 0 for r in REGIONS)


def lesion_spacing_of(prepared) -> tuple[float, float, float] | None:
    """The voxel size (mm) of a prepared cache's grid, for lesion-wise scores in model space.

    :func:`keras_advseg.data.corrupted.prepared_spacing`: the raw scans' spacing times the
    crop's extent over the prepared shape (median of the first training scans).

    Returns:
        The spacing, or None when the raw dataset the cache was prepared from is not at
        hand (the scores then take 1 voxel for 1 mm).
    """
    from pathlib import Path

    from keras_advseg.data.corrupted import prepared_spacing

    if prepared.source is None or not Path(prepared.source).is_dir():
        return None
    return prepared_spacing(prepared)


def _lesion_columns(labels, predicted, spacing) -> dict[str, float]:
    """``lesion_dice_*`` and ``lesion_hd95_*`` of a predicted label map (BraTS 2023)."""
    scores = lesion_wise(labels, predicted, spacing)
    return {m: scores[m] for m in LESION_METRICS}


def _dice_columns(labels, predicted) -> dict[str, float]:
    """``{"dice_wt", "dice_tc", "dice_et"}`` of a predicted label map."""
    dice = brats_dice(labels, predicted)
    return {f"dice_{r}": float(dice[r]) for r in REGIONS}
