"""The audit axis: the gradient-masking audit's verdict and items (``advseg audit``), and
whether one of its checks found a lower Dice than the card's worst case."""

from __future__ import annotations

from keras_advseg.workflows.card.axes.common import section


def read(sources) -> dict:
    """The ``audit`` section: the verdict and each item's number, claim and verdict."""
    document = sources.document("audit", "audit.json")
    return {
        "verdict": document["verdict"],
        "items": [
            {"number": i.get("item"), "claim": i.get("claim"), "verdict": i.get("verdict")}
            for i in document.get("items", [])
        ],
    }


def lower_bound(sources) -> dict | None:
    """``adversarial.audit_lower``: :func:`audit_found_lower` of the audit's items."""
    return audit_found_lower(sources.document("audit", "audit.json").get("items", []))


def claim(plan) -> str:
    return (
        "A PASS means no gradient-masking symptom was found at this budget, not that there is none."
    )


def rows(card: dict) -> list[tuple[str, str]]:
    audit = card["audit"]
    items = ", ".join(f"{i['number']}: {i['verdict']}" for i in audit["items"])
    return [("gradient-masking audit", f"{audit['verdict']} ({items})")]


def headline(card: dict) -> dict[str, float]:
    return {"card.audit_pass": 1.0 if card["audit"]["verdict"] == "PASS" else 0.0}


def verdict(card: dict) -> str:
    return card["audit"]["verdict"]


def audit_found_lower(items: list) -> dict | None:
    """The audit's strongest check when it took mean Dice below the worst case it compared with
    by more than its margin (items 4-7: restarts, transfer, softened or cross-entropy PGD,
    random search), else None: the card then says that its worst case is not the tightest
    bound measured. The audit's subjects are a subset of the card's, so the two means are
    compared as the audit compares them, on the audit's subjects.

    Args:
        items: ``audit.json``'s items (untrusted: anything malformed counts as absent).
    """
    numbers = {i.get("item"): i.get("numbers") or {} for i in items if isinstance(i, dict)}
    try:
        white_box = float(numbers[1]["worst_case"])
        margin = float(numbers[3].get("margin", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    found = {
        4: numbers.get(4, {}).get("best_of"),
        5: numbers.get(5, {}).get("transfer"),
        6: min((numbers.get(6, {}).get("variants") or {}).values(), default=None),
        7: numbers.get(7, {}).get("random_search"),
    }
    found = {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}
    if not found:
        return None
    item = min(found, key=found.get)
    if found[item] >= white_box - margin:
        return None
    return {"item": item, "dice": found[item], "white_box": white_box, "margin": margin}


SCHEMA = section(
    ("verdict",),
    verdict={"enum": ["PASS", "WARN"]},
    items={"type": "array", "items": {"type": "object"}},
)
"""``card.json``'s ``audit``."""


def results(card: dict, sources=None) -> list[dict]:
    """None: the audit's word is the card's ``unreliable`` flag (:func:`unreliable`)."""
    return []


def unreliable(card: dict) -> dict:
    """``card.json``'s ``unreliable``: flagged when the audit did not PASS (a symptom of
    gradient masking makes the attacked numbers suspect, as RobustBench's flag), with the
    items that did not pass."""
    audit = card["audit"]
    items = [
        {k: i.get(k) for k in ("number", "claim", "verdict")}
        for i in audit.get("items", [])
        if isinstance(i, dict) and i.get("verdict") not in ("PASS", "SKIP")
    ]
    return {"flag": audit["verdict"] != "PASS", "verdict": audit["verdict"], "items": items}
