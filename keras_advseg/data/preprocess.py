"""Per-volume preprocessing: N4 bias correction, brain crop, resize, standardisation.

The paper's "Data preprocessing": N4 bias-field correction, global
standardisation and resizing to 128^3. Standardisation statistics come from
the training split only (see :mod:`keras_advseg.data.prepare`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from keras_advseg.data.errors import DataError


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any modality is non-zero (BraTS volumes are skull-stripped).

    Args:
        image: ``(X, Y, Z, C)`` volume.

    Returns:
        Boolean ``(X, Y, Z)`` mask.
    """
    return np.any(image != 0, axis=-1)


def n4_correct(
    volume: np.ndarray,
    mask: np.ndarray,
    *,
    shrink: int = 4,
    iterations: tuple[int, ...] = (50, 50, 30),
) -> np.ndarray:
    """N4 bias-field correction of one modality (Tustison et al. 2010), SimpleITK.

    The field is estimated on a copy shrunk by ``shrink`` for speed, then
    evaluated on the full grid and divided out inside the mask.

    Args:
        volume: ``(X, Y, Z)`` intensities.
        mask: Boolean brain mask; only these voxels inform and receive the field.
        shrink: Down-sampling factor for the estimate (1 = none).
        iterations: Fitting iterations per resolution level.

    Returns:
        The corrected float32 volume; 0 outside the mask.
    """
    import SimpleITK as sitk

    if not mask.any():
        return np.zeros_like(volume, dtype=np.float32)
    image = sitk.GetImageFromArray(np.where(mask, volume, 0).astype(np.float32))
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    small, small_mask = image, mask_image
    if shrink > 1:
        small = sitk.Shrink(image, [shrink] * 3)
        small_mask = sitk.Shrink(mask_image, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.Execute(small, small_mask)
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(image))
    return np.where(mask, volume / np.exp(log_field), 0).astype(np.float32)


def crop_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Bounding box of a mask, widened by ``margin`` voxels and kept in bounds.

    Raises:
        DataError: the mask is empty.
    """
    if not mask.any():
        raise DataError("empty brain mask: every voxel of every modality is 0")
    box = []
    for axis, size in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, size)))
    return tuple(box)


def resize(volume: np.ndarray, shape: tuple[int, int, int], *, order: int) -> np.ndarray:
    """Resizes the first three axes to exactly ``shape`` (corners aligned).

    Args:
        volume: ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        shape: Target spatial shape.
        order: 1 (linear) for images, 0 (nearest) for label maps.

    Returns:
        The resized array, same dtype, same trailing axes.
    """
    if tuple(volume.shape[:3]) == tuple(shape):
        return volume.copy()
    # grid_mode=False aligns the corner voxels: output voxel i samples input i * (n_in - 1) / (n_out - 1).
    factors = [s_out / s_in for s_in, s_out in zip(volume.shape[:3], shape)]
    if volume.ndim == 3:
        return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=False).astype(
            volume.dtype
        )
    channels = [
        ndimage.zoom(volume[..., c], factors, order=order, mode="nearest", grid_mode=False)
        for c in range(volume.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(volume.dtype)


def zscore(image: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardises each modality, ``(x - mean) / std`` inside the mask, 0 outside.

    Args:
        image: ``(X, Y, Z, C)``.
        mask: Boolean ``(X, Y, Z)`` brain mask.
        mean: ``(C,)`` means.
        std: ``(C,)`` standard deviations (> 0).

    Returns:
        Float32 standardised image.
    """
    out = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.where(mask[..., None], out, 0).astype(np.float32)


def masked_moments(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum and sum of squares inside the mask, and the voxel count.

    The pieces add up across volumes, so global statistics need no second pass.
    """
    inside = image[mask].astype(np.float64)
    return inside.sum(axis=0), (inside**2).sum(axis=0), int(mask.sum())


def crop_and_resize(
    image: np.ndarray,
    shape: tuple[int, int, int],
    *,
    n4: bool,
    n4_shrink: int,
    margin: int,
    name: str,
) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...]]:
    """The per-volume steps of the paper's preprocessing: N4, crop to the brain, resize.

    Args:
        image: ``(X, Y, Z, 4)`` raw volume.
        shape: Target spatial shape (None: keep the cropped volume's own).
        n4, n4_shrink: N4 bias-field correction and its shrink factor.
        margin: Voxels kept around the brain's bounding box.
        name: What the volume is, for the message (a subject's folder).

    Returns:
        ``(image, mask, box)``: the resized float32 image, the resized boolean brain
        mask, and the crop box in the input's grid (to map predictions back).

    Raises:
        DataError: the brain mask is empty.
    """
    mask = brain_mask(image)
    if not mask.any():
        raise DataError(f"{name}: empty brain mask (every voxel of every modality is 0)")
    if n4:
        # each sequence is corrected over the voxels it measured: a sequence that arrived
        # incomplete (zeroed slices) would otherwise pull N4's field towards 0 there and change
        # its surviving voxels; on a complete scan this is the brain mask
        image = np.stack(
            [
                n4_correct(image[..., c], mask & (image[..., c] != 0), shrink=n4_shrink)
                for c in range(image.shape[-1])
            ],
            axis=-1,
        )
    box = crop_box(mask, margin)
    if shape is None:
        return image[box].astype(np.float32), mask[box], box
    resized = resize(image[box], shape, order=1).astype(np.float32)
    return resized, resize(mask[box].astype(np.uint8), shape, order=0).astype(bool), box


def crop_and_resize_as(image: np.ndarray, settings, *, name: str, resize: bool = True):
    """:func:`crop_and_resize` at the ``shape``, ``n4``, ``n4_shrink`` and ``margin`` of
    ``settings``: a :class:`~keras_advseg.data.prepare.PrepareConfig`, or the
    :class:`~keras_advseg.inference.Preprocessing` a model stores.

    Args:
        image, name: As :func:`crop_and_resize`.
        settings: The preprocessing.
        resize: Resize to ``settings.shape`` (False: keep the cropped volume's own shape).

    Returns:
        ``(image, mask, box)``, as :func:`crop_and_resize`.
    """
    return crop_and_resize(
        image,
        settings.shape if resize else None,
        n4=settings.n4,
        n4_shrink=settings.n4_shrink,
        margin=settings.margin,
        name=name,
    )


def standardize(
    image: np.ndarray, mask: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None
) -> np.ndarray:
    """Per-modality z-score inside the brain, 0 outside: with the given statistics (the
    training split's, "global"), or with the volume's own when ``mean`` is None ("volume").

    Raises:
        DataError: the mask is empty or a modality is constant (volume statistics).
    """
    if mean is None:
        total, squares, count = masked_moments(image, mask)
        mean, std = moments_to_mean_std(total, squares, count)
    return zscore(image, mask, mean, std)


def moments_to_mean_std(total, squares, count) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation from :func:`masked_moments` sums.

    Raises:
        DataError: no voxels, or a modality with zero variance.
    """
    if count == 0:
        raise DataError("empty brain mask: cannot compute standardisation statistics")
    mean = np.asarray(total, np.float64) / count
    std = np.sqrt(np.maximum(np.asarray(squares, np.float64) / count - mean**2, 0.0))
    if np.any(std <= 0):
        raise DataError(f"a modality has zero variance inside the brain (std={std.tolist()})")
    return mean.astype(np.float32), std.astype(np.float32)
