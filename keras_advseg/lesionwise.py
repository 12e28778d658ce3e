"""BraTS 2023 lesion-wise Dice and HD95, the challenge's ranking metrics since 2023.

A reimplementation of the challenge's own evaluation code (R. Saluja et al.,
github.com/rachitsaluja/BraTS-2023-Metrics, ``metrics.py``: ``get_LesionWiseScores`` and
``get_LesionWiseResults``; its HD95 is DeepMind's ``surface_distance``), with SciPy in
place of ``cc3d``. Per region (WT = labels {1, 2, 4}, TC = {1, 4}, ET = {4}; the 2023 data
writes ET as 3, this package as 4):

1. The reference mask is dilated ``dilation`` times (3 for BraTS-GLI) with the
   18-connected structuring element (``generate_binary_structure(3, 2)``); each
   26-connected component of the dilated mask is one lesion, made of the reference voxels
   inside it, so nearby pieces of one tumour count as one lesion.
2. The prediction is split into 26-connected components. A lesion's match is every
   predicted component that touches the lesion dilated the same way; its Dice and HD95
   are those of the lesion against the union of its matching components (whole
   components, not clipped). A lesion with no match scores Dice 0 and HD95 374 mm.
3. Lesions of at most ``min_volume`` mm^3 (50 for BraTS-GLI) are left out of the scores,
   and the predicted components that touch them are not false positives either.
4. Every predicted component that touches no lesion's dilation is a false positive:
   Dice 0 and HD95 374 mm.
5. The score is the mean over the kept lesions and the false positives; with neither
   (empty reference and prediction, or only small lesions), Dice 1 and HD95 0.

HD95 of a matched lesion is the reference's robust Hausdorff distance: surface elements
are the 2 x 2 x 2 neighbourhoods that are neither empty nor full, each weighted by its
marching-cubes surface area in mm^2; from each surface to the other, the distance
reached by 95 % of the surface area, and the larger of the two directions. Spacing
matters twice: HD95 is in mm and a lesion's volume is its voxels times the voxel volume
(the reference reads the spacing from the NIfTI header and notes that BraTS data is
1 mm isotropic); the dilation counts voxels whatever the spacing.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from keras_advseg.errors import InputError
from keras_advseg.vocabulary import REGION_LABELS, REGIONS

MISSED_HD95 = 374.0
"""HD95 (mm) of a missed or a spurious lesion (the reference's constant)."""
DILATION = 3
"""Dilation iterations that merge nearby lesions (BraTS-GLI's ``dilation_factor``)."""
MIN_VOLUME_MM3 = 50.0
"""Lesions of at most this volume are not scored (BraTS-GLI's ``lesion_volume_thresh``)."""
CHALLENGE_PARAMETERS = {
    "BraTS-GLI": (3, 50.0),
    "BraTS-SSA": (3, 50.0),
    "BraTS-MEN": (1, 50.0),
    "BraTS-PED": (3, 50.0),
    "BraTS-MET": (1, 2.0),
}
"""``(dilation, min_volume)`` of each 2023 challenge, as in the reference."""
LESION_METRICS = tuple(f"lesion_{m}_{r}" for m in ("dice", "hd95") for r in REGIONS)
"""Lesion-wise Dice and HD95 (mm) of each region."""
LESION_COUNTS = tuple(f"lesion_{c}_{r}" for c in ("tp", "fn", "fp") for r in REGIONS)
"""Scored lesions found (tp) and missed (fn), and false-positive components (fp)."""

_BRATS_VALUES = (0, 1, 2, 4)
# bit of each voxel of a 2 x 2 x 2 neighbourhood, offset (i, j, k) -> 2 ** (7 - 4i - 2j - k)
_BITS = (1 << (7 - np.arange(8))).reshape(2, 2, 2)


def lesion_wise(
    labels,
    predicted,
    spacing=(1.0, 1.0, 1.0),
    *,
    dilation: int = DILATION,
    min_volume: float = MIN_VOLUME_MM3,
) -> dict[str, float | int]:
    """BraTS 2023 lesion-wise Dice and HD95 of WT, TC and ET for one subject.

    Args:
        labels: Reference label map ``(X, Y, Z)``, BraTS values 0/1/2/4.
        predicted: Predicted label map, same shape and values.
        spacing: Voxel size in mm along each axis (HD95 in mm, lesion volumes in mm^3);
            BraTS data is 1 mm isotropic.
        dilation: Dilation iterations, in voxels (:data:`CHALLENGE_PARAMETERS`; 0: none).
        min_volume: Lesions of at most this many mm^3 are not scored.

    Returns:
        ``lesion_dice_{wt,tc,et}`` and ``lesion_hd95_{wt,tc,et}`` (mm) as floats, and the
        counts ``lesion_tp_*``, ``lesion_fn_*`` (scored lesions found and missed) and
        ``lesion_fp_*`` (false-positive components) as ints.

    Raises:
        InputError: the maps are not 3-D, differ in shape or hold other values than
            0/1/2/4; a spacing that is not three positive numbers; a negative ``dilation``
            or ``min_volume``.
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.ndim != 3 or labels.shape != predicted.shape:
        raise InputError(
            "lesion-wise scores need two 3-D label maps of the same shape. "
            f"Received: {labels.shape} and {predicted.shape}"
        )
    for name, volume in (("labels", labels), ("predicted", predicted)):
        other = ~np.isin(volume, _BRATS_VALUES)
        if other.any():
            found = np.unique(volume[other])[:5].tolist()
            raise InputError(
                f"{name} must hold BraTS values 0/1/2/4. Received: other values {found}"
            )
    spacing = _check_spacing(spacing)
    if not _is_count(dilation):
        raise InputError(f"dilation must be an integer >= 0. Received: dilation={dilation!r}")
    if not _is_size(min_volume):
        raise InputError(f"min_volume must be a number >= 0. Received: min_volume={min_volume!r}")
    scores: dict[str, float | int] = {}
    for region, values in REGION_LABELS.items():
        dice, hd95, tp, fn, fp = _region(
            np.isin(labels, values),
            np.isin(predicted, values),
            spacing,
            int(dilation),
            float(min_volume),
        )
        scores[f"lesion_dice_{region}"] = dice
        scores[f"lesion_hd95_{region}"] = hd95
        scores[f"lesion_tp_{region}"] = tp
        scores[f"lesion_fn_{region}"] = fn
        scores[f"lesion_fp_{region}"] = fp
    return {k: scores[k] for k in LESION_METRICS + LESION_COUNTS}


def _is_count(value) -> bool:
    """Whether ``value`` is a whole number >= 0 (not a bool)."""
    try:
        return not isinstance(value, bool) and int(value) == value >= 0
    except (TypeError, ValueError):
        return False


def _is_size(value) -> bool:
    """Whether ``value`` is a finite number >= 0."""
    try:
        return math.isfinite(float(value)) and float(value) >= 0
    except (TypeError, ValueError):
        return False


def _check_spacing(spacing) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"spacing must be three positive numbers (mm). Received: {spacing!r}")
    return values


def _region(reference, prediction, spacing, dilation, min_volume):
    """``(dice, hd95, tp, fn, fp)`` of one region's masks."""
    from scipy import ndimage

    if not reference.any() and not prediction.any():
        return 1.0, 0.0, 0, 0, 0
    # everything happens within `dilation` voxels of the masks: crop there (the volume's
    # own edge still clips the dilation where the crop reaches it)
    box = _padded(_bounds(reference | prediction), dilation, reference.shape)
    reference, prediction = reference[box], prediction[box]
    components, n_components = ndimage.label(prediction, structure=_structure(3))
    merged, _ = ndimage.label(_dilate(reference, dilation), structure=_structure(3))
    lesions = np.where(reference, merged, 0)
    voxel_volume = spacing[0] * spacing[1] * spacing[2]
    matched: set[int] = set()
    dice_sum = hd95_sum = 0.0
    tp = fn = 0
    for index, lesion_box in enumerate(ndimage.find_objects(lesions), start=1):
        if lesion_box is None:
            continue
        window = _padded(lesion_box, dilation, lesions.shape)
        lesion = lesions[window] == index
        touching = np.unique(components[window][_dilate(lesion, dilation)])
        touching = touching[touching != 0]
        matched.update(touching.tolist())
        if lesion.sum() * voxel_volume <= min_volume:
            continue  # too small to score; what touches it is not a false positive either
        if touching.size == 0:
            fn += 1
            hd95_sum += MISSED_HD95
            continue
        tp += 1
        whole = lesions == index
        found = np.isin(components, touching)
        dice_sum += 2.0 * np.sum(whole & found) / (np.sum(whole) + np.sum(found))
        hd95_sum += surface_hd95(whole, found, spacing)
    fp = n_components - len(matched)
    scored = tp + fn + fp
    if scored == 0:
        return 1.0, 0.0, 0, 0, 0
    return float(dice_sum / scored), float((hd95_sum + fp * MISSED_HD95) / scored), tp, fn, fp


@functools.cache
def _structure(rank: int) -> np.ndarray:
    """3-D neighbourhood: rank 3 is 26-connected (cc3d's ``connectivity=26``), rank 2
    18-connected (the reference's dilation, ``generate_binary_structure(3, 2)``)."""
    from scipy import ndimage

    return ndimage.generate_binary_structure(3, rank)


def _dilate(mask, iterations: int) -> np.ndarray:
    """``mask`` dilated ``iterations`` times with the 18-connected element (0: itself)."""
    from scipy import ndimage

    if not iterations:
        return mask
    return ndimage.binary_dilation(mask, structure=_structure(2), iterations=iterations)


def _bounds(mask) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask."""
    box = []
    for other in ((1, 2), (0, 2), (0, 1)):
        present = np.flatnonzero(np.any(mask, axis=other))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _padded(box, pad: int, shape) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, shape))


def surface_hd95(reference, prediction, spacing=(1.0, 1.0, 1.0)) -> float:
    """The reference's robust Hausdorff distance (95 %) between two masks, in mm.

    DeepMind's ``surface_distance`` definition, as the BraTS 2023 code calls it
    (``compute_robust_hausdorff(compute_surface_distances(gt, pred, spacing), 95)``):
    surface elements sit on the grid of voxel corners, one per 2 x 2 x 2 neighbourhood
    that is neither empty nor full, weighted by the area of its marching-cubes surface
    (:func:`surfel_areas`); the distances from each surface to the other (Euclidean
    distance transform) are sorted, the first reached by 95 % of the area is taken, and
    the larger of the two directions returned. It differs from
    :func:`keras_advseg.metrics.hausdorff95` (MedPy's: surface voxels, unweighted
    distances of both directions pooled).

    Args:
        reference: Boolean mask.
        prediction: Boolean mask of the same shape.
        spacing: Voxel size in mm along each axis.

    Returns:
        The distance in mm; ``inf`` when exactly one mask is empty, 0 when both are.

    Raises:
        InputError: the masks differ in shape or are not 3-D, or a bad spacing.
    """
    from scipy import ndimage

    reference, prediction = np.asarray(reference, bool), np.asarray(prediction, bool)
    if reference.ndim != 3 or reference.shape != prediction.shape:
        raise InputError(
            "surface_hd95 needs two 3-D masks of the same shape. "
            f"Received: {reference.shape} and {prediction.shape}"
        )
    spacing = _check_spacing(spacing)
    if not reference.any() and not prediction.any():
        return 0.0
    if not reference.any() or not prediction.any():
        return math.inf
    box = _bounds(reference | prediction)
    areas = _surfel_areas(spacing)
    codes = [_neighbour_codes(np.pad(m[box], 1)) for m in (reference, prediction)]
    borders = [(c != 0) & (c != 255) for c in codes]
    distance = [ndimage.distance_transform_edt(~b, sampling=spacing) for b in borders]
    return max(
        _reached(distance[1][borders[0]], areas[codes[0][borders[0]]]),
        _reached(distance[0][borders[1]], areas[codes[1][borders[1]]]),
    )


def _neighbour_codes(mask) -> np.ndarray:
    """The 8-bit pattern of every 2 x 2 x 2 neighbourhood of ``mask`` (shape minus 1)."""
    x, y, z = (n - 1 for n in mask.shape)
    codes = np.zeros((x, y, z), np.int64)
    for (i, j, k), bit in np.ndenumerate(_BITS):
        codes |= mask[i : i + x, j : j + y, k : k + z].astype(np.int64) * int(bit)
    return codes


def _reached(distances, areas, percent: float = 95.0) -> float:
    """The smallest sorted distance whose cumulative share of the area reaches ``percent``."""
    order = np.lexsort((areas, distances))  # by distance, then area, as the reference sorts
    distances, areas = distances[order], areas[order]
    cumulative = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, len(distances) - 1)])


def surfel_areas(spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The surface area (mm^2) in each of the 256 patterns of a 2 x 2 x 2 neighbourhood.

    The marching-cubes surface at level 1/2 of the pattern (scikit-image's Lorensen
    tables), taken on the side with at most four voxels set, as the reference's lookup
    table does: a lone voxel is a corner triangle of area sqrt(3)/8, two face-adjacent
    voxels a sqrt(2)/2 rectangle, a full face a unit square (at 1 mm). Each triangle's
    area vector ``n`` scales with the spacing ``s`` as ``(n_x s_y s_z, n_y s_x s_z,
    n_z s_x s_y)``.

    Args:
        spacing: Voxel size in mm along each axis.

    Returns:
        float64 ``(256,)``, read-only, indexed by the pattern's bits (offset ``(i, j, k)``
        is bit ``7 - 4i - 2j - k``); 0 for the empty and the full pattern.

    Raises:
        InputError: a spacing that is not three positive numbers.
    """
    return _surfel_areas(_check_spacing(spacing))


@functools.lru_cache(maxsize=16)
def _surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    sx, sy, sz = spacing
    scale = np.array([sy * sz, sx * sz, sx * sy])
    table = np.array([np.linalg.norm(n * scale, axis=1).sum() for n in _area_vectors()])
    table.flags.writeable = False
    return table


@functools.cache
def _area_vectors() -> tuple[np.ndarray, ...]:
    """Per pattern, the area vectors (half the cross product) of its triangles at 1 mm."""
    from skimage.measure import marching_cubes

    vectors = []
    for code in range(256):
        side = code if bin(code).count("1") <= 4 else 255 - code
        cell = ((side & _BITS) > 0).astype(np.float64)
        if not cell.any():
            vectors.append(np.zeros((0, 3)))
            continue
        vertices, faces, _, _ = marching_cubes(cell, 0.5, method="lorensen")
        corners = vertices.astype(np.float64)[faces]
        vectors.append(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]) / 2)
    return tuple(vectors)
