"""What every corruption shares: :func:`corrupt` (by name and severity), the random draws, rigid motion.

A corruption is a pure function of a native scan, deterministic from its seed. Each MR
sequence is a separate acquisition, so a scanner corruption draws its parameters for each
sequence on its own; the draws are unit-scaled numbers that the severity's parameters then
scale, so that the same seed gives the same motion, field or spike direction at every
severity, only larger.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from keras_advseg.data.subject import MODALITIES
from keras_advseg.errors import InputError

SEVERITIES = (1, 2, 3, 4, 5)
"""The graded levels; 0 is the clean scan."""


def corrupt(
    image: np.ndarray,
    name: str,
    severity: int,
    *,
    spacing=(1.0, 1.0, 1.0),
    seed: int = 0,
    modalities=None,
    keep_background: bool = True,
) -> np.ndarray:
    """A native scan as the scanner or the operator could have delivered it.

    Args:
        image: ``(X, Y, Z, C)`` volume in its source intensities, sequences in
            :data:`~keras_advseg.data.MODALITIES` order.
        name: A registered corruption (:data:`~keras_advseg.corruptions.CORRUPTIONS`).
        severity: 0 (the clean scan, returned as a copy) to 5; the parameters of each level
            are in :func:`~keras_advseg.corruptions.severity_table`.
        spacing: Voxel size in mm along the three axes.
        seed: Seed of every random draw.
        modalities: The sequences the corruption may touch (names such as ``"flair"`` or
            channel indices); None: all of them.
        keep_background: Put back the zeros outside the brain: BraTS scans are skull-stripped
            after acquisition, so an artifact of the acquisition leaves no signal outside the
            brain mask of the delivered scan.

    Returns:
        The corrupted float32 volume, same shape; finite.

    Raises:
        InputError: unknown name, severity outside 0-5, a bad ``spacing``, an unknown sequence
            in ``modalities``, or an image that is not ``(X, Y, Z, C)``.
    """
    from keras_advseg.corruptions.registry import CORRUPTIONS

    entry = CORRUPTIONS.get(name)
    image = np.asarray(image)
    if image.ndim != 4 or min(image.shape) < 1:
        raise InputError(f"image must be (X, Y, Z, C). Received: shape {image.shape}")
    if int(severity) != severity or not 0 <= severity <= max(SEVERITIES):
        raise InputError(f"severity must be an integer 0-5. Received: severity={severity!r}")
    spacing = _spacing(spacing)
    channels = _channels(modalities, image.shape[-1])
    clean = image.astype(np.float32)
    if severity == 0:
        return clean.copy()
    params = {key: values[int(severity) - 1] for key, values in entry.levels.items()}
    function = entry.load()
    if entry.per_sequence:
        out = clean.copy()
        for c in channels:
            rng = draws(seed, entry.name, c)
            out[..., c] = function(
                clean[..., c].astype(np.float64), spacing=spacing, rng=rng, **params
            )
    else:
        rng = draws(seed, entry.name, -1)
        out = function(clean, spacing=spacing, rng=rng, channels=channels, **params)
    out = np.nan_to_num(out.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if keep_background:
        out = np.where(np.any(clean != 0, axis=-1, keepdims=True), out, 0).astype(np.float32)
    return out


def draws(seed: int, name: str, channel: int) -> np.random.Generator:
    """The random stream of one corruption on one sequence (-1: the whole scan); independent of
    which other sequences are corrupted."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), channel + 1])


def rigid(volume: np.ndarray, spacing, degrees, translation_mm, order: int = 1) -> np.ndarray:
    """A volume moved rigidly: rotated about its centre by ``degrees`` (about x, y, z, in that
    order) and shifted by ``translation_mm``, in physical (mm) space; 0 where it leaves the field.

    Returns:
        The moved volume, same shape and dtype as ``volume`` (float).
    """
    spacing = np.asarray(spacing, np.float64)
    rotation = rotation_matrix(np.radians(np.asarray(degrees, np.float64)))
    scale, unscale = np.diag(spacing), np.diag(1.0 / spacing)
    matrix = unscale @ rotation.T @ scale  # output voxel -> input voxel (about the centre)
    centre = (np.asarray(volume.shape, np.float64) - 1) / 2
    offset = centre - matrix @ centre - unscale @ rotation.T @ np.asarray(translation_mm, float)
    if np.allclose(matrix, np.eye(3)) and np.allclose(offset, 0):
        return volume.copy()
    return ndimage.affine_transform(volume, matrix, offset, order=order, mode="constant", cval=0.0)


def rotation_matrix(radians) -> np.ndarray:
    """``Rz @ Ry @ Rx`` of rotations about the x, y and z axes."""
    ax, ay, az = radians
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def check_modalities(text) -> tuple[str, ...]:
    """Sequence names from ``"t1,t1gd"`` (or a sequence of names), checked.

    Raises:
        InputError: an unknown sequence, naming the known ones.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown or not names:
        raise InputError(
            f"modalities must name sequences among {', '.join(MODALITIES)}. Received: {text!r}"
        )
    return tuple(dict.fromkeys(names))


def _spacing(spacing) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        raise InputError(f"spacing must be three positive sizes in mm. Received: {spacing!r}")
    return values


def _channels(modalities, n_channels: int) -> tuple[int, ...]:
    if modalities is None:
        return tuple(range(n_channels))
    if isinstance(modalities, (str, int)):
        modalities = (modalities,)
    found = []
    for m in modalities:
        if isinstance(m, str) and m.lower() in MODALITIES:
            found.append(MODALITIES.index(m.lower()))
        elif isinstance(m, (int, np.integer)) and 0 <= int(m) < n_channels:
            found.append(int(m))
        else:
            raise InputError(
                f"modalities must name sequences among {', '.join(MODALITIES)}. Received: {m!r}"
            )
    if not found:
        raise InputError("modalities must name at least one sequence")
    return tuple(sorted(set(found)))
