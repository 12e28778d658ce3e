"""The corruption registry: every MRI artifact and operator error, its five levels in physical units.

An entry's ``levels`` maps each parameter of its function to its values at severities 1-5;
``kind`` is ``"scanner"`` (physics of the acquisition) or ``"operator"``; ``per_sequence``
says whether each sequence gets its own draw (``function(volume, *, spacing, rng, **level)``)
or the corruption acts on the whole scan (``function(image, *, spacing, rng, channels,
**level)``). ROOD-MRI's (Boone et al. 2023) levels where it defines them.

This module imports neither TensorFlow nor SciPy.
"""

from __future__ import annotations

from keras_advseg.registry import Registry

CORRUPTIONS = Registry("corruption")
"""Every corruption of ``advseg corruptions`` and ``train --defense corruptions``."""

_M = "keras_advseg.corruptions."


def _levels(**values) -> dict[str, tuple]:
    for key, v in values.items():
        if len(v) != 5:
            raise ValueError(f"{key}: five levels expected")
    return {k: tuple(v) for k, v in values.items()}


_TOP_SLICES = {
    "levels": _levels(fraction=(0.2, 0.4, 0.6, 0.8, 1.0)),
    "units": {"fraction": "of axial slices"},
}
"""The levels of the operator errors that reach the top axial slices: a fifth more each, all of
them at level 5."""

CORRUPTIONS.register(
    "motion",
    display="Motion",
    target=f"{_M}kspace:motion",
    description="rigid head motion during the acquisition (k-space segments from moved copies)",
    kind="scanner",
    per_sequence=True,
    levels=_levels(
        degrees=(1, 2, 3, 4, 5), translation_mm=(2, 4, 6, 8, 10), movements=(2, 4, 6, 8, 10)
    ),
    units={"degrees": "degrees", "translation_mm": "mm", "movements": "movements"},
)
CORRUPTIONS.register(
    "ghosting",
    display="Ghosting",
    target=f"{_M}kspace:ghosting",
    description="ghosts along the phase-encoding axis (every n-th k-space plane attenuated)",
    kind="scanner",
    per_sequence=True,
    levels=_levels(ghosts=(11, 9, 7, 5, 3), intensity=(0.5, 1.0, 1.5, 2.0, 2.5)),
    units={"ghosts": "plane period", "intensity": "x plane"},
)
CORRUPTIONS.register(
    "spike",
    display="Spike",
    target=f"{_M}kspace:spike",
    description="a k-space spike: herringbone stripes",
    kind="scanner",
    per_sequence=True,
    levels=_levels(intensity=(0.2, 0.4, 0.6, 0.8, 1.0)),
    units={"intensity": "x spectrum maximum"},
)
CORRUPTIONS.register(
    "bias-field",
    display="Bias field",
    target=f"{_M}intensity:bias_field",
    description="coil inhomogeneity: exp of a 3rd-order polynomial",
    kind="scanner",
    per_sequence=True,
    levels=_levels(coefficient=(0.3, 0.6, 0.9, 1.2, 1.5)),
    units={"coefficient": "largest magnitude"},
)
CORRUPTIONS.register(
    "rician-noise",
    display="Rician noise",
    target=f"{_M}intensity:rician_noise",
    description="magnitude-image noise, relative to each sequence's standard deviation",
    kind="scanner",
    per_sequence=True,
    levels=_levels(relative_std=(0.16, 0.32, 0.48, 0.64, 0.8)),
    units={"relative_std": "x volume std"},
)
CORRUPTIONS.register(
    "blur",
    display="Blur",
    target=f"{_M}intensity:blur",
    description="Gaussian smoothing (standard deviation in mm)",
    kind="scanner",
    per_sequence=True,
    levels=_levels(sigma_mm=(0.8, 1.6, 2.4, 3.2, 4.0)),
    units={"sigma_mm": "mm"},
)
CORRUPTIONS.register(
    "contrast-compression",
    display="Contrast compression",
    target=f"{_M}intensity:contrast",
    description="gamma < 1 within each sequence's range",
    kind="scanner",
    per_sequence=True,
    levels=_levels(gamma=(0.86, 0.72, 0.58, 0.44, 0.3)),
    units={"gamma": "gamma"},
)
CORRUPTIONS.register(
    "contrast-expansion",
    display="Contrast expansion",
    target=f"{_M}intensity:contrast",
    description="gamma > 1 within each sequence's range",
    kind="scanner",
    per_sequence=True,
    levels=_levels(gamma=(1.4, 1.8, 2.2, 2.6, 3.0)),
    units={"gamma": "gamma"},
)
CORRUPTIONS.register(
    "anisotropic",
    display="Thick slices",
    target=f"{_M}intensity:anisotropic",
    description="one axis acquired coarser (slab-averaged), interpolated back",
    kind="scanner",
    per_sequence=True,
    levels=_levels(factor=(2.8, 4.6, 6.4, 8.2, 10.0)),
    units={"factor": "x voxel size"},
)
CORRUPTIONS.register(
    "missing-sequence",
    display="Missing sequence",
    target=f"{_M}operator:missing_sequence",
    description="one sequence incomplete (top axial slices zero); level 5: absent (all zero)",
    kind="operator",
    per_sequence=False,
    **_TOP_SLICES,
)
CORRUPTIONS.register(
    "swapped-sequences",
    display="Swapped sequences",
    target=f"{_M}operator:swapped_sequences",
    description="two sequences exchanged (top axial slices); level 5: the whole swap",
    kind="operator",
    per_sequence=False,
    **_TOP_SLICES,
)
CORRUPTIONS.register(
    "misregistration",
    display="Misregistration",
    target=f"{_M}operator:misregistration",
    description="one sequence rotated and shifted against the others",
    kind="operator",
    per_sequence=False,
    levels=_levels(degrees=(1, 2, 3, 4, 5), translation_mm=(1, 2, 3, 4, 5)),
    units={"degrees": "degrees", "translation_mm": "mm"},
)


def severity_table() -> list[dict]:
    """One row per corruption: name, display, kind, and each parameter's five levels with its unit
    (the documentation's table and ``advseg evaluate --help`` read it)."""
    rows = []
    for entry in CORRUPTIONS:
        parameters = {
            f"{key} ({entry.units[key]})": list(values) for key, values in entry.levels.items()
        }
        rows.append(
            {"name": entry.name, "display": entry.display, "kind": entry.kind, **parameters}
        )
    return rows


def parse_corruptions(text: str) -> tuple[str, ...]:
    """``all``, ``scanner``, ``operator`` or a comma-separated list of names.

    Raises:
        InputError: an unknown name, listing the known ones.
    """
    from keras_advseg.errors import InputError

    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise InputError("name at least one corruption, or all")
    chosen: list[str] = []
    for name in names:
        if name == "all":
            found = CORRUPTIONS.names()
        elif name in ("scanner", "operator"):
            found = CORRUPTIONS.names(kind=name)
        else:
            found = (CORRUPTIONS.canonical(name),)
        chosen += [f for f in found if f not in chosen]
    return tuple(chosen)


def parse_severities(text: str) -> tuple[int, ...]:
    """``1-5``, ``3`` or ``1,3,5``: severities 1-5 (0, the clean scan, is always scored).

    Raises:
        InputError: anything else.
    """
    from keras_advseg.errors import InputError

    found: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(p) for p in part.split("-", 1))
                found += list(range(low, high + 1))
            elif part:
                found.append(int(part))
    except ValueError:
        found = []
    if not found or any(not 1 <= s <= 5 for s in found):
        raise InputError(f"severities must be 1-5, as 1-5, 3 or 1,3,5. Received: {text!r}")
    return tuple(sorted(set(found)))


def every_severity(severities) -> bool:
    """Whether ``severities`` (untrusted: anything not an integer counts as absent) include every
    level 1-5, over which ROOD-MRI's overall and degradation scores are defined (with fewer, the
    overall score is mostly the clean Dice)."""
    try:
        return {1, 2, 3, 4, 5} <= {int(v) for v in severities or ()}
    except (TypeError, ValueError):
        return False
