"""The clean axis: Dice and HD95 of the unattacked test scans (the clean rows of ``advseg
evaluate``), and the flags a reader must see before any other number."""

from __future__ import annotations

from keras_advseg.config import REGIONS
from keras_advseg.workflows.card.axes.common import (
    DICE,
    INTEGER,
    PER_REGION,
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
    """The ``clean`` section from the evaluation's summary: model-space Dice, native-space Dice
    and HD95, and BraTS 2023's lesion-wise scores where the evaluation has them."""
    summary = sources.summary()
    clean = {
        "n_subjects": summary.n_subjects,
        "dice": region_means(summary.clean),
        "native_dice": region_means(summary.clean, "native_dice"),
        "native_hd95_mm": region_means(summary.clean, "native_hd95"),
    }
    if "lesion_dice_wt" in summary.clean:  # BraTS 2023's lesion-wise scores (model space)
        clean["lesion_dice"] = region_means(summary.clean, "lesion_dice")
        clean["lesion_hd95_mm"] = region_means(summary.clean, "lesion_hd95")
    return clean


def rows(card: dict) -> list[tuple[str, str]]:
    clean = card["clean"]
    rows = [
        ("Dice (model space)", triple(clean["dice"])),
        ("Dice (native space)", triple(clean["native_dice"])),
        ("HD95 mm (native space)", triple(clean["native_hd95_mm"], "{:.1f}")),
    ]
    if "lesion_dice" in clean:
        rows += [
            ("lesion-wise Dice (BraTS 2023, model space)", triple(clean["lesion_dice"])),
            (
                "lesion-wise HD95 mm (BraTS 2023, model space)",
                triple(clean["lesion_hd95_mm"], "{:.1f}"),
            ),
        ]
    return rows


def headline(card: dict) -> dict[str, float]:
    return prefixed("clean_dice", card["clean"]["dice"])


def value(card: dict) -> dict:
    return card["clean"]["dice"]


def per_subject(card: dict) -> dict[str, float]:
    return evaluation_rows(card, "none", 0.0)


def card_flags(clean_dice: dict) -> list[dict]:
    """What a reader must know before any other number: a region whose clean Dice is below
    :data:`~keras_advseg.config.MIN_CLEAN_DICE` is one the model does not segment, so its
    attacked, corrupted and certified numbers measure no robustness (an untrained network
    loses nothing and reads as robust). The leaderboard never ranks a flagged card as robust."""
    from keras_advseg.config import MIN_CLEAN_DICE

    missed = [
        r for r in REGIONS if clean_dice.get(r) is not None and clean_dice[r] < MIN_CLEAN_DICE
    ]
    if not missed:
        return []
    return [
        {
            "code": "low-clean-dice",
            "regions": missed,
            "minimum": MIN_CLEAN_DICE,
            "message": f"clean Dice below {MIN_CLEAN_DICE:g} in "
            f"{', '.join(r.upper() for r in missed)}: the model does not segment "
            f"{'it' if len(missed) == 1 else 'them'}, so its robustness numbers there measure "
            "nothing (an attack or a corruption has no Dice to take)",
        }
    ]


SCHEMA = section(
    ("dice",),
    n_subjects=INTEGER,
    dice=DICE,
    native_dice=DICE,
    native_hd95_mm=PER_REGION,
    lesion_dice=DICE,
    lesion_hd95_mm=PER_REGION,
)
"""``card.json``'s ``clean``."""


def results(card: dict, sources=None) -> list[dict]:
    """The clean Dice per region, measured (with its 95 % interval over the subjects)."""
    clean = sources.summary().clean if sources is not None else {}
    subjects = subjects_in(sources, "adversarial", "per_subject.csv")
    return [
        result(
            "clean",
            "dice",
            card["clean"]["dice"][r],
            "measured",
            region=r,
            ci=mean_ci(clean.get(f"dice_{r}")),
            subjects=subjects,
        )
        for r in REGIONS
    ]
