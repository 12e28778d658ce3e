"""Artifacts of the coil, the noise floor, the resolution and the contrast of a protocol.

Bias field after TorchIO's ``RandomBiasField``, Rician noise after MONAI's
``RandRicianNoise`` (relative), gamma after MONAI's ``AdjustContrast``, thick slices after
TorchIO's ``RandomAnisotropy``; levels from ROOD-MRI (Boone et al. 2023).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from keras_advseg.corruptions.core import note


def polynomial_terms(order: int) -> list[tuple[int, int, int]]:
    """The exponents ``(i, j, k)`` of the monomials ``x^i y^j z^k`` with ``i + j + k <= order``,
    in TorchIO's order."""
    return [
        (i, j, k)
        for i in range(order + 1)
        for j in range(order + 1 - i)
        for k in range(order + 1 - i - j)
    ]


def bias_field_map(shape, coefficients, order: int = 3) -> np.ndarray:
    """``exp(sum_c a_c x^i y^j z^k)`` over coordinates running from -1 to 1 along each axis.

    Args:
        shape: The volume's shape.
        coefficients: One per term of :func:`polynomial_terms` (``order``).
        order: The polynomial's order.

    Returns:
        The multiplicative field, float64.

    Raises:
        ValueError: not one coefficient per term.
    """
    x, y, z = (np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape)
    terms = polynomial_terms(order)
    if len(coefficients) != len(terms):
        raise ValueError(f"{len(terms)} coefficients expected, got {len(coefficients)}")
    # separable: sum_i x^i (sum_j y^j (sum_k a_ijk z^k)), so the whole grid is touched only
    # once per power of x (order + 1 times), not once per monomial (20 at order 3)
    by_x: dict[int, np.ndarray] = {}
    for a, (i, j, k) in zip(coefficients, terms, strict=True):
        plane = by_x.setdefault(i, np.zeros((len(y), len(z))))
        plane += a * np.outer(y**j, z**k)
    log_field = np.zeros(tuple(shape))
    for i, plane in by_x.items():
        log_field += (x**i)[:, None, None] * plane[None]
    return np.exp(log_field, out=log_field)


def bias_field(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    coefficient: float,
    order: int = 3,
    record: dict | None = None,
) -> np.ndarray:
    """Coil inhomogeneity: the volume times the exponential of a 3rd-order polynomial whose
    coefficients are uniform in ``[-coefficient, coefficient]`` (ROOD-MRI: 0.3 ... 1.5);
    ``record`` receives the drawn ``coefficients`` (:func:`polynomial_terms`' order)."""
    unit = rng.uniform(-1, 1, len(polynomial_terms(order)))
    note(record, coefficients=coefficient * unit)
    return volume * bias_field_map(volume.shape, coefficient * unit, order)


def rician_noise(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    relative_std: float,
    record: dict | None = None,
) -> np.ndarray:
    """The noise of a magnitude image: ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2`` Gaussian with a
    standard deviation of ``relative_std`` times the volume's own (ROOD-MRI, MONAI relative:
    0.16 ... 0.8)."""
    std = relative_std * float(np.std(volume))
    note(record, std=std)
    real = volume + std * rng.standard_normal(volume.shape)
    imaginary = std * rng.standard_normal(volume.shape)
    return np.sqrt(real**2 + imaginary**2)


def blur(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    sigma_mm: float,
    record: dict | None = None,
) -> np.ndarray:
    """Gaussian smoothing with a standard deviation of ``sigma_mm`` in every direction
    (ROOD-MRI: 0.8 ... 4 mm), whatever the voxel size."""
    sigma = [sigma_mm / s for s in spacing]
    note(record, sigma_voxels=sigma)
    return ndimage.gaussian_filter(volume, sigma, mode="nearest")


def contrast(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    gamma: float,
    record: dict | None = None,
) -> np.ndarray:
    """A protocol's contrast: intensities mapped through ``((x - lo) / (hi - lo)) ^ gamma`` within
    their own range; gamma < 1 compresses the contrast (ROOD-MRI: 0.86 ... 0.3), gamma > 1
    expands it (1.4 ... 3)."""
    lo, hi = float(volume.min()), float(volume.max())
    note(record, range=[lo, hi])
    if hi <= lo:
        return volume.copy()
    return ((volume - lo) / (hi - lo)) ** gamma * (hi - lo) + lo


def anisotropic(
    volume: np.ndarray,
    *,
    spacing,
    rng: np.random.Generator,
    factor: float,
    axes=(0, 1, 2),
    record: dict | None = None,
) -> np.ndarray:
    """Thick slices: one axis (drawn from ``axes``) acquired ``factor`` times coarser, then
    interpolated back to the grid (ROOD-MRI: 2.8 ... 10).

    A thick slice integrates the signal over its thickness, so the volume is averaged over
    ``factor`` voxels along the axis before it is sampled every ``factor`` voxels; TorchIO
    samples the nearest voxel instead, which skips the tissue between slices. The way back is
    linear interpolation, as TorchIO's.
    """
    axis = int(rng.choice(axes))
    note(record, axis=axis)
    size = volume.shape[axis]
    width = max(1, int(round(factor)))
    averaged = ndimage.uniform_filter1d(volume, width, axis=axis, mode="nearest")
    positions = np.arange(0.0, size - 1 + 1e-9, factor)
    low = _interpolate(averaged, positions, axis)
    return _interpolate(low, np.arange(size) / factor, axis)


def _interpolate(volume: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``volume`` at fractional ``positions`` along ``axis`` (clamped)."""
    last = volume.shape[axis] - 1
    positions = np.clip(positions, 0, last)
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, last)
    weight = (positions - lower).reshape([-1 if a == axis else 1 for a in range(volume.ndim)])
    return (1 - weight) * np.take(volume, lower, axis=axis) + weight * np.take(
        volume, upper, axis=axis
    )
