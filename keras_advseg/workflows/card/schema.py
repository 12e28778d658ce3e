"""What a card is (:data:`CARD_SCHEMA`, :data:`CARD_VERSION`): a card read back and checked."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.errors import FileFormatError
from keras_advseg.io import read_json
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes.common import Checker

CARD_SCHEMA = "keras-advseg/robustness-card"
CARD_VERSION = 2
"""2: per-subject corruption draws, sigma in standardised units, region certificates, the
censored min_eps median, the corrupted-scan mean, flags, data, commit and date. A version-1 card
is refused in one line: its numbers mean something else."""


def validate_card(card: dict) -> None:
    """Checks a card against schema version 2: every section, its keys and number types.

    Raises:
        FileFormatError: naming the first field that is missing or of the wrong type.
    """
    checker = Checker()
    checker.need(card.get("schema") == CARD_SCHEMA, "schema")
    if card.get("version") != CARD_VERSION:
        raise FileFormatError(
            f"card: version {card.get('version')!r}, written by another keras-advseg (this one "
            f"reads version {CARD_VERSION}: sigma, the corruption draws and min_eps changed "
            "meaning); run advseg card again"
        )
    for section in table.sections():
        checker.need(isinstance(card.get(section), dict), section)
    for axis in table.AXES:
        if axis.check is not None:
            axis.check(card[axis.section], checker)


def read_card(path) -> dict:
    """A ``card.json`` (or the folder holding it) read back and validated (untrusted input).

    Raises:
        FileFormatError: not a card of this schema, or not a readable JSON object (naming the
            file).
    """
    path = Path(path)
    path = path / "card.json" if path.is_dir() else path
    card = read_json(path, "card")
    validate_card(card)
    card["path"] = str(path.parent)
    return card
