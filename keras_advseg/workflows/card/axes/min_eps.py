"""The min_eps axis: each subject's smallest FGSM eps that halves its mean Dice, on the
grid of eps the evaluation ran FGSM at, and their median with the unbroken subjects
censored at the grid's top (:func:`min_eps_summary`). It reads the evaluation's rows; the
bisection of one attack per sample is :func:`keras_advseg.attacks.ensemble.min_eps`."""

from __future__ import annotations

import math

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.workflows.card.axes.common import (
    INTEGER,
    NUMBER_OR_NULL,
    NUMBERS,
    result,
    section,
)


def read(sources) -> dict:
    """``adversarial.min_eps`` (:func:`min_eps_summary`)."""
    return min_eps_summary(sources.evaluation())


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


def min_eps_summary(evaluation) -> dict:
    """The card's min_eps: each subject's smallest FGSM eps that takes its mean Dice to half its
    clean mean Dice or below, on the grid of eps the evaluation ran FGSM at (``advseg card``:
    the doubling grid :data:`~keras_advseg.config.EPS_CURVE`; None when none of the grid
    does), with their censored median (:func:`censored_median`). Read from the evaluation's
    rows, it runs no attack (:func:`keras_advseg.attacks.ensemble.min_eps` bisects one).

    Args:
        evaluation: ``advseg evaluate``'s results
            (:class:`~keras_advseg.evaluation.results.EvalResults`).

    Returns:
        ``{"criterion", "grid", "per_subject", "median", "median_above", "broken",
        "unbroken"}``: the card's ``adversarial.min_eps``.
    """
    by_eps = {}
    for attack in ("fgsm", "fgsm_sweep"):
        for (name, eps), rows in evaluation.values.items():
            if name == attack and eps > 0:
                by_eps.setdefault(round(eps, 6), {}).update(rows)
    grid = sorted(by_eps)
    found = {}
    clean = evaluation.values.get(("none", 0.0), {})
    for subject, values in clean.items():
        before = np.mean([values[f"dice_{r}"] for r in REGIONS])
        found[subject] = None
        for eps in grid:
            row = by_eps[eps].get(subject)
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
    """The median breaking eps over every subject, the unbroken ones (None) censored at the
    largest eps tried: Kaplan-Meier's median, the smallest eps by which at least half of
    the subjects broke (with one censoring time, after every break, Kaplan-Meier's curve is the
    empirical one). None when fewer than half broke: the median is then above the grid.

    Args:
        values: Each subject's smallest breaking eps, None for a subject that did not break.
    """
    if not values:
        return None
    broken = sorted(v for v in values if v is not None)
    needed = math.ceil(len(values) / 2)
    return float(broken[needed - 1]) if len(broken) >= needed else None


SCHEMA = section(
    (),
    criterion={"type": "string"},
    grid=NUMBERS,
    per_subject={"type": "object", "additionalProperties": NUMBER_OR_NULL},
    median=NUMBER_OR_NULL,
    median_above=NUMBER_OR_NULL,
    broken=INTEGER,
    unbroken=INTEGER,
)
"""``card.json``'s ``adversarial.min_eps``."""


def results(card: dict, sources=None) -> list[dict]:
    """The median smallest breaking FGSM eps: an upper bound on the smallest breaking budget
    (null when fewer than half the subjects broke on the grid)."""
    m = card["adversarial"]["min_eps"]
    settings = {
        "attack": "fgsm",
        "norm": "linf",
        "grid": m.get("grid"),
        "criterion": m.get("criterion"),
    }
    subjects = sorted(m["per_subject"]) if isinstance(m.get("per_subject"), dict) else None
    return [
        result(
            "min_eps",
            "min_eps_median",
            m.get("median"),
            "upper",
            settings=settings,
            subjects=subjects,
        )
    ]
