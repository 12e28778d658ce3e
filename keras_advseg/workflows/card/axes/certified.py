"""The certified axis: randomized smoothing's certificates (``advseg certify``) per sigma:
class-wise and per-region certified Dice, the smoothed model's own Dice, abstentions, and the
l2 radius with the l-infinity budget it covers. Guarantees for the smoothed model."""

from __future__ import annotations

from keras_advseg.config import REGIONS
from keras_advseg.errors import FileFormatError
from keras_advseg.workflows.card.axes.common import (
    DICE,
    NUMBER_OR_NULL,
    PER_REGION,
    by_number,
    card_folder,
    number,
    prefixed,
    read_rows,
    result,
    section,
    subject_mean,
    subjects_in,
    triple,
)

SUMMARY = "certify_summary.json"


def read(sources) -> dict:
    """The ``certified`` section, ``{sigma: its certificate}``.

    Raises:
        FileFormatError: the summary is of sigma in another unit (an older certificate).
    """
    summary = sources.document("certified", SUMMARY)
    settings = summary.get("settings") or {}
    if not str(settings.get("sigma_unit") or "").startswith("standardised"):
        raise FileFormatError(
            f"{sources.folder('certified') / SUMMARY}: sigma in another unit (certified "
            "before sigma was defined in standardised units); certify again"
        )
    return {sigma: _certificate(m) for sigma, m in summary["sigmas"].items()}


def _certificate(m: dict) -> dict:
    return {
        "sigma_unit": "standardised",
        "certified_dice": {r: number(m[f"certified_dice_{r}"]) for r in REGIONS},
        "region_certified_dice": {r: number(m.get(f"region_certified_dice_{r}")) for r in REGIONS},
        "smoothed_dice": {r: number(m[f"smoothed_dice_{r}"]) for r in REGIONS},
        "abstain_rate_brain": number(m["abstain_rate_brain"]),
        # the class-wise certificate's abstentions inside each reference region
        "abstain_rate_region": {r: number(m.get(f"abstain_rate_{r}")) for r in REGIONS},
        "radius": number(m["radius"]),
        "radius_raw": {k: number(m.get(f"radius_raw_{k}")) for k in ("t1", "t1gd", "t2", "flair")},
        "linf": number(m["linf"]),
    }


def claim(plan) -> str:
    return (
        f"Guarantees for the smoothed model (not the network), at family-wise error 0.001 "
        f"per volume, in l2 radius sigma * 0.674, sigma {', '.join(map(str, plan.sigmas))}"
        f" in standardised units (tissue standard deviations of each sequence), n = "
        f"{plan.n}; class-wise (SegCertify, Holm over the voxels) and per region (WT, TC, ET "
        "each certified as its own region, Holm over voxels x regions), each family at "
        "0.001; the l-infinity budget they cover is tiny (see linf)."
    )


def rows(card: dict) -> list[tuple[str, str]]:
    rows = []
    for sigma, value in card["certified"].items():
        rows.append(
            (
                f"certified Dice, class-wise, sigma {sigma} std (l2 radius "
                f"{value['radius']:.3g} std, l-inf {value['linf']:.2g})",
                triple(value["certified_dice"]),
            )
        )
        if any(v is not None for v in value.get("region_certified_dice", {}).values()):
            rows.append(
                (
                    f"certified Dice, each region certified as its own, sigma {sigma}",
                    triple(value["region_certified_dice"]),
                )
            )
        rows.append(
            (
                f"the smoothed model's own Dice (not certified), sigma {sigma}",
                triple(value["smoothed_dice"]),
            )
        )
        if any(v is not None for v in value.get("abstain_rate_region", {}).values()):
            rows.append(
                (
                    f"abstaining share inside the reference region, sigma {sigma}",
                    triple(value["abstain_rate_region"], "{:.1%}"),
                )
            )
        rows.append(
            (
                f"abstaining share of the brain, sigma {sigma}",
                f"{value['abstain_rate_brain']:.1%}",
            )
        )
    return rows


def headline(card: dict) -> dict[str, float]:
    flat = {}
    for sigma, value in card["certified"].items():
        flat.update(prefixed(f"certified_dice_sigma{sigma}", value["certified_dice"]))
        if "region_certified_dice" in value:
            flat.update(
                prefixed(f"region_certified_dice_sigma{sigma}", value["region_certified_dice"])
            )
    return flat


def middle(card: dict) -> dict:
    """The certificate at the card's middle sigma."""
    sigmas = sorted(card["certified"], key=float)
    return card["certified"][sigmas[len(sigmas) // 2]]


def value(card: dict) -> dict:
    """Class-wise certified Dice at the middle sigma."""
    return middle(card)["certified_dice"]


def region_value(card: dict) -> dict:
    """Per-region certified Dice at the middle sigma (None for a certificate without them)."""
    return middle(card).get("region_certified_dice") or dict.fromkeys(REGIONS)


def per_subject(card: dict) -> dict[str, float]:
    return _middle_rows(card, "certified_dice")


def region_per_subject(card: dict) -> dict[str, float]:
    return _middle_rows(card, "region_certified_dice")


def _middle_rows(card: dict, prefix: str) -> dict[str, float]:
    rows = read_rows(card_folder(card, "certified") / "certified.csv")
    sigmas = sorted({r["sigma"] for r in rows}, key=float)
    middle = sigmas[len(sigmas) // 2] if sigmas else None
    if rows and f"{prefix}_wt" not in rows[0]:
        return {}  # a certificate from before region certificates: nothing to test
    return {r["subject"]: subject_mean(r, prefix) for r in rows if r["sigma"] == middle}


SCHEMA = by_number(
    section(
        ("certified_dice",),
        sigma_unit={"type": "string"},
        certified_dice=DICE,
        region_certified_dice=DICE,
        smoothed_dice=DICE,
        abstain_rate_brain=NUMBER_OR_NULL,
        abstain_rate_region=PER_REGION,
        radius={"type": "number"},
        radius_raw=PER_REGION,
        linf={"type": "number"},
    ),
    1,
    "sigma",
)
"""``card.json``'s ``certified``: one entry per sigma."""


def results(card: dict, sources=None) -> list[dict]:
    """Certified Dice (class-wise and per region) per sigma and region: guarantees for the
    smoothed model; the class-wise one at the middle sigma (the leaderboard's) is a headline
    number."""
    plan = card["plan"]
    subjects = subjects_in(sources, "certified", "certified.csv")
    alpha = None
    if sources is not None:
        settings = sources.document("certified", "certify_summary.json").get("settings")
        alpha = settings.get("alpha") if isinstance(settings, dict) else None
    entries = []
    ranked = sorted(card["certified"], key=float)
    chosen = ranked[len(ranked) // 2] if ranked else None  # the leaderboard's (middle) sigma
    for sigma, value in card["certified"].items():
        settings = {
            "sigma": float(sigma),
            "sigma_unit": value.get("sigma_unit"),
            "radius_l2": value.get("radius"),
            "n": plan.get("n"),
            "n0": plan.get("n0"),
            "alpha": alpha,
        }
        for metric in ("certified_dice", "region_certified_dice"):
            if metric in value:
                entries += [
                    result(
                        "certified",
                        metric,
                        value[metric][r],
                        "guarantee",
                        region=r,
                        settings=settings,
                        subjects=subjects,
                        headline=sigma == chosen and metric == "certified_dice",
                    )
                    for r in REGIONS
                ]
    return entries
