"""The VAFA axis: Dice under the volumetric adversarial frequency attack (a quantisation of
block-DCT coefficients, outside the l-infinity threat model), with its PSNR and SSIM."""

from __future__ import annotations

from keras_advseg.config import REGIONS
from keras_advseg.errors import InputError
from keras_advseg.workflows.card.axes.common import (
    DICE,
    NUMBER_OR_NULL,
    evaluation_rows,
    number,
    prefixed,
    region_means,
    result,
    section,
    subjects_in,
    triple,
)


def read(sources) -> dict:
    """``adversarial.vafa``: its setting and label, Dice, PSNR and SSIM at the first eps."""
    plan = sources.plan
    vafa = sources.summary().attacks["vafa"][plan.eps[0]]
    model_path = sources.model_path
    return {
        "setting": plan.vafa,
        "label": vafa_label(plan, input_grid(model_path) if model_path else None),
        "dice": region_means(vafa),
        "psnr": number(vafa["psnr"]["mean"]),
        "ssim": number(vafa["ssim"]["mean"]),
    }


def claim(plan) -> str:
    return (
        "Outside the l-infinity threat model: a quantisation of block-DCT coefficients; "
        "read its Dice with its PSNR/SSIM."
    )


def rows(card: dict) -> list[tuple[str, str]]:
    vafa = card["adversarial"]["vafa"]
    psnr, ssim = vafa.get("psnr"), vafa.get("ssim")  # an identical volume: infinite PSNR, null
    measure = (
        f"Dice under {vafa.get('label', 'VAFA')} "
        f"(PSNR {'inf' if psnr is None else f'{psnr:.1f}'} dB, "
        f"SSIM {'n/a' if ssim is None else f'{ssim:.3f}'})"
    )
    return [(measure, triple(vafa["dice"]))]


def headline(card: dict) -> dict[str, float]:
    return prefixed("vafa_dice", card["adversarial"]["vafa"]["dice"])


def value(card: dict) -> dict:
    return card["adversarial"]["vafa"]["dice"]


def per_subject(card: dict) -> dict[str, float]:
    return evaluation_rows(card, "vafa", float(card["plan"]["eps"][0]))


def same_setting(card: dict, reference: dict) -> bool:
    """Whether two cards ran the same VAFA setting: another setting is another attack."""
    return vafa_setting(card) == vafa_setting(reference)


def vafa_setting(card: dict) -> str:
    """The VAFA setting a card ran, as it names it (``VAFA light: 8^3 blocks, ...``)."""
    vafa = card["adversarial"]["vafa"]
    return str(vafa.get("label") or vafa.get("setting") or "VAFA (setting not recorded)")


def vafa_label(plan, shape) -> str:
    """VAFA's setting as the card names it, with the block that fitted the model's input."""
    from keras_advseg.config import VAFA_SETTINGS, fitting_block

    setting = VAFA_SETTINGS[plan.vafa]
    block = fitting_block(shape, setting.block) if shape else setting.block
    return setting.label(plan.vafa, plan.steps, block)


def input_grid(model_path) -> tuple[int, ...] | None:
    """The model's input grid, from its stored preprocessing (None: unknown)."""
    from keras_advseg.export import load_preprocessing

    try:
        return tuple(load_preprocessing(model_path).shape)
    except (InputError, TypeError):
        return None


SCHEMA = section(
    ("dice",),
    dice=DICE,
    psnr=NUMBER_OR_NULL,  # an identical volume has infinite PSNR, stored as null
    ssim=NUMBER_OR_NULL,
    setting={"type": "string"},
    label={"type": "string"},
)
"""``card.json``'s ``adversarial.vafa``."""


def results(card: dict, sources=None) -> list[dict]:
    """Dice under VAFA per region: upper bounds outside the l-infinity threat model."""
    vafa = card["adversarial"]["vafa"]
    settings = {"attack": "vafa", "setting": vafa.get("setting"), "psnr": vafa.get("psnr")}
    subjects = subjects_in(sources, "adversarial", "per_subject.csv")
    return [
        result(
            "vafa", "dice", vafa["dice"][r], "upper", region=r, settings=settings, subjects=subjects
        )
        for r in REGIONS
    ]
