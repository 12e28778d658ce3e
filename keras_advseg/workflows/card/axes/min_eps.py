"""The min_eps axis: each subject's smallest FGSM budget that halves its mean Dice, on the
grid of budgets the evaluation ran FGSM at, and their median with the unbroken subjects
censored at the grid's top."""

from __future__ import annotations

import math

import numpy as np

from keras_advseg.config import REGIONS


def read(sources) -> dict:
    """``adversarial.min_eps`` (:func:`min_eps`)."""
    return min_eps(sources.evaluation())


def check(section: dict, checker) -> None:
    checker.need(isinstance(section.get("min_eps"), dict), "adversarial.min_eps")


def rows(card: dict) -> list[tuple[str, str]]:
    m = card["adversarial"]["min_eps"]
    top = max(m["grid"], default=0)
    subjects = len(m["per_subject"])
    broken = m.get("broken", subjects - m["unbroken"])
    median = f"median > {top:g}" if m["median"] is None else f"median {m['median']:g}"
    return [
        (
            "smallest breaking FGSM eps (min_eps; unbroken subjects censored at the grid's top)",
            f"{median}; {broken} of {subjects} broken by {top:g}",
        )
    ]


def headline(card: dict) -> dict[str, float]:
    median = card["adversarial"]["min_eps"]["median"]
    return {} if median is None else {"card.min_eps_median": median}


def min_eps(evaluation) -> dict:
    """Each subject's smallest FGSM budget that takes its mean Dice to half its clean mean Dice or
    below, on the grid of budgets the evaluation ran FGSM at (``advseg card``: the doubling grid
    :data:`~keras_advseg.config.EPS_CURVE`); None when none of the grid does."""
    budgets = {}
    for attack in ("fgsm", "fgsm_sweep"):
        for (name, eps), rows in evaluation.values.items():
            if name == attack and eps > 0:
                budgets.setdefault(round(eps, 6), {}).update(rows)
    grid = sorted(budgets)
    found = {}
    clean = evaluation.values.get(("none", 0.0), {})
    for subject, values in clean.items():
        before = np.mean([values[f"dice_{r}"] for r in REGIONS])
        found[subject] = None
        for eps in grid:
            row = budgets[eps].get(subject)
            if row is not None and np.mean([row[f"dice_{r}"] for r in REGIONS]) <= before / 2:
                found[subject] = eps
                break
    median = censored_median(list(found.values()))
    return {
        "criterion": "mean Dice at most half the clean mean Dice, FGSM",
        "grid": grid,
        "per_subject": found,
        "median": median,
        "median_above": None if median is not None or not found else max(grid, default=None),
        "broken": sum(v is not None for v in found.values()),
        "unbroken": sum(v is None for v in found.values()),
    }


def censored_median(values: list) -> float | None:
    """The median breaking budget over every subject, the unbroken ones (None) censored at the
    largest budget tried: Kaplan-Meier's median, the smallest budget by which at least half of
    the subjects broke (with one censoring time, after every break, Kaplan-Meier's curve is the
    empirical one). None when fewer than half broke: the median is then above the grid.

    Args:
        values: Each subject's smallest breaking budget, None for a subject that did not break.
    """
    if not values:
        return None
    broken = sorted(v for v in values if v is not None)
    needed = math.ceil(len(values) / 2)
    return float(broken[needed - 1]) if len(broken) >= needed else None
