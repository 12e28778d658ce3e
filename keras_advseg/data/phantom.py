"""A BraTS-like brain-tumour phantom built from real MNI152 anatomy.

The grey-matter, white-matter and brain-mask templates that ship inside the
``nilearn`` wheel (no download) give the healthy anatomy; CSF is what the
mask leaves over. Each subject gets a random smooth deformation and left-right
flip, a lobulated tumour seeded in white matter (necrotic core, enhancing rim,
oedema spreading along white matter and not into CSF, with mass effect),
partial-volume intensities from :data:`CONTRAST`, texture, a smooth bias field,
Rician noise and scanner-like integer intensities. Subjects are written in the
BraTS 2021 layout, so the real loader reads them.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from keras_advseg.data.parallel import progress_map
from keras_advseg.errors import InputError
from keras_advseg.io import atomic_path, save_figure, write_json_atomic

TISSUES = ("csf", "gm", "wm", "ncr", "ed", "et")
"""Tissue classes of :data:`CONTRAST`, in column order."""

CONTRAST = {
    "t1": (0.30, 0.70, 1.00, 0.45, 0.75, 0.75),
    "t1gd": (0.30, 0.70, 1.00, 0.40, 0.75, 1.50),
    "t2": (3.50, 1.40, 1.00, 3.00, 2.30, 1.90),
    "flair": (0.25, 1.25, 1.00, 0.90, 1.90, 1.60),
}
"""Mean intensity of each tissue relative to white matter, per modality."""

_FILE_SUFFIX = {"t1": "t1", "t1gd": "t1ce", "t2": "t2", "flair": "flair"}
_TUMOUR_LABEL = {"ncr": 1, "ed": 2, "et": 4}


@dataclass(frozen=True)
class PhantomConfig:
    """Knobs of the phantom; sizes are in millimetres so they scale with resolution.

    Attributes:
        voxel_mm: Isotropic voxel size of the written volumes.
        tumour_radius_mm: Range of the tumour's (enhancing) outer radius.
        necrosis_probability: Chance that a tumour has a necrotic core.
        core_fraction: Range of the necrotic core's radius over the outer radius.
        rim_mm: Minimum thickness of the enhancing rim.
        oedema_mm: Range of how far oedema reaches beyond the tumour.
        oedema_fade: How much of the oedema's signal is lost at its outer edge:
            infiltrative oedema fades into normal tissue, so the labelled
            region's edge is faint on FLAIR/T2 (0: uniform oedema).
        lobulation: Relative amplitude of the tumour outline's smoothed noise.
        mass_effect_mm: Range of the peak displacement of tissue by the tumour.
        deformation_mm: Peak amplitude of the random smooth deformation.
        texture: Relative amplitude of tissue texture.
        bias: Peak relative amplitude of the multiplicative bias field.
        noise: Rician noise level relative to white matter.
    """

    voxel_mm: float = 2.0
    tumour_radius_mm: tuple[float, float] = (12.0, 25.0)
    necrosis_probability: float = 0.75
    core_fraction: tuple[float, float] = (0.35, 0.7)
    rim_mm: float = 2.5
    oedema_mm: tuple[float, float] = (6.0, 20.0)
    oedema_fade: float = 0.4
    lobulation: float = 0.3
    mass_effect_mm: tuple[float, float] = (0.0, 6.0)
    deformation_mm: float = 4.0
    texture: float = 0.04
    bias: float = 0.2
    noise: float = 0.03


@functools.lru_cache(maxsize=4)
def mni152_anatomy(voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grey matter, white matter and brain mask of MNI152 at ``voxel_mm``.

    Returns:
        ``(gm, wm, mask, affine)``: float32 probability maps in [0, 1] on one
        RAS+ grid, and its affine.

    Raises:
        ValueError: ``voxel_mm`` is not positive.
    """
    if voxel_mm <= 0:
        raise InputError(f"voxel_mm must be positive. Received: voxel_mm={voxel_mm}")
    from nilearn import datasets  # heavy import, only when a phantom is made

    resolution = 1 if voxel_mm < 2 else 2
    images = [
        datasets.load_mni152_gm_template(resolution=resolution),
        datasets.load_mni152_wm_template(resolution=resolution),
        datasets.load_mni152_brain_mask(resolution=resolution),
    ]
    factor = resolution / voxel_mm
    maps = []
    for img in images:
        data = img.get_fdata(dtype=np.float32)
        if factor != 1:
            data = ndimage.zoom(data, factor, order=1)
        maps.append(np.clip(data, 0, 1).astype(np.float32))
    affine = images[0].affine.copy()
    affine[:3, :3] *= voxel_mm / resolution
    gm, wm, mask = maps
    mask = np.maximum(mask, (gm + wm) > 0.5).astype(np.float32)
    return gm, wm, mask, affine


def synthesize_subject(
    seed: int, index: int, config: PhantomConfig = PhantomConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Makes one phantom subject.

    Args:
        seed: Dataset seed.
        index: Subject index; subject ``index`` is the same for any dataset size.
        config: Phantom knobs.

    Returns:
        ``(image, labels, affine)``: int16 ``(X, Y, Z, 4)`` in
        ``(t1, t1gd, t2, flair)`` order (0 outside the brain), uint8 labels in
        the BraTS-2017 convention, and the RAS+ affine.
    """
    rng = np.random.default_rng([seed, index])
    gm0, wm0, mask0, affine = mni152_anatomy(config.voxel_mm)
    shape = gm0.shape
    vox = config.voxel_mm

    if rng.random() < 0.5:  # left-right flip of the anatomy
        gm0, wm0, mask0 = (np.ascontiguousarray(m[::-1]) for m in (gm0, wm0, mask0))
    centre = _pick_centre(wm0, mask0, vox, rng)
    radius = rng.uniform(*config.tumour_radius_mm)
    coords = _source_coordinates(rng, shape, centre, radius, config)
    gm, wm, mask = (
        ndimage.map_coordinates(m, coords, order=1, mode="constant") for m in (gm0, wm0, mask0)
    )
    brain = mask > 0.5
    csf = np.clip(mask - gm - wm, 0, 1)
    total = np.maximum(gm + wm + csf, 1.0)
    healthy = np.stack([csf / total, gm / total, wm / total], axis=-1) * brain[..., None]

    labels, oedema_strength = _tumour_labels(rng, shape, centre, radius, healthy, brain, config)
    fractions = _partial_volumes(healthy, labels, oedema_strength)
    texture = 1.0 + config.texture * _smooth_noise(rng, shape, cells=max(4, shape[0] // 3))

    channels = []
    for modality in CONTRAST:
        clean = fractions @ np.asarray(CONTRAST[modality], dtype=np.float32)
        bias = np.exp(config.bias * _smooth_noise(rng, shape, cells=3))
        signal = clean * texture * bias
        noisy = np.hypot(
            signal + rng.normal(0, config.noise, shape), rng.normal(0, config.noise, shape)
        )
        scale = rng.uniform(300.0, 1500.0)
        channels.append(np.where(brain, np.rint(noisy * scale), 0))
    image = np.clip(np.stack(channels, axis=-1), 0, np.iinfo(np.int16).max).astype(np.int16)
    labels[~brain] = 0
    return image, labels, affine


def synthesize_dataset(
    out: str | Path,
    n: int = 40,
    *,
    seed: int = 0,
    config: PhantomConfig = PhantomConfig(),
    workers: int = 1,
    progress: bool | None = None,
) -> list[Path]:
    """Writes ``n`` phantom subjects in the BraTS 2021 layout.

    Each subject folder is written under a temporary name and renamed when
    complete, so an interrupted run leaves no half-written subject; subjects
    already present are kept.

    Args:
        out: Dataset folder (created).
        n: Number of subjects.
        seed: Dataset seed; the same seed gives byte-identical volumes.
        config: Phantom knobs.
        workers: Processes to use.
        progress: Show a progress bar (None: when on a terminal).

    Returns:
        The subject folders, sorted.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise InputError(f"n must be >= 1. Received: n={n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "phantom.json", {"seed": seed, "n": n, **asdict(config)})
    todo = [i for i in range(n) if not _subject_dir(out, i).is_dir()]
    work = functools.partial(_write_subject, out=out, seed=seed, config=config)
    for _ in progress_map(work, todo, workers=workers, desc="synthesise", disable=_hide(progress)):
        pass
    return [_subject_dir(out, i) for i in range(n)]


def save_preview(dataset: str | Path, path: str | Path, subjects: int = 3) -> Path:
    """Draws mid-tumour axial slices of the four modalities with labels overlaid.

    Args:
        dataset: A dataset folder in any supported layout.
        path: PNG file to write.
        subjects: How many subjects (rows) to draw.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from keras_advseg.data.layouts import discover_subjects
    from keras_advseg.data.subject import MODALITIES

    chosen = discover_subjects(dataset)[:subjects]
    colours = ListedColormap(
        [(0, 0, 0, 0), (1, 0.2, 0.2, 0.6), (0.2, 1, 0.2, 0.45), (0, 0, 0, 0), (1, 1, 0, 0.6)]
    )
    fig, axes = plt.subplots(len(chosen), 5, figsize=(12.5, 2.9 * len(chosen)), squeeze=False)
    for row, subject in zip(axes, chosen):
        image, labels = subject.load()
        tumour = labels > 0 if labels is not None else image[..., 0] > 0
        z = int(np.argmax(tumour.sum(axis=(0, 1)))) if tumour.any() else image.shape[2] // 2
        for ax, name, channel in zip(row, MODALITIES, np.moveaxis(image[:, :, z], -1, 0)):
            ax.imshow(channel.T, cmap="gray", origin="lower")
            ax.set_title(f"{subject.subject_id} {name}", fontsize=8)
        row[4].imshow(image[:, :, z, 3].T, cmap="gray", origin="lower")
        if labels is not None:
            row[4].imshow(
                labels[:, :, z].T,
                cmap=colours,
                vmin=0,
                vmax=4,
                origin="lower",
                interpolation="nearest",
            )
        row[4].set_title("FLAIR + labels (NCR red, ED green, ET yellow)", fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=90)


def _subject_dir(out: Path, index: int) -> Path:
    return out / f"BraTS2021_{index:05d}"


def _write_subject(index: int, *, out: Path, seed: int, config: PhantomConfig) -> Path:
    image, labels, affine = synthesize_subject(seed, index, config)
    final = _subject_dir(out, index)
    with atomic_path(final, directory=True) as tmp:
        for channel, modality in enumerate(CONTRAST):
            _save(
                image[..., channel], affine, tmp / f"{final.name}_{_FILE_SUFFIX[modality]}.nii.gz"
            )
        _save(labels, affine, tmp / f"{final.name}_seg.nii.gz")
    return final


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"keras-advseg phantom"
    nib.save(img, str(path))


def _pick_centre(
    wm: np.ndarray, mask: np.ndarray, vox: float, rng: np.random.Generator
) -> np.ndarray:
    """A deep white-matter voxel at least 25 mm inside the brain."""
    candidates = _centre_candidates(wm.tobytes(), mask.tobytes(), wm.shape, vox)
    return candidates[rng.integers(len(candidates))].astype(np.float32)


@functools.lru_cache(maxsize=8)
def _centre_candidates(wm: bytes, mask: bytes, shape, vox: float) -> np.ndarray:
    wm_map = np.frombuffer(wm, np.float32).reshape(shape)
    depth = ndimage.distance_transform_edt(
        np.frombuffer(mask, np.float32).reshape(shape) > 0.5, sampling=vox
    )
    candidates = np.argwhere((wm_map > 0.9) & (depth > 25.0))
    return candidates if len(candidates) else np.argwhere(wm_map > 0.5)


def _source_coordinates(rng, shape, centre, radius, config: PhantomConfig) -> np.ndarray:
    """Pull-back coordinates: random flip, smooth deformation and mass effect."""
    grid = np.indices(shape, dtype=np.float32)
    amplitude = config.deformation_mm / config.voxel_mm
    displacement = np.stack([_smooth_noise(rng, shape, cells=4) for _ in range(3)]) * amplitude
    offset = grid - centre.reshape(3, 1, 1, 1)
    distance = np.sqrt((offset**2).sum(axis=0)) + 1e-3
    push = rng.uniform(*config.mass_effect_mm) / config.voxel_mm
    sigma = 1.5 * radius / config.voxel_mm
    displacement -= push * np.exp(-0.5 * (distance / sigma) ** 2) * offset / distance
    return grid + displacement


def _tumour_labels(rng, shape, centre, radius, healthy, brain, config: PhantomConfig):
    """Label map, and the oedema's signal strength (1 at the tumour, ``1 - oedema_fade`` at its edge)."""
    vox = config.voxel_mm
    grid = np.indices(shape, dtype=np.float32)
    distance_mm = np.sqrt(((grid - centre.reshape(3, 1, 1, 1)) ** 2).sum(axis=0)) * vox
    lobes = 1.0 + config.lobulation * _smooth_noise(rng, shape, cells=6)
    scaled = distance_mm / lobes
    labels = np.zeros(shape, np.uint8)
    tumour = (scaled < radius) & brain
    labels[tumour] = _TUMOUR_LABEL["et"]
    if rng.random() < config.necrosis_probability:
        core_radius = min(radius * rng.uniform(*config.core_fraction), radius - config.rim_mm)
        labels[(scaled < core_radius) & brain] = _TUMOUR_LABEL["ncr"]
    reach = rng.uniform(*config.oedema_mm)
    beyond = ndimage.distance_transform_edt(~tumour, sampling=vox)
    spread = reach * (1.0 + 0.4 * _smooth_noise(rng, shape, cells=6))
    csf, gm, wm = np.moveaxis(healthy, -1, 0)
    along_matter = (wm > 0.35) | ((gm > 0.35) & (beyond < 0.3 * spread))
    oedema = (beyond > 0) & (beyond < spread) & along_matter & (csf < 0.4) & brain
    labels[oedema] = _TUMOUR_LABEL["ed"]
    strength = 1.0 - config.oedema_fade * np.clip(beyond / np.maximum(spread, 1e-3), 0.0, 1.0)
    return labels, strength.astype(np.float32)


def _partial_volumes(
    healthy: np.ndarray, labels: np.ndarray, oedema_strength: np.ndarray
) -> np.ndarray:
    """Fractions of each of :data:`TISSUES` per voxel; tumour edges blend in, oedema fades outwards."""
    weights = {"ncr": 1.0, "ed": oedema_strength, "et": 1.0}
    tumour = np.stack(
        [
            ndimage.gaussian_filter((labels == _TUMOUR_LABEL[t]) * weights[t], 0.6).astype(
                np.float32
            )
            for t in ("ncr", "ed", "et")
        ],
        axis=-1,
    )
    tumour *= healthy.sum(axis=-1, keepdims=True) > 0
    share = np.clip(tumour.sum(axis=-1, keepdims=True), 0, 1)
    tumour /= np.maximum(tumour.sum(axis=-1, keepdims=True), 1.0)
    return np.concatenate([healthy * (1 - share), tumour], axis=-1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: random weights on a separable Gaussian basis.

    ``cells`` Gaussian bumps per axis; the field is built axis by axis
    (an outer-product basis), so it costs a few passes over the volume.
    """
    weights = rng.uniform(-1, 1, size=(cells, cells, cells)).astype(np.float32)
    bases = []
    for size in shape:
        x = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
        centres = (np.arange(cells, dtype=np.float32)[None, :] + 0.5) / cells
        bases.append(np.exp(-0.5 * ((x - centres) * cells) ** 2))
    field = np.einsum("abc,xa,yb,zc->xyz", weights, *bases, optimize=True)
    return (field / max(float(np.abs(field).max()), 1e-6)).astype(np.float32)


def _hide(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
