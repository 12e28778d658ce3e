"""The attacked axis: Dice under FGSM at each of the plan's budgets and under the per-subject
worst case of the plan's ensemble at the first (``advseg evaluate``): upper bounds."""

from __future__ import annotations

from keras_advseg.config import REGIONS
from keras_advseg.workflows.card.axes.common import (
    DICE,
    by_number,
    evaluation_rows,
    mean_ci,
    prefixed,
    region_means,
    result,
    section,
    subjects_in,
    triple,
)


def read(sources) -> dict:
    """``adversarial.fgsm`` and ``adversarial.worst``: ``{eps: {region: mean Dice}}``."""
    attacks, eps = sources.summary().attacks, sources.plan.eps
    return {
        "fgsm": {f"{e:g}": region_means(attacks["fgsm"][e]) for e in eps},
        "worst": {f"{e:g}": region_means(attacks["worst"][e]) for e in eps[:1]},
    }


def claim(plan) -> str:
    return (
        f"Upper bounds: the Dice under the strongest of {', '.join(plan.ensemble)} "
        f"({plan.steps} steps each) and FGSM; a stronger attack may find lower. min_eps is "
        "FGSM's smallest breaking budget on the grid it ran (min_eps.grid): an upper bound "
        "on the smallest budget that breaks the model."
    )


def rows(card: dict) -> list[tuple[str, str]]:
    adversarial = card["adversarial"]
    rows = [(f"Dice under FGSM, eps {eps}", triple(v)) for eps, v in adversarial["fgsm"].items()]
    lower = adversarial.get("audit_lower")
    for eps, values in adversarial["worst"].items():
        label = f"Dice under the worst case, eps {eps} ({', '.join(card['plan']['ensemble'])})"
        if lower:
            label += (
                f"; NOT the tightest bound: on the audit's subjects its item {lower['item']} "
                f"reached mean Dice {lower['dice']:.3f}, the audit's worst case (this ensemble, "
                f"the strongest over its step counts) {lower['white_box']:.3f}"
            )
        rows.append((label, triple(values)))
    return rows


def headline(card: dict) -> dict[str, float]:
    flat = {}
    for eps, values in card["adversarial"]["worst"].items():
        flat.update(prefixed(f"worst_dice_eps{eps}", values))
    return flat


def value(card: dict) -> dict:
    """The worst case at the first eps."""
    return next(iter(card["adversarial"]["worst"].values()))


def per_subject(card: dict) -> dict[str, float]:
    return evaluation_rows(card, "worst", float(card["plan"]["eps"][0]))


SCHEMA = section(
    ("fgsm", "worst"),
    fgsm=by_number(DICE),
    worst=by_number(DICE, 1),  # every reader's headline: at least one budget
    audit_lower={"type": ["object", "null"]},
)
"""``card.json``'s ``adversarial`` (FGSM and the worst case; VAFA and min_eps are axes of
their own in the same section)."""


def results(card: dict, sources=None) -> list[dict]:
    """Dice under FGSM and under the worst case, per eps and region: upper bounds (an attack
    reached them); the worst case at the first eps is a headline number."""
    attacks = sources.summary().attacks if sources is not None else {}
    plan = card["plan"]
    subjects = subjects_in(sources, "adversarial", "per_subject.csv")
    entries = []
    for attack, steps in (("fgsm", 1), ("worst", plan.get("steps"))):
        for rank, (eps, values) in enumerate(card["adversarial"][attack].items()):
            settings = {"attack": attack, "eps": float(eps), "norm": "linf", "steps": steps}
            if attack == "worst":
                settings["ensemble"] = plan.get("ensemble")
            summary = attacks.get(attack, {}).get(float(eps), {})
            entries += [
                result(
                    attack if attack == "worst" else "adversarial",
                    "dice",
                    values[r],
                    "upper",
                    region=r,
                    settings=settings,
                    subjects=subjects,
                    ci=mean_ci(summary.get(f"dice_{r}")),
                    headline=attack == "worst" and rank == 0,
                )
                for r in REGIONS
            ]
    return entries
