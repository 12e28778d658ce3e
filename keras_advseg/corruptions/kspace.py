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

from keras_advseg.corruptions.core import note


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
    size = volume.shape[axis]
    bounds, sources = segments(times, size)
    moves = [
        (degrees * unit_angles[m], translation_mm * unit_shifts[m], bounds[j], bounds[j + 1])
        for j, m in enumerate(sources)
        if m is not None and bounds[j + 1] > bounds[j]
    ]
    # single precision (the corrupted scan is float32) and FFT order (no shifts of the volume)
    single = np.asarray(volume, np.float32)
    spectrum = fft.fftn(single, workers=-1)
    _write_moved_segments(spectrum, single, spacing, moves, axis)
    image = fft.ifftn(spectrum, workers=-1, overwrite_x=True)
    return np.abs(image) if volume.min() >= 0 else image.real


def segments(times, size: int) -> tuple[list[int], list[int | None]]:
    """The k-space segments of a motion along an axis of ``size`` lines, and what each shows.

    Args:
        times: The movements' times in (0, 1), ascending: fractions of the lines, counted from
            the lowest frequency.

    Returns:
        ``(bounds, sources)``: segment ``j`` is the lines ``bounds[j]:bounds[j + 1]``;
        ``sources[j]`` is the movement it shows (0-based), None for the volume in place. Segment
        ``j`` shows movement ``j - 1``, except the segment that holds the centre line (frequency
        0, line ``size // 2``), which shows the volume in place, its movement moving to
        segment 0.
    """
    bounds = [0, *np.clip((np.asarray(times) * size).astype(int), 0, size).tolist(), size]
    sources: list[int | None] = [None, *range(len(bounds) - 2)]
    centre = next(j for j in range(len(bounds) - 1) if bounds[j] <= size // 2 < bounds[j + 1])
    sources[0], sources[centre] = sources[centre], sources[0]
    return bounds, sources


def moved_spectra(volume, spacing, moves, *, axis: int = 2) -> list[np.ndarray]:
    """Slabs of the spectra (``fftn(.)``, FFT order) of ``volume`` moved rigidly.

    The spectrum of a moved volume is the original's spectrum moved back: with the voxel map
    ``q = M p + o`` of :func:`~keras_advseg.corruptions.core.rigid_map`, the moved volume's
    transform at angular frequency ``w`` (radians per voxel) is
    ``exp(i w . M^-1 o) F(M^-T w)``, ``F`` the discrete-time Fourier transform of the volume's
    samples. A translation is therefore an exact phase ramp on the volume's own spectrum, and a
    rotation samples ``F`` off the grid with a type-2 non-uniform FFT (FINUFFT, single
    precision, relative tolerance :data:`NUFFT_TOLERANCE`). This is band-limited (sinc)
    resampling of the moved copies, where linear interpolation in image space would blur them,
    and, as in an MR scanner, what moves out of the field of view wraps round to the other side
    (the brain mask of :func:`~keras_advseg.corruptions.core.corrupt` removes it again from the
    background). :func:`motion` computes its segments the same way, every rotated segment in
    one non-uniform FFT whatever the number of movements, in place in the spectrum it
    assembles; this function, which returns each move's slab on its own (slabs may overlap
    here), runs one per move.

    Args:
        volume: ``(X, Y, Z)`` real intensities.
        spacing: Voxel size (mm).
        moves: ``(degrees, translation_mm, start, stop)`` per slab: the movement (as
            :func:`~keras_advseg.corruptions.core.rigid`) and the slab's k-space lines
            ``start:stop`` along ``axis``, counted from the lowest (most negative) frequency:
            the lines :func:`segment_lines` returns.
        axis: The axis the slabs cut.

    Returns:
        One complex array per move: ``fftn`` of the moved volume at the slab's lines
        (``np.take(fftn(moved), segment_lines(n, start, stop), axis)``).
    """
    single = np.asarray(volume, np.float32)
    spectrum = fft.fftn(single, workers=-1)
    out = []
    for move in moves:  # one at a time: the slabs of different moves may overlap here
        moved = spectrum.copy()
        _write_moved_segments(moved, single, spacing, [move], axis)
        out.append(np.take(moved, segment_lines(single.shape[axis], move[2], move[3]), axis))
    return out


NUFFT_TOLERANCE = 1e-4
"""FINUFFT's relative tolerance for the rotated segments (its measured error is about a tenth
of it: 1.5e-5 on a 1 mm scan)."""


def _write_moved_segments(spectrum, volume, spacing, moves, axis: int) -> None:
    """Puts each move's segment of the moved volume's spectrum into ``spectrum``, in place.

    Args:
        spectrum: ``fftn(volume)``, complex64; its segments are replaced.
        volume: ``(X, Y, Z)`` float32 intensities.
        spacing: Voxel size (mm).
        moves: As :func:`moved_spectra`'s, segments that do not overlap.
        axis: The axis the segments cut.
    """
    import finufft

    from keras_advseg.corruptions.core import rigid_map

    shape = volume.shape
    # angular frequencies in FFT order along each of the volume's axes
    frequencies = [2 * np.pi * fft.fftfreq(n) for n in shape]
    # FINUFFT transforms the box that holds the volume's non-zero voxels (its transform is the
    # volume's: the zeros around it add nothing), a smaller grid; its modes are centred on the
    # box's middle, a phase linear in w
    box = _nonzero_box(volume)
    middle = np.array([b.start + (b.stop - b.start) // 2 for b in box], np.float64)
    pieces = []  # (the index of a block of lines, the point matrix M^-T or None, the shift)
    for degrees, translation_mm, start, stop in moves:
        matrix, offset = rigid_map(shape, spacing, degrees, translation_mm)
        inverse = np.linalg.inv(matrix)
        turned = not np.allclose(matrix, np.eye(3))
        # a translation alone: a phase ramp on the spectrum; a rotation also samples it off the
        # grid, FINUFFT's centred modes adding a phase linear in w
        shift = inverse @ (offset - middle) if turned else offset
        for block in _runs(segment_lines(shape[axis], start, stop)):
            index: list = [slice(None)] * 3
            index[axis] = block
            pieces.append((tuple(index), inverse.T if turned else None, shift))
    rotated = [p for p in pieces if p[1] is not None]
    if rotated:
        # the points in the volume's own order (a view of the spectrum per block): neighbours
        # along its last axis are neighbours in memory for FINUFFT's interpolation too
        counts = [spectrum[index].size for index, _, _ in rotated]
        points = np.empty((3, sum(counts)), np.float32)
        done = 0
        for (index, transposed, _), count in zip(rotated, counts, strict=True):
            axes = [frequencies[b][index[b]] for b in range(3)]
            for a in range(3):  # M^-T w, coordinate by coordinate, separable in w
                target = points[a, done : done + count].reshape(spectrum[index].shape)
                np.copyto(target, _along(transposed[a, 0] * axes[0], 0))
                for b in (1, 2):
                    target += _along((transposed[a, b] * axes[b]).astype(np.float32), b)
            done += count
        # the points of a rotated grid are already local in memory: FINUFFT's sort only costs
        values = finufft.nufft3d2(
            *points,
            volume[box].astype(np.complex64),
            eps=NUFFT_TOLERANCE,
            isign=-1,
            upsampfac=1.25,
            spread_sort=0,
        )
        done = 0
        for (index, _, shift), count in zip(rotated, counts, strict=True):
            block = values[done : done + count].reshape(spectrum[index].shape)
            spectrum[index] = _phase_ramp(block, shift, frequencies, index)
            done += count
    for index, transposed, shift in pieces:  # a translation alone: a ramp on the spectrum
        if transposed is None:
            _phase_ramp(spectrum[index], shift, frequencies, index)


def _phase_ramp(block: np.ndarray, shift, frequencies, index) -> np.ndarray:
    """``block`` times ``exp(i w . shift)`` at the block's angular frequencies ``w``, in place
    (one axis at a time: the ramp is separable); returns ``block``."""
    for b in range(3):
        wave = np.exp(1j * shift[b] * frequencies[b][index[b]]).astype(np.complex64)
        block *= _along(wave, b)
    return block


def _nonzero_box(volume: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) that holds every non-zero voxel; a single voxel
    for a volume of zeros."""
    nonzero = volume != 0
    box = []
    for a in range(volume.ndim):
        others = tuple(b for b in range(volume.ndim) if b != a)
        used = np.flatnonzero(nonzero.any(axis=others))
        box.append(slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 1))
    return tuple(box)


def _runs(lines: np.ndarray) -> list[slice]:
    """FFT-order line indices as runs of consecutive lines (a segment that holds frequency 0
    and a negative frequency wraps round from the last index to index 0)."""
    cuts = np.flatnonzero(np.diff(lines) != 1) + 1
    return [slice(int(run[0]), int(run[-1]) + 1) for run in np.split(lines, cuts) if len(run)]


def segment_lines(size: int, start: int, stop: int) -> np.ndarray:
    """The FFT-order indices of the k-space lines ``start:stop`` counted from the lowest
    frequency (``fftshift`` order) along an axis of ``size`` lines."""
    return (np.arange(start, stop) - size // 2) % size


def _along(values: np.ndarray, axis: int) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    return values.reshape(shape)


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
    return _magnitude_image(spectrum * factor, volume)


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
    return _magnitude_image(spectrum, volume)


def _magnitude_image(spectrum: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """The image of ``spectrum`` (FFT order): its magnitude, or its real part for a ``volume``
    with negative values."""
    image = fft.ifftn(spectrum, workers=-1)
    return np.abs(image) if volume.min() >= 0 else image.real
