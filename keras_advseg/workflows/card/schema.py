"""What a card is: its published JSON Schema (:func:`card_schema`, the file
:data:`SCHEMA_FILE`), a card read back, converted from an older version and validated."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from keras_advseg.config import REGIONS
from keras_advseg.errors import FileFormatError
from keras_advseg.io import read_json
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes.common import (
    BOUNDS,
    INTEGER,
    NUMBER_OR_NULL,
    NUMBERS,
    STRINGS,
    section,
)

CARD_SCHEMA = "keras-advseg/robustness-card"
CARD_VERSION = 4
"""4: the published JSON Schema; ``provenance`` (model SHA-256, data digest, split, subjects,
the input's units and range, seeds, software, hardware), every number as an entry of
``results`` (axis, metric, region, value, 95 % interval, settings, subjects, and whether it is
an upper bound, a guarantee or a measurement) and the audit's ``unreliable`` flag. 3: the
compute plan under ``plan`` (was ``budget``) and the corruptions under ``corruptions`` (was
``artifacts``). 2: per-subject corruption draws, sigma in standardised units, region
certificates, the censored min_eps median, the corrupted-scan mean, flags, data, commit and
date. Versions 2 and 3 are read and converted (:func:`upgrade_card`: their numbers mean what
version 4's do; what they did not record is null); a version-1 card is refused in one line:
its numbers mean something else."""

SCHEMA_FILE = Path(__file__).with_name("card.schema.json")
"""The published schema: :func:`card_schema` written out (a test keeps the two equal)."""

RENAMED_IN_3 = {"budget": "plan", "artifacts": "corruptions"}
"""Version 2's keys (and axis folders) under their version-3 names."""

_STRING_OR_NULL = {"type": ["string", "null"]}
_LARGEST = sys.float_info.max

PLAN = section(
    ("name", "eps"),
    name={"type": "string", "minLength": 1},
    eps={**NUMBERS, "minItems": 1},
    ensemble={**STRINGS, "minItems": 1},
    corruptions=STRINGS,
    sigmas=NUMBERS,
    severities=NUMBERS,
    audit_curve=NUMBERS,
    **{k: {"type": ["integer", "null"]} for k in ("subjects", "steps", "n", "n0", "audit_steps")},
)

RESULT = {
    "type": "object",
    "description": "one number of the card",
    "required": [
        "axis",
        "metric",
        "region",
        "value",
        "ci95",
        "bound",
        "settings",
        "subjects",
        "headline",
    ],
    "properties": {
        "axis": {"type": "string", "description": "the axis (clean, adversarial, worst, ...)"},
        "metric": {"type": "string", "description": "dice, certified_dice, min_eps_median, ..."},
        "region": {"enum": [*REGIONS, None], "description": "WT, TC or ET; null: the scan"},
        "value": NUMBER_OR_NULL,
        "ci95": {
            "description": "95 % t-interval of the mean over the subjects, clipped to [0, 1]; "
            "null: none",
            "oneOf": [{"type": "null"}, {**NUMBERS, "minItems": 2, "maxItems": 2}],
        },
        "bound": {
            "enum": list(BOUNDS),
            "description": "; ".join(f"{k}: {v}" for k, v in BOUNDS.items()),
        },
        "settings": {
            "type": "object",
            "description": "what produced it: attack, eps, norm, steps, ensemble; corruptions, "
            "severities; sigma, n, n0, alpha",
        },
        "subjects": {"oneOf": [{"type": "null"}, STRINGS], "description": "the subjects it used"},
        "headline": {"type": "boolean", "description": "one of the card's headline numbers"},
    },
}

_MODEL = {
    "type": ["object", "null"],
    "required": ["name", "reference", "sha256"],
    "properties": {
        "name": _STRING_OR_NULL,
        "reference": _STRING_OR_NULL,
        "sha256": {"oneOf": [{"type": "null"}, {"type": "string", "pattern": "^[0-9a-f]{64}$"}]},
        "source": {
            "type": "object",
            "description": "for a converted model (advseg import-onnx): the file it came from, "
            "its SHA-256, opset and producer, the converter, how its inputs and outputs were "
            "mapped, and the import's checks against ONNX Runtime",
            "required": ["format", "file", "sha256", "converter"],
            "properties": {
                "format": {"type": "string"},
                "file": {"type": "string"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "opset": {"type": "integer"},
                "converter": {"type": "string"},
            },
        },
    },
}

PROVENANCE = section(
    ("model", "data", "seeds", "software", "hardware", "plan"),
    model=_MODEL,
    reference_model=_MODEL,
    data=section(
        ("source", "kind", "digest", "split", "subjects", "input"),
        source=_STRING_OR_NULL,
        kind={"type": "string"},
        digest=_STRING_OR_NULL,
        split={"type": "string"},
        subjects={"oneOf": [{"type": "null"}, STRINGS]},
        input={
            "type": ["object", "null"],
            "description": "what the model's inputs hold, hence what eps and sigma measure",
            "properties": {
                "normalization": _STRING_OR_NULL,
                "units": {"type": "string"},
                "value_range": {
                    "oneOf": [{"type": "null"}, {**NUMBERS, "minItems": 2, "maxItems": 2}]
                },
                "modalities": STRINGS,
            },
        },
    ),
    seeds={"type": "object", "additionalProperties": INTEGER},
    software={"type": "object", "additionalProperties": _STRING_OR_NULL},
    hardware={"type": "object"},
    plan={"type": "string"},
)

UNRELIABLE = section(
    ("flag", "verdict", "items"),
    flag={"type": "boolean"},
    verdict={"type": "string"},
    items={"type": "array", "items": {"type": "object"}},
)


def card_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``card.json`` at :data:`CARD_VERSION`: the card's
    own fields, then each section built from its axes' schemas in
    :data:`~keras_advseg.workflows.card.table.AXES`.

    Returns:
        The schema as a JSON-serialisable dict.
    """
    properties: dict = {
        "schema": {"const": CARD_SCHEMA},
        "version": {"const": CARD_VERSION},
        "model": {"type": "string"},
        "reference": _STRING_OR_NULL,
        "data_hash": _STRING_OR_NULL,
        "data": {"type": "object"},
        "created": {"type": "string"},
        "commit": _STRING_OR_NULL,
        "flags": {"type": "array", "items": {"type": "object"}},
        "plan": PLAN,
        "seed": INTEGER,
        "claims": {"type": "object", "additionalProperties": {"type": "string"}},
        "keras_advseg": {"type": "string"},
        "provenance": PROVENANCE,
        "results": {"type": "array", "items": RESULT},
        "unreliable": UNRELIABLE,
        "seconds": {"type": "number"},
        "reused": STRINGS,
        "folders": {"type": "object", "additionalProperties": {"type": "string"}},
        "upgraded_from": INTEGER,
    }
    sections = table.sections()
    for name in sections:
        parts: dict = {}
        keyed: dict = {}
        for axis in table.AXES:
            if axis.section != name or axis.schema is None:
                continue
            if axis.key is None:
                parts = axis.schema
            else:
                keyed[axis.key] = axis.schema
        value = {"type": "object", **{k: v for k, v in parts.items() if k != "type"}}
        if keyed:
            value["properties"] = {**value.get("properties", {}), **keyed}
            value["required"] = sorted({*value.get("required", []), *keyed})
        properties[name] = value
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:keras-advseg:robustness-card:{CARD_VERSION}",
        "title": "keras-advseg robustness card",
        "description": "card.json, as advseg card writes it; see the docs' Card schema page",
        "type": "object",
        "required": [
            "schema",
            "version",
            "model",
            "plan",
            "seed",
            "claims",
            "provenance",
            "results",
            "unreliable",
            *sections,
        ],
        "properties": properties,
    }


_VALIDATORS: dict = {}


def _validator():
    """The schema's validator, built once per table of axes."""
    import jsonschema

    axes = table.AXES
    cached = _VALIDATORS.get("current")
    if cached is None or cached[0] is not axes:
        cached = (axes, jsonschema.Draft202012Validator(card_schema()))
        _VALIDATORS["current"] = cached
    return cached[1]


def validate_card(card: dict) -> None:
    """Checks a card against the published schema (:func:`card_schema`, with the
    ``jsonschema`` library) and that every number in it is finite.

    Raises:
        FileFormatError: naming a field that is missing or malformed (the most relevant of
            the schema's errors, as ``jsonschema.exceptions.best_match`` ranks them), and why.
    """
    import jsonschema

    if card.get("schema") != CARD_SCHEMA:
        raise FileFormatError(
            f"card: schema {card.get('schema')!r} is not {CARD_SCHEMA!r}: not a robustness card"
        )
    if card.get("version") != CARD_VERSION:
        raise FileFormatError(
            f"card: version {card.get('version')!r}, written by another keras-advseg (this one "
            f"reads versions 2 to {CARD_VERSION}: sigma, the corruption draws and min_eps "
            "changed meaning); run advseg card again"
        )
    bad = _non_finite(card)
    if bad is not None:
        raise FileFormatError(f"card: {bad} is missing or malformed (not a finite number)")
    # the card as its file holds it (tuples as arrays)
    error = jsonschema.exceptions.best_match(_validator().iter_errors(json.loads(json.dumps(card))))
    if error is not None:
        path = [str(p) for p in error.absolute_path]
        missing = re.match(r"'(.+?)' is a required property", error.message)
        if error.validator == "required" and missing:
            path.append(missing.group(1))  # name the missing field itself
        where = ".".join(path) or "the card"
        raise FileFormatError(f"card: {where} is missing or malformed ({error.message})")


def _non_finite(value, where: str = "") -> str | None:
    """The path of the first NaN or infinite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the card"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _LARGEST:
        return where or "the card"  # an integer no float holds (JSON allows 10**400)
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def upgrade_card(card: dict) -> dict:
    """A card of version 2 or 3 as version 4: version 2's names renamed (``budget`` ->
    ``plan``, ``artifacts`` -> ``corruptions``: the section, its claim and the axis names in
    ``reused``; its corruption folder still ``artifacts/``, recorded in ``folders``); then
    ``provenance`` from what the card recorded (what it did not, such as the model's SHA-256,
    the subjects and the hardware, is null), ``results`` from its sections (without intervals,
    and without subjects but min_eps's, which the card holds) and ``unreliable`` from its
    audit. ``upgraded_from`` records the version it was
    written in. Any other card is returned as it is.

    Args:
        card: A card as read from its file (untrusted input).

    Returns:
        The card, converted in place.

    Raises:
        FileFormatError: a section the conversion reads is malformed.
    """
    version = card.get("version")
    if version not in (2, 3) or card.get("schema") != CARD_SCHEMA:
        return card
    if version == 2:
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
    from keras_advseg.workflows.card.build import recorded_provenance, results_of, unreliable_of

    bad = _non_finite(card)  # before any number is converted
    if bad is not None:
        raise FileFormatError(f"card: {bad} is missing or malformed (not a finite number)")
    try:
        card["provenance"] = recorded_provenance(card)
        card["results"] = results_of(card, None)
        card["unreliable"] = unreliable_of(card)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, ArithmeticError) as exc:
        raise FileFormatError(
            f"card: a malformed version-{version} card ({type(exc).__name__}: {exc})"
        ) from None
    card["version"] = CARD_VERSION
    card["upgraded_from"] = version
    return card


def read_card(path, say=None) -> dict:
    """A ``card.json`` (or the folder holding it) read back and validated (untrusted input); a
    card of version 2 or 3 is converted (:func:`upgrade_card`), with a notice to ``say``.

    Raises:
        FileFormatError: not a card of this schema, or not a readable JSON object (naming the
            file).
    """
    path = Path(path)
    path = path / "card.json" if path.is_dir() else path
    try:
        card = upgrade_card(read_json(path, "card"))
        validate_card(card)
    except FileFormatError as exc:
        message = str(exc)
        raise FileFormatError(message if str(path) in message else f"{path}: {message}") from None
    if say is not None and "upgraded_from" in card:
        say(
            f"note: {path} is a version-{card['upgraded_from']} card, read as version "
            f"{CARD_VERSION}: its numbers are unchanged; its provenance lacks what it did not "
            "record (the model's SHA-256, the subjects, the hardware); run advseg card again "
            "for a complete one"
        )
    card["path"] = str(path.parent)
    return card


def schema_text() -> str:
    """:func:`card_schema` as the published file holds it (indented, keys in order)."""
    return json.dumps(card_schema(), indent=2) + "\n"
