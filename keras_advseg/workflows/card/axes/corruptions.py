"""The corruptions axis: Dice under simulated MRI artifacts and operator errors (``advseg
corruptions``): the mean Dice of the corrupted scans, ROOD-MRI's scores where every
severity 1-5 ran, the resilience rate, the worst corruption and the corruption error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.workflows.card.axes.common import (
    INTEGER,
    PER_REGION,
    STRINGS,
    card_folder,
    number,
    prefixed,
    result,
    section,
    subjects_in,
    triple,
)

SUMMARY = "corruption_summary.json"
ROWS = "corruptions.csv"


def read(sources) -> dict:
    """The ``corruptions`` section from the folder's summary and rows."""
    summary = sources.document("corruptions", SUMMARY)
    scores = summary["scores"]
    by_subject = corrupted_means(sources.folder("corruptions") / ROWS)
    return {
        "corruptions": summary["corruptions"],
        "severities": summary["severities"],
        # what the leaderboard shows and tests: each subject's Dice averaged over its
        # corrupted scans (the clean scan not counted), then over subjects
        "corrupted_dice": {
            r: float(np.mean([v[f"dice_{r}"] for v in by_subject.values()])) if by_subject else None
            for r in REGIONS
        },
        **{
            k: {r: number(scores[k][r]) for r in REGIONS}
            for k in ("clean", "overall", "degradation", "mrr", "mce")
        },
        "worst": {r: scores["worst"][r] for r in REGIONS},
    }


def claim(plan) -> str:
    return (
        f"Measured, not bounded: {', '.join(plan.corruptions)} at severity "
        f"{', '.join(map(str, plan.severities))}, one draw per subject; other corruptions "
        "and draws may differ."
    )


def rows(card: dict) -> list[tuple[str, str]]:
    section = card["corruptions"]
    levels = ", ".join(str(v) for v in section.get("severities", []))
    rows = []
    if "corrupted_dice" in section:
        rows.append(
            (
                f"mean Dice of the corrupted scans (severity {levels})",
                triple(section["corrupted_dice"]),
            )
        )
    if all_rood_levels(section):
        rows += [
            ("ROOD-MRI overall (clean counted as level 0)", triple(section["overall"])),
            ("ROOD-MRI degradation", triple(section["degradation"])),
        ]
    else:
        rows.append(
            (
                "ROOD-MRI overall and degradation",
                f"not shown: defined over severities 1-5, this card ran {levels or 'none'}",
            )
        )
    rows += [
        ("resilience rate mRR (Robo3D)", triple(section["mrr"])),
        ("worst corruption", " / ".join(section["worst"][r] for r in REGIONS)),
    ]
    if any(v is not None for v in section["mce"].values()):
        rows.append(("corruption error mCE vs the reference", triple(section["mce"])))
    return rows


def headline(card: dict) -> dict[str, float]:
    section = card["corruptions"]
    flat = {}
    if "corrupted_dice" in section:
        flat.update(prefixed("corruptions_corrupted_dice", section["corrupted_dice"]))
    if all_rood_levels(section):
        flat.update(prefixed("corruptions_rood_overall", section["overall"]))
    return flat


def all_rood_levels(section: dict) -> bool:
    """Whether a card's corruptions section ran every severity 1-5, over which ROOD-MRI's
    overall and degradation scores are defined (with fewer, the overall score is mostly the
    clean Dice)."""
    from keras_advseg.corruptions.registry import every_severity

    return every_severity(section.get("severities"))


def corrupted_means(table: Path) -> dict[str, dict[str, float]]:
    """``{subject: {"dice_wt": mean over every corrupted scan, ...}}`` of a ``corruptions.csv``.

    Raises:
        FileFormatError: a malformed table.
    """
    from keras_advseg.evaluation.corrupted import read_rows

    by_subject: dict = {}
    for row in read_rows(table):
        if row["severity"] > 0:
            by_subject.setdefault(row["subject"], []).append(row)
    return {
        subject: {f"dice_{r}": sum(row[f"dice_{r}"] for row in rows) / len(rows) for r in REGIONS}
        for subject, rows in by_subject.items()
    }


def corrupted_dice(card: dict) -> dict[str, float | None]:
    """``{region: mean over subjects of each subject's Dice averaged over every corrupted
    scan}`` from the card's ``corruptions/corruptions.csv``: the quantity the corruptions column's
    test compares (its per-subject mean over the regions is :func:`per_subject`'s). Unlike
    ROOD-MRI's overall score, it does not count the clean scan.

    Args:
        card: A card read by :func:`keras_advseg.workflows.card.read_card`.

    Returns:
        The means (None where no corrupted scan was scored).

    Raises:
        FileFormatError: the rows are missing or malformed.
    """
    by_subject = _card_means(card)
    return {
        r: float(np.mean([v[f"dice_{r}"] for v in by_subject.values()])) if by_subject else None
        for r in REGIONS
    }


def per_subject(card: dict) -> dict[str, float]:
    """``{subject: its Dice averaged over every corrupted scan, then over the regions}``."""
    return {
        s: float(np.mean([v[f"dice_{r}"] for r in REGIONS])) for s, v in _card_means(card).items()
    }


def rood_scores(card: dict) -> dict[str, float | None] | None:
    """ROOD-MRI's overall and degradation scores (mean over WT, TC and ET), as the card stores
    them, where the card ran every severity 1-5; None otherwise: with fewer levels the overall
    score is mostly the clean Dice (at severity 3 alone the clean scan weighs
    ``1 / (1 + (2/3)^3)``, 77 %), not a score under the corruptions.

    Args:
        card: A card.

    Returns:
        ``{"overall": ..., "degradation": ...}`` or None.
    """
    if not all_rood_levels(card["corruptions"]):
        return None
    out = {}
    for key in ("overall", "degradation"):
        values = [card["corruptions"][key].get(r) for r in REGIONS]
        out[key] = None if any(v is None for v in values) else float(np.mean(values))
    return out


def levels(card: dict) -> str:
    """The severities a card ran, as a cell (``1, 2, 3`` or ``none``)."""
    ran = card["corruptions"].get("severities") or ()
    return ", ".join(str(s) for s in ran) or "none"


def _card_means(card: dict) -> dict:
    return corrupted_means(card_folder(card, "corruptions") / ROWS)


SCHEMA = section(
    ("overall", "degradation", "mrr"),
    corruptions=STRINGS,
    severities={"type": "array", "items": INTEGER},
    corrupted_dice=PER_REGION,
    clean=PER_REGION,
    overall=PER_REGION,
    degradation=PER_REGION,
    mrr=PER_REGION,
    mce=PER_REGION,
    worst={"type": "object", "additionalProperties": {"type": ["string", "null"]}},
)
"""``card.json``'s ``corruptions``."""


def results(card: dict, sources=None) -> list[dict]:
    """The mean Dice of the corrupted scans per region, measured (a headline number)."""
    section_ = card["corruptions"]
    if "corrupted_dice" not in section_:
        return []
    settings = {
        "corruptions": section_.get("corruptions"),
        "severities": section_.get("severities"),
    }
    subjects = subjects_in(sources, "corruptions", "corruptions.csv")
    return [
        result(
            "corruptions",
            "corrupted_dice",
            section_["corrupted_dice"][r],
            "measured",
            region=r,
            settings=settings,
            subjects=subjects,
            headline=True,
        )
        for r in REGIONS
    ]
