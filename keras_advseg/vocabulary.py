"""The names every layer shares: BraTS regions and labels, MR sequences, metric names, VAFA's
settings.

The lowest module of the package with :mod:`keras_advseg.errors` and :mod:`keras_advseg.io`:
it imports nothing of it, so the metrics, the attacks, the corruptions and the certificates
read these names without depending on :mod:`keras_advseg.config` (which sits above them: it
reads the attack and corruption registries). :mod:`keras_advseg.config` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Regions, labels and sequences
# ---------------------------------------------------------------------------------------------

REGIONS = ("wt", "tc", "et")
"""BraTS evaluation regions: whole tumour, tumour core, enhancing tumour."""

REGION_NAMES = {"wt": "Whole tumour", "tc": "Tumour core", "et": "Enhancing tumour"}
REGION_LABELS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
"""Each region as a set of BraTS labels (0 background, 1 necrotic core, 2 oedema, 4 enhancing)."""
REGION_CLASS_INDICES = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
"""Each region as a set of one-hot class indices (the models' channel 3 is label 4)."""

BRATS_LABELS = (0, 1, 2, 4)
"""Label values of the BraTS-2017 convention, in one-hot index order."""

MODALITIES = ("t1", "t1gd", "t2", "flair")
"""Modality order of every image array the package produces."""

# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

DICE_METRICS = tuple(f"dice_{region}" for region in REGIONS)
QUALITY_METRICS = ("psnr", "ssim", "rmse")

CORRECTIONS = ("holm", "bonferroni")
"""Multiple-testing corrections of a certificate over its voxels
(:func:`keras_advseg.certification.certify`)."""

# ---------------------------------------------------------------------------------------------
# VAFA's settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VafaSetting:
    """A named VAFA setting: block side, the tables' upper bound, the SSIM term and the steps
    (None: the evaluation's own)."""

    block: int
    q_max: float
    ssim: bool
    steps: int | None = None

    def label(self, name: str, steps: int, block: int | None = None) -> str:
        """E.g. ``"VAFA paper: 32^3 blocks, q_max 20, 20 steps, Dice - SSIM"``."""
        loss = "Dice - SSIM" if self.ssim else "Dice"
        return (
            f"VAFA {name}: {block or self.block}^3 blocks, q_max {self.q_max:g}, "
            f"{self.steps or steps} steps, {loss}"
        )


VAFA_SETTINGS = {
    "light": VafaSetting(block=8, q_max=10.0, ssim=False),
    "paper": VafaSetting(block=32, q_max=20.0, ssim=True, steps=20),
}
"""VAFA's named settings (:func:`keras_advseg.attacks.vafa`). ``light``: VAFA's code defaults
(cheap: quick cards and the study); ``paper``: Hanif et al.'s main setting (standard and full
cards)."""

VAFA_SETTING_NAMES = tuple(VAFA_SETTINGS)


def fitting_block(shape, block: int) -> int:
    """The largest of ``block``, ``block / 2``, ... (at least 8) that divides every side of
    ``shape``: a 16^3 volume cannot hold a 32^3 block (VAFA's block for a small input)."""
    while block > 8 and any(int(s) % block for s in shape):
        block //= 2
    return block
