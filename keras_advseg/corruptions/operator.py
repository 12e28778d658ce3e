"""Operator errors: what reaches the model when the sequences are wrong, not the signal.

The pipeline checks none of these (four files of the right shape arrive), which is why they
are worth measuring: a missing series, two series filed under each other's names, one series
not aligned with the others.
"""

from __future__ import annotations

import math

import numpy as np

from keras_advseg.corruptions.core import note, rigid


def missing_sequence(
    image: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    channels,
    fraction: float,
    record: dict | None = None,
) -> np.ndarray:
    """A sequence that did not arrive, or arrived incomplete: its top ``fraction`` of axial
    slices (axis 2) are zeros; at the highest level (fraction 1) the whole sequence is missing.

    What the pipeline then receives is an all-zero volume for that sequence (what a converter
    writes for an absent series, and what BraTS-style pipelines impute); after the global
    standardisation that is ``-mean / std`` inside the brain. One sequence is drawn from
    ``channels``.
    """
    out = image.copy()
    c = int(rng.choice(channels))
    start = _first_slice(image, fraction)
    out[:, :, start:, c] = 0
    note(record, sequence=c, first_slice=start)
    return out


def swapped_sequences(
    image: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    channels,
    fraction: float,
    record: dict | None = None,
) -> np.ndarray:
    """Two sequences filed under each other's names (e.g. T1 and T1Gd): their top ``fraction``
    of axial slices are exchanged. Levels 1-4 are slices sorted into the wrong series (two
    series that share a series number); level 5 (fraction 1) is the whole swap. The pair is
    drawn from ``channels`` (at least two).
    """
    if len(channels) < 2:
        from keras_advseg.errors import InputError

        raise InputError("swapped-sequences needs at least two sequences in modalities")
    a, b = (int(c) for c in rng.choice(channels, 2, replace=False))
    out = image.copy()
    start = _first_slice(image, fraction)
    out[:, :, start:, a] = image[:, :, start:, b]
    out[:, :, start:, b] = image[:, :, start:, a]
    note(record, sequences=[a, b], first_slice=start)
    return out


def misregistration(
    image: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    channels,
    degrees: float,
    translation_mm: float,
    record: dict | None = None,
) -> np.ndarray:
    """One sequence not registered to the others: rotated by ``degrees`` about a random axis
    through the centre and shifted by ``translation_mm`` in a random direction (1-5 degrees and
    mm). The sequence is drawn from ``channels``."""
    c = int(rng.choice(channels))
    axis = _unit(rng)
    direction = _unit(rng)
    # a rotation of `degrees` about `axis`, as the x-y-z angles of its matrix
    angles = _euler_angles(_axis_angle(axis, math.radians(degrees)))
    note(
        record,
        sequence=c,
        rotation_axis=axis,
        rotation_degrees=degrees,
        translation_mm=translation_mm * direction,
    )
    out = image.copy()
    out[..., c] = rigid(
        image[..., c].astype(np.float64), spacing, np.degrees(angles), translation_mm * direction
    )
    return out


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / max(np.linalg.norm(v), 1e-12)


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _euler_angles(matrix: np.ndarray) -> np.ndarray:
    """The x, y, z angles (radians) of ``matrix = Rz @ Ry @ Rx``."""
    ay = -math.asin(max(-1.0, min(1.0, matrix[2, 0])))
    ax = math.atan2(matrix[2, 1], matrix[2, 2])
    az = math.atan2(matrix[1, 0], matrix[0, 0])
    return np.array([ax, ay, az])


def _first_slice(image: np.ndarray, fraction: float) -> int:
    """The first of the top ``fraction`` of ``image``'s axial slices (axis 2)."""
    return image.shape[2] - int(math.ceil(fraction * image.shape[2]))
