"""What a card is (:data:`CARD_SCHEMA`, :data:`CARD_VERSION`): a card read back and checked."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.errors import FileFormatError
from keras_advseg.io import read_json
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes.common import Checker

CARD_SCHEMA = "keras-advseg/robustness-card"
CARD_VERSION = 3
"""3: the compute plan under ``plan`` (was ``budget``) and the corruptions under
``corruptions`` (section, claim and folder; was ``artifacts``). 2: per-subject corruption
draws, sigma in standardised units, region certificates, the censored min_eps median, the
corrupted-scan mean, flags, data, commit and date. A version-2 card is read with its keys
renamed (:func:`upgrade_card`: its numbers mean what version 3's do); a version-1 card is
refused in one line: its numbers mean something else."""

RENAMED_IN_3 = {"budget": "plan", "artifacts": "corruptions"}
"""Version 2's keys (and axis folders) under their version-3 names."""


def validate_card(card: dict) -> None:
    """Checks a card against the current schema version: every section, its keys and number
    types.

    Raises:
        FileFormatError: naming the first field that is missing or of the wrong type.
    """
    checker = Checker()
    checker.need(card.get("schema") == CARD_SCHEMA, "schema")
    if card.get("version") != CARD_VERSION:
        raise FileFormatError(
            f"card: version {card.get('version')!r}, written by another keras-advseg (this one "
            f"reads versions 2 and {CARD_VERSION}: sigma, the corruption draws and min_eps "
            "changed meaning); run advseg card again"
        )
    for section in table.sections():
        checker.need(isinstance(card.get(section), dict), section)
    check_plan(card.get("plan"), checker)
    for axis in table.AXES:
        if axis.check is not None:
            axis.check(card[axis.section], checker)


def check_plan(plan, checker) -> None:
    """The card's ``plan``: its name and budgets (every reader takes them), and, where the
    card has them, its ensemble, corruptions, sigmas and sample counts, each of its type."""
    checker.mapping(plan, "plan")
    checker.need(isinstance(plan.get("name"), str) and plan["name"], "plan.name")
    checker.numbers(plan.get("eps"), "plan.eps")
    for key in ("ensemble", "corruptions"):
        if key in plan:
            checker.strings(plan[key], f"plan.{key}", nonempty=key == "ensemble")
    for key in ("sigmas", "severities", "audit_curve"):
        if key in plan:
            checker.numbers(plan[key], f"plan.{key}", nonempty=False)
    for key in ("subjects", "steps", "n", "n0", "audit_steps"):
        if key in plan:
            value = plan[key]
            checker.need(
                value is None or (isinstance(value, int) and not isinstance(value, bool)),
                f"plan.{key}",
            )


def upgrade_card(card: dict) -> dict:
    """A version-2 card under version 3's names: ``budget`` -> ``plan``, ``artifacts`` ->
    ``corruptions`` (the section, its claim and the axis names in ``reused``), its corruption
    folder still ``artifacts/`` (recorded in ``folders``). Any other card is returned as it is.

    Args:
        card: A card as read from its file (untrusted input).

    Returns:
        The card, renamed in place where it is of version 2.
    """
    if card.get("version") != 2 or card.get("schema") != CARD_SCHEMA:
        return card
    for old, new in RENAMED_IN_3.items():
        if old in card and new not in card:
            card[new] = card.pop(old)
    claims = card.get("claims")
    if isinstance(claims, dict) and "artifacts" in claims:
        claims["corruptions"] = claims.pop("artifacts")
    reused = card.get("reused")
    if isinstance(reused, list) and all(isinstance(a, str) for a in reused):
        card["reused"] = sorted(RENAMED_IN_3.get(a, a) for a in card["reused"])
    card["folders"] = {"corruptions": "artifacts"}
    card["version"] = CARD_VERSION
    card["upgraded_from"] = 2
    return card


def read_card(path) -> dict:
    """A ``card.json`` (or the folder holding it) read back and validated (untrusted input); a
    version-2 card is read under version 3's names (:func:`upgrade_card`).

    Raises:
        FileFormatError: not a card of this schema, or not a readable JSON object (naming the
            file).
    """
    path = Path(path)
    path = path / "card.json" if path.is_dir() else path
    card = upgrade_card(read_json(path, "card"))
    validate_card(card)
    card["path"] = str(path.parent)
    return card
