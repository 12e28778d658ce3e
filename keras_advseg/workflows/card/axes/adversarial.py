"""The attacked axis: Dice under FGSM at each of the plan's budgets and under the per-subject
worst case of the plan's ensemble at the first (``advseg evaluate``): upper bounds."""

from __future__ import annotations

from keras_advseg.workflows.card.axes.common import (
    evaluation_rows,
    prefixed,
    region_means,
    triple,
)


def read(sources) -> dict:
    """``adversarial.fgsm`` and ``adversarial.worst``: ``{eps: {region: mean Dice}}``."""
    attacks, eps = sources.summary().attacks, sources.plan.eps
    return {
        "fgsm": {f"{e:g}": region_means(attacks["fgsm"][e]) for e in eps},
        "worst": {f"{e:g}": region_means(attacks["worst"][e]) for e in eps[:1]},
    }


def check(section: dict, checker) -> None:
    # the worst case is every reader's headline: at least one budget; FGSM's may be empty
    for attack, nonempty in (("fgsm", False), ("worst", True)):
        where = f"adversarial.{attack}"
        for eps, value in checker.by_number(section.get(attack), where, nonempty).items():
            checker.dice(value, f"{where}.{eps}")


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
