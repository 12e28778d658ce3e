"""Robustness evaluation (the paper's "Measuring Robustness"): ``advseg evaluate``.

Per test subject: BraTS Dice (WT/TC/ET) clean and under each attack, and the
PSNR/SSIM/RMSE of the perturbed input against the clean one; FGSM sweeps over
eps from one gradient; i-FGSM curves over iterations from one trajectory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_advseg.atomic import rows_to_csv, write_text_atomic
from keras_advseg.attacks.core import labels_of
from keras_advseg.attacks import (all_label_target, fgsm_sweep, ifgsm, ifgsm_trajectory, pgd,
                                  targeted_ifgsm)
from keras_advseg.data.pipeline import one_hot_labels
from keras_advseg.metrics import brats_dice, image_quality, predict_labels, traced_inference

ATTACKS = ("none", "fgsm", "ifgsm", "tifgsm", "pgd")
REGIONS = ("wt", "tc", "et")
QUALITY = ("psnr", "ssim", "rmse")
PAPER_EPS_GRID = tuple(round(0.001 * i, 3) for i in range(11))
ROW_FIELDS = ("subject", "attack", "eps", "steps", "dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse")
ITERATION_FIELDS = ("subject", "attack", "iteration", "dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse")


@dataclass
class EvalConfig:
    """What to evaluate.

    Attributes:
        attacks: Attacks besides the clean evaluation (``none`` is always done).
        eps: Budgets of the attacks, relative to each input's intensity range (paper: 0.05).
        steps: Iterations of i-FGSM, targeted i-FGSM and PGD (paper: 10).
        eps_sweep: FGSM budgets of the sweep (paper: 0..0.010 by 0.001), from one gradient.
        iterations_sweep: Record Dice and input quality after every i-FGSM
            (and targeted i-FGSM) iteration.
        attack_temperature: Softmax temperature of the attack's loss (T > 1
            attacks distilled models at the logit level).
        seed: PGD's random starts.
        restarts: PGD restarts.
        iterative_eps: Budgets of i-FGSM, targeted i-FGSM and PGD when they
            should differ from ``eps`` (the study runs them at Table 1's 0.05
            only); None: ``eps``.
    """

    attacks: tuple[str, ...] = ("fgsm",)
    eps: tuple[float, ...] = (0.05,)
    steps: int = 10
    eps_sweep: tuple[float, ...] = ()
    iterations_sweep: bool = False
    attack_temperature: float = 1.0
    seed: int = 0
    restarts: int = 1
    iterative_eps: tuple[float, ...] | None = None

    def __post_init__(self):
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ValueError(f"--attack must be among {ATTACKS}. Received: {unknown}")
        if any(e < 0 for e in tuple(self.eps) + tuple(self.eps_sweep) + tuple(self.iterative_eps or ())):
            raise ValueError(f"eps values must be >= 0. Received: eps={self.eps}, eps_sweep={self.eps_sweep}, "
                             f"iterative_eps={self.iterative_eps}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1. Received: steps={self.steps}")


@dataclass
class Evaluation:
    """Results of :func:`evaluate`."""

    rows: list[dict] = field(default_factory=list)
    iterations: list[dict] = field(default_factory=list)
    example: dict | None = None


def evaluate(model, prepared, ids: list[str], config: EvalConfig, *, transfer_model=None,
             progress: bool | None = None) -> Evaluation:
    """Attacks ``model`` on every subject in ``ids`` and scores it.

    Args:
        model: Deployable model (volumes in, logits out).
        prepared: The prepared dataset.
        ids: Subjects with labels.
        config: What to run.
        transfer_model: Craft the attacks on this model instead (black-box
            transfer) and apply them to ``model``.
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
    forward = traced_inference(model)
    result = Evaluation()
    kwargs = dict(temperature=config.attack_temperature)
    for index, subject_id in enumerate(tqdm(ids, desc="evaluate", unit="subject",
                                            disable=None if progress is None else not progress)):
        image, labels = prepared.load(subject_id)
        if labels is None:
            raise ValueError(f"subject {subject_id} has no labels; evaluation needs them")
        x, y = image[None], one_hot_labels(labels[None]).numpy()

        def score(attack, eps, x_adv, steps=0, predicted=None):
            """One row: Dice of ``predicted`` (default: the model on ``x_adv``) and input quality."""
            if predicted is None:
                predicted = predict_labels(forward, x_adv)[0]
            row = {"subject": subject_id, "attack": attack, "eps": eps, "steps": steps,
                   **_dice_columns(labels, predicted)}
            quality = image_quality(image, np.asarray(x_adv)[0]) if attack != "none" and eps > 0 else {}
            row.update({q: quality.get(q, "") for q in QUALITY})
            result.rows.append(row)
            return row

        score("none", 0.0, x)
        # The i-FGSM curves' last iterate is the i-FGSM (targeted i-FGSM) attack at eps[0]:
        # run the trajectories first and reuse it instead of attacking twice.
        finished = {}
        if config.iterations_sweep:
            eps = (config.iterative_eps or config.eps)[0]
            for attack, target, targeted in (("ifgsm", y, False), ("tifgsm", all_label_target(y), True)):
                trajectory = ifgsm_trajectory(source, x, target, eps=eps, steps=config.steps, targeted=targeted,
                                              keep_inputs=True, **kwargs)
                for k in range(config.steps):
                    x_k = np.asarray(trajectory.inputs[k])
                    predicted = trajectory.labels[k][0] if transfer_model is None else predict_labels(forward, x_k)[0]
                    result.iterations.append({
                        "subject": subject_id, "attack": attack, "iteration": k + 1,
                        **_dice_columns(labels, predicted),
                        **image_quality(image, x_k[0]),
                    })
                finished[(attack, eps)] = (trajectory.x_adv, trajectory.labels[-1][0] if transfer_model is None
                                           else None)
        adversarial_examples = {}
        # FGSM at every budget (the attack's and the sweep's) from ONE gradient: sign(grad) does not
        # depend on eps, and fgsm_sweep returns exactly what fgsm would.
        fgsm_eps = list(config.eps) if "fgsm" in config.attacks else []
        budgets = sorted(set(fgsm_eps) | set(config.eps_sweep))
        if budgets:
            for eps, x_adv, logits in fgsm_sweep(source, x, y, budgets, **kwargs):
                # without transfer, the sweep's own forward pass is the evaluated model's prediction
                predicted = np.asarray(labels_of(logits))[0] if transfer_model is None else None
                if eps in fgsm_eps:
                    score("fgsm", eps, x_adv, predicted=predicted)
                    if eps > 0:  # the example figure shows the largest budget
                        adversarial_examples["fgsm"] = x_adv
                if eps in config.eps_sweep:
                    score("fgsm_sweep", eps, x_adv, predicted=predicted)
        for attack in config.attacks:
            if attack in ("none", "fgsm"):
                continue
            for eps in config.iterative_eps or config.eps:
                x_adv, predicted = finished.get((attack, eps), (None, None))
                if x_adv is None:
                    x_adv = _attack(attack, source, x, y, eps, config, kwargs)
                score(attack, eps, x_adv, steps=config.steps, predicted=predicted)
                adversarial_examples[attack] = x_adv
        if index == 0:
            chosen = next(iter(adversarial_examples.items()), None)
            if chosen is not None:
                result.example = {"subject": subject_id, "image": image, "labels": labels, "attack": chosen[0],
                                  "adversarial": np.asarray(chosen[1])[0],
                                  "clean_prediction": predict_labels(forward, x)[0],
                                  "adversarial_prediction": predict_labels(forward, chosen[1])[0]}
    return result


def summarize(evaluation: Evaluation) -> dict:
    """Mean and standard deviation per attack and eps, and the relative Dice drop from clean.

    Returns:
        ``{"n_subjects", "clean": {...}, "attacks": {attack: {eps: {metric: {"mean", "sd"},
        "dice_drop": {region: fraction}}}}, "iterations": {attack: {metric: [means per iteration]}}}``.
    """
    rows = evaluation.rows
    clean_rows = [r for r in rows if r["attack"] == "none"]
    clean = {f"dice_{r}": _stats([row[f"dice_{r}"] for row in clean_rows]) for r in REGIONS}
    attacks: dict = {}
    for row in rows:
        if row["attack"] == "none":
            continue
        attacks.setdefault(row["attack"], {}).setdefault(_eps_key(row["eps"]), []).append(row)
    summary_attacks = {}
    for attack, by_eps in attacks.items():
        summary_attacks[attack] = {}
        for eps, group in sorted(by_eps.items(), key=lambda kv: float(kv[0])):
            entry = {m: _stats([g[m] for g in group if g[m] != ""]) for m in
                     [f"dice_{r}" for r in REGIONS] + list(QUALITY)}
            entry["dice_drop"] = {
                r: (clean[f"dice_{r}"]["mean"] - entry[f"dice_{r}"]["mean"]) / clean[f"dice_{r}"]["mean"]
                if clean[f"dice_{r}"]["mean"] else None for r in REGIONS}
            summary_attacks[attack][eps] = entry
    curves: dict = {}
    for attack in sorted({r["attack"] for r in evaluation.iterations}):
        chosen = [r for r in evaluation.iterations if r["attack"] == attack]
        steps = max(r["iteration"] for r in chosen)
        curves[attack] = {m: [float(np.mean([r[m] for r in chosen if r["iteration"] == k])) for k in range(1, steps + 1)]
                          for m in [f"dice_{r}" for r in REGIONS] + list(QUALITY)}
    return {"n_subjects": len(clean_rows), "clean": clean, "attacks": summary_attacks, "iterations": curves}


def write_outputs(evaluation: Evaluation, summary: dict, out: Path, meta: dict) -> list[Path]:
    """Writes ``per_subject.csv``, ``iterations.csv`` (if any) and ``summary.json`` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    written = [write_text_atomic(out / "per_subject.csv", rows_to_csv(evaluation.rows, ROW_FIELDS))]
    if evaluation.iterations:
        written.append(write_text_atomic(out / "iterations.csv", rows_to_csv(evaluation.iterations, ITERATION_FIELDS)))
    written.append(write_text_atomic(out / "summary.json", json.dumps({**meta, **summary}, indent=2, default=_jsonable)))
    return written


def mlflow_metrics(summary: dict) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """Flat metric names for the MLflow UI (``dice_et_fgsm_eps0.05``) and step series for the curves."""
    flat = {f"dice_{r}_clean": summary["clean"][f"dice_{r}"]["mean"] for r in REGIONS}
    series: dict[str, list[tuple[int, float]]] = {}
    for attack, by_eps in summary["attacks"].items():
        for eps, entry in by_eps.items():
            for metric in [f"dice_{r}" for r in REGIONS] + list(QUALITY):
                value = entry[metric]["mean"]
                if value is None or not math.isfinite(value):
                    continue
                if attack == "fgsm_sweep":
                    series.setdefault(f"sweep_fgsm_{metric}", []).append((int(round(float(eps) * 1000)), value))
                else:
                    flat[f"{metric}_{attack}_eps{eps}"] = value
    for attack, curves in summary["iterations"].items():
        for metric, values in curves.items():
            series[f"iterations_{attack}_{metric}"] = [(k + 1, v) for k, v in enumerate(values)]
    return flat, series


def _dice_columns(labels, predicted) -> dict[str, float]:
    """``{"dice_wt", "dice_tc", "dice_et"}`` of a predicted label map."""
    dice = brats_dice(labels, predicted)
    return {f"dice_{r}": float(dice[r]) for r in REGIONS}


def _attack(name, model, x, y, eps, config: EvalConfig, kwargs):
    """One iterative attack (FGSM comes from the shared sweep gradient)."""
    if name == "ifgsm":
        return ifgsm(model, x, y, eps=eps, steps=config.steps, **kwargs)
    if name == "tifgsm":
        return targeted_ifgsm(model, x, all_label_target(y), eps=eps, steps=config.steps, **kwargs)
    return pgd(model, x, y, eps=eps, steps=config.steps, seed=config.seed, restarts=config.restarts, **kwargs)


def _stats(values) -> dict:
    values = [float(v) for v in values if v != "" and v is not None and math.isfinite(float(v))]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def _eps_key(eps: float) -> str:
    return f"{float(eps):g}"


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
