"""What the axes share: region triples, numbers read as untrusted input, per-subject rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.errors import FileFormatError


def number(value) -> float | None:
    """``value`` as a float (None stays None)."""
    return None if value is None else float(value)


def region_means(entry: dict, prefix: str = "dice") -> dict[str, float | None]:
    """``{region: entry["<prefix>_<region>"]["mean"]}`` of a summary entry."""
    return {r: number(entry[f"{prefix}_{r}"]["mean"]) for r in REGIONS}


def triple(values: dict, fmt: str = "{:.3f}") -> str:
    """``WT / TC / ET`` as a card prints them (``n/a`` for a missing value)."""
    return " / ".join("n/a" if values[r] is None else fmt.format(values[r]) for r in REGIONS)


def prefixed(prefix: str, values: dict) -> dict[str, float]:
    """``{"card.<prefix>_<region>": value}`` (MLflow metrics) for the regions that have one."""
    return {f"card.{prefix}_{r}": float(v) for r, v in values.items() if v is not None}


def mean_of_regions(values: dict) -> float | None:
    """The mean over WT, TC and ET (None when one is missing): a leaderboard cell."""
    values = [values[r] for r in REGIONS]
    return None if any(v is None for v in values) else float(np.mean(values))


def card_folder(card: dict, run: str) -> Path:
    """The folder of the command ``run`` in a card read back: ``<card>/<run>``, or the older
    name a version-2 card's ``folders`` records (its corruptions under ``artifacts/``)."""
    return Path(card["path"]) / card.get("folders", {}).get(run, run)


def read_rows(path: Path) -> list[dict]:
    """A CSV table of a card's folder as dictionaries (untrusted input).

    Raises:
        FileFormatError: missing or unreadable, naming the file.
    """
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: missing or unreadable ({exc})") from None


def subject_mean(row: dict, prefix: str) -> float:
    """The mean over the regions of ``<prefix>_<region>`` in one per-subject row.

    Raises:
        FileFormatError: a missing or non-finite value, naming the subject.
    """
    try:
        values = [float(row[f"{prefix}_{r}"]) for r in REGIONS]
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"malformed row {row.get('subject')!r} ({exc})") from None
    if not all(np.isfinite(values)):
        raise FileFormatError(f"malformed row {row.get('subject')!r}: not finite")
    return float(np.mean(values))


def evaluation_rows(card: dict, attack: str, eps: float) -> dict[str, float]:
    """``{subject: mean Dice over the regions}`` of one attack and eps of the card's
    ``adversarial/per_subject.csv``."""
    rows = read_rows(card_folder(card, "adversarial") / "per_subject.csv")
    chosen = [r for r in rows if r["attack"] == attack and abs(float(r["eps"]) - eps) < 1e-9]
    return {r["subject"]: subject_mean(r, "dice") for r in chosen}


# --- JSON Schema fragments (the published schema, keras_advseg/workflows/card/card.schema.json,
# is assembled from them by keras_advseg.workflows.card.schema.card_schema) ---

NUMBER_OR_NULL = {"type": ["number", "null"]}
INTEGER = {"type": "integer"}
STRINGS = {"type": "array", "items": {"type": "string"}}
NUMBERS = {"type": "array", "items": {"type": "number"}}
DICE = {
    "type": "object",
    "description": "Dice per region (WT, TC, ET) in [0, 1]; null where it is undefined",
    "required": list(REGIONS),
    "properties": {r: {"type": ["number", "null"], "minimum": 0, "maximum": 1} for r in REGIONS},
    "additionalProperties": False,
}
PER_REGION = {
    "type": "object",
    "description": "a number (or null) per region",
    "properties": {r: NUMBER_OR_NULL for r in REGIONS},
    "additionalProperties": NUMBER_OR_NULL,
}
NUMBER_KEY = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def by_number(value: dict, min_properties: int = 0, what: str = "eps") -> dict:
    """The schema of an object keyed by numbers written as strings (eps, sigma)."""
    return {
        "type": "object",
        "description": f"keyed by {what}, written as a number",
        "propertyNames": {"pattern": NUMBER_KEY},
        "additionalProperties": value,
        "minProperties": min_properties,
    }


def section(required: tuple[str, ...] = (), **properties) -> dict:
    """The schema of a JSON object with these ``properties`` (others allowed)."""
    return {"type": "object", "required": list(required), "properties": properties}


# --- result entries: each number of the card as one entry of card.json's ``results`` ---

BOUNDS = {
    "upper": "an upper bound: the Dice an attack reached (a stronger attack may go lower)",
    "guarantee": "a guarantee (certificate) for the smoothed model, at its error rate",
    "measured": "measured on the test subjects, neither bound nor guarantee",
}


def result(
    axis: str,
    metric: str,
    value,
    bound: str,
    *,
    region: str | None = None,
    settings: dict | None = None,
    subjects=None,
    ci=None,
    headline: bool = False,
) -> dict:
    """One entry of ``card.json``'s ``results`` (see :data:`BOUNDS` for ``bound``)."""
    return {
        "axis": axis,
        "metric": metric,
        "region": region,
        "value": number(value),
        "ci95": ci,
        "bound": bound,
        "settings": settings or {},
        "subjects": subjects,
        "headline": headline,
    }


def mean_ci(entry) -> list[float] | None:
    """The 95 % t-interval of a mean Dice from a summary's ``{"mean", "sd", "n"}``, clipped to
    Dice's range [0, 1] (None with fewer than two subjects or a malformed entry)."""
    from keras_advseg.evaluation.statistics import t_half_width

    try:
        mean, sd, n = float(entry["mean"]), float(entry["sd"]), int(entry["n"])
    except (KeyError, TypeError, ValueError):
        return None
    if n < 2 or not np.isfinite([mean, sd]).all():
        return None
    half = t_half_width(sd, n)
    return [max(0.0, mean - half), min(1.0, mean + half)]


def subjects_in(sources, run: str, name: str) -> list[str] | None:
    """The subjects (in order of first appearance) of the ``subject`` column of the CSV
    ``name`` in the command ``run``'s folder; None without ``sources`` or such a file."""
    if sources is None:
        return None
    path = sources.folder(run) / name
    if not path.is_file():
        return None
    return list(dict.fromkeys(r["subject"] for r in read_rows(path) if r.get("subject")))
