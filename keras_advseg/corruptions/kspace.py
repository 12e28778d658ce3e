"""Artifacts of the acquisition in k-space: rigid motion, ghosting, spikes.

Algorithms after TorchIO (``RandomMotion`` after Shaw et al. 2019, ``RandomGhosting``,
``RandomSpike``); ROOD-MRI's (Boone et al. 2023) five levels for motion and ghosting. An MR
image is the magnitude of the inverse Fourier transform of what the scanner recorded, so each
corrupted spectrum is returned as a magnitude image, as TorchIO returns it (``np.abs``). Ghosting
and the spike change k-space symmetrically, so their image stays real and the magnitude only
folds its (rare) negative ringing up; motion's spectrum, assembled from differently moved
copies, is not symmetric, and its imaginary part (the phase of the moved copies) is part of the
ghosts the scanner shows. A volume that had negative values (not a magnitude image: a z-scored
one) keeps the real part instead, which keeps its sign.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from keras_advseg.corruptions.core import note, rigid


def motion(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    degrees: float,
    translation_mm: float,
    movements: int,
    axis: int = 2,
    record: dict | None = None,
) -> np.ndarray:
    """Rigid motion during the acquisition: k-space filled in segments, each from the head in
    another position.

    ``movements`` times in (0, 1) split the k-space lines along ``axis`` into segments; segment
    ``j`` is taken from the spectrum of the volume moved by the ``j``-th rotation (each angle
    uniform in ``[-degrees, degrees]``) and translation (each component uniform in
    ``[-translation_mm, translation_mm]``). The segment holding the k-space centre comes from the
    volume in its original position, as TorchIO's ``Motion``: the image keeps its place and
    contrast, and the movements show as ghosts and blurring. Without movement (0 degrees, 0 mm)
    it is the identity.

    Args:
        volume: ``(X, Y, Z)`` intensities of one sequence.
        spacing: Voxel size (mm).
        rng: The random stream; draws are unit-scaled and the first ``movements`` of ten are
            used, so a higher level shares the lower one's first directions, larger, but moves
            more often and at other times.
        degrees, translation_mm, movements: The level's largest rotation and translation and the
            number of movements (ROOD-MRI: 1-5 degrees, 2-10 mm, 2-10 movements).
        axis: The axis whose k-space lines are split (TorchIO's: the last).
        record: Receives the drawn ``degrees`` and ``translation_mm`` of each movement and its
            ``times`` (fractions of the acquisition).

    Returns:
        The corrupted volume.
    """
    unit_angles = rng.uniform(-1, 1, (10, 3))
    unit_shifts = rng.uniform(-1, 1, (10, 3))
    jitter = rng.uniform(-1, 1, 10)
    n = int(movements)
    step = 1.0 / (n + 1)
    times = np.arange(1, n + 1) * step + jitter[:n] * step * 0.3
    note(
        record,
        degrees=degrees * unit_angles[:n],
        translation_mm=translation_mm * unit_shifts[:n],
        times=times,
    )
    moved = [volume] + [
        rigid(volume, spacing, degrees * unit_angles[j], translation_mm * unit_shifts[j])
        for j in range(n)
    ]
    centre_segment = int(np.flatnonzero(times > 0.5)[0]) if np.any(times > 0.5) else n
    moved[0], moved[centre_segment] = moved[centre_segment], moved[0]
    size = volume.shape[axis]
    bounds = [0, *(np.clip((times * size).astype(int), 0, size)).tolist(), size]
    spectrum = np.empty(volume.shape, np.complex128)
    for j, image in enumerate(moved):
        if bounds[j + 1] <= bounds[j]:
            continue
        part = fft.fftshift(fft.fftn(image, workers=-1))
        index = [slice(None)] * 3
        index[axis] = slice(bounds[j], bounds[j + 1])
        spectrum[tuple(index)] = part[tuple(index)]
    return _magnitude_image(spectrum, volume, shifted=True)


def ghosting(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    ghosts: int,
    intensity: float,
    axes=(0, 1),
    record: dict | None = None,
) -> np.ndarray:
    """Ghosts along the phase-encoding axis: every ``ghosts``-th k-space plane attenuated.

    The planes whose frequency along the phase-encoding axis (drawn from ``axes``, ROOD-MRI's
    0 and 1) is a multiple of ``ghosts`` are multiplied by ``1 - intensity``; the centre plane
    (frequency 0) is kept, as TorchIO's ``Ghosting`` keeps it. The planes are counted from the
    centre, not from the edge as in TorchIO, so the set is symmetric and the image stays real.

    Args:
        volume: ``(X, Y, Z)`` intensities.
        spacing: Unused (the artifact is defined on the sampling grid).
        rng: Draws the axis.
        record: Receives the drawn ``axis``.
        ghosts, intensity: The level's plane period and strength relative to the plane
            (ROOD-MRI's: 3, 5, ..., 11 ghosts with 0.5 ... 2.5). With a period of ``n`` the
            attenuated planes' signal spreads over ``n`` copies, so fewer ghosts are stronger
            ones; ROOD-MRI's order (3 ghosts with the weakest intensity) can make a higher level
            closer to the clean image than a lower one, so the levels here pair the period 11
            with 0.5 down to 3 with 2.5, and each level lies further from the clean image.

    Returns:
        The corrupted volume.
    """
    axis = int(rng.choice(axes))
    note(record, axis=axis)
    spectrum = fft.fftn(volume, workers=-1)
    frequencies = np.rint(fft.fftfreq(volume.shape[axis]) * volume.shape[axis]).astype(int)
    chosen = (frequencies % int(ghosts) == 0) & (frequencies != 0)
    shape = [1, 1, 1]
    shape[axis] = -1
    factor = np.where(chosen, 1.0 - float(intensity), 1.0).reshape(shape)
    return _magnitude_image(spectrum * factor, volume, shifted=False)


def spike(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    intensity: float,
    record: dict | None = None,
) -> np.ndarray:
    """A spike in k-space (herringbone or corduroy artifact): stripes across the image.

    One k-space point, uniform over the spectrum but not its centre (a spike there only changes
    the brightness), gains ``intensity`` times the spectrum's largest magnitude, half at the
    point and half, conjugate, at its mirror, which is what TorchIO's one-sided spike gives once
    the real part is taken. TorchIO's default intensities are 1-3; ROOD-MRI has no spike level,
    so the five levels here are 0.2-1.0, the first already a visible stripe pattern.

    Args:
        volume: ``(X, Y, Z)`` intensities.
        spacing: Unused.
        rng: Draws the position.
        intensity: The level's spike height relative to the spectrum's maximum.
        record: Receives the drawn k-space ``position`` (FFT index order, frequency 0 first).

    Returns:
        The corrupted volume.
    """
    spectrum = fft.fftn(volume, workers=-1)
    shape = np.array(volume.shape)
    while True:
        position = np.floor(rng.uniform(0, 1, 3) * shape).astype(int)
        if position.any():
            break
    mirror = tuple((-position) % shape)
    note(record, position=position)
    height = float(intensity) * float(np.abs(spectrum).max())
    spectrum[tuple(position)] += height / 2
    spectrum[mirror] += height / 2
    return _magnitude_image(spectrum, volume, shifted=False)


def _magnitude_image(spectrum: np.ndarray, volume: np.ndarray, *, shifted: bool) -> np.ndarray:
    if shifted:
        spectrum = fft.ifftshift(spectrum)
    image = fft.ifftn(spectrum, workers=-1)
    return np.abs(image) if volume.min() >= 0 else image.real
