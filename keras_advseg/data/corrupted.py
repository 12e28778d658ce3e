"""Corrupted scans prepared for a model: corrupt the native scan, then the model's preprocessing.

A corrupted scan goes through exactly what a scan from the scanner goes through (N4 when the
model was trained with it, crop to the brain, resize); standardising is left to the caller,
the one step that depends on the model's statistics. Prepared scans are cached on disk, keyed
by the raw files, the corruption, its severity and seed, and the preprocessing, so that every
model evaluated on the same scans shares one preparation (the study evaluates five).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_advseg.data.subject import Subject
from keras_advseg.errors import DataError
from keras_advseg.io import atomic_path, write_json_atomic

_STAMP = "corrupted.json"
_FORMAT = {"kind": "keras-advseg corrupted scans", "version": 2}
"""Version 2: each subject its own draw (version 1 gave every subject the same), and the drawn
parameters stored beside the scan."""


@dataclass(frozen=True)
class PreparedScan:
    """One (corrupted) scan after the model's preprocessing, before standardisation.

    Attributes:
        image: ``(*shape, 4)`` float32, cropped and resized (N4-corrected where the model was).
        mask: ``(*shape)`` bool brain mask.
        box: The crop box in the native grid.
        native_shape: The native scan's shape.
        params: What the corruption drew for this subject (``corrupt(..., return_params=True)``;
            empty for the clean scan).
    """

    image: np.ndarray
    mask: np.ndarray
    box: tuple[slice, ...]
    native_shape: tuple[int, int, int]
    params: dict = field(default_factory=dict)


class CorruptedScans:
    """Prepares (and caches) a subject's scan under a corruption and severity.

    Args:
        preprocessing: The model's :class:`~keras_advseg.inference.Preprocessing`.
        seed: Seed of the corruptions' draws. Each subject and corruption gets its own stream
            from it and the subject's identifier, shared by the severities (unit-scaled draws
            that each level scales; motion also moves more often at higher levels).
        modalities: The sequences the corruptions may touch (None: all).
        cache: A folder to keep prepared scans in (created; it must be empty or one of ours),
            or None to keep nothing.

    Raises:
        DataError: ``cache`` is a non-empty folder this tool did not create.
    """

    def __init__(self, preprocessing, *, seed: int = 0, modalities=None, cache=None):
        self.preprocessing = preprocessing
        self.seed = int(seed)
        self.modalities = None if modalities is None else tuple(modalities)
        self.cache = None if cache is None else Path(cache)
        if self.cache is not None:
            _own(self.cache)

    def get(self, subject: Subject, corruption: str, severity: int, image=None) -> PreparedScan:
        """The subject's scan under ``corruption`` at ``severity`` (0: clean), preprocessed.

        Args:
            subject: The raw subject.
            corruption: A registered corruption name (ignored at severity 0).
            severity: 0-5.
            image: The subject's loaded native image (to spare reading it again).

        Raises:
            DataError: unreadable scan, or an empty brain mask after the corruption.
        """
        from keras_advseg.corruptions import corrupt
        from keras_advseg.data.preprocess import crop_and_resize_as

        name = "none" if severity == 0 else corruption
        path = None
        if self.cache is not None:
            path = self.cache / f"{self.key(subject, name, severity)}.npz"
            found = _read(path, tuple(self.preprocessing.shape))
            if found is not None:
                return found
        if image is None:
            image, _ = subject.load()
        corrupted, params = (
            (image, {})
            if severity == 0
            else corrupt(
                image,
                corruption,
                severity,
                spacing=spacing_of(subject),
                seed=self.seed,
                modalities=self.modalities,
                subject=subject.subject_id,
                return_params=True,
            )
        )
        resized, mask, box = crop_and_resize_as(
            corrupted,
            self.preprocessing,
            name=f"{subject.images[0].parent}: subject {subject.subject_id} under {name} "
            f"severity {severity}",
        )
        scan = PreparedScan(resized, mask, box, tuple(image.shape[:3]), params)
        if path is not None:
            _write(path, scan)
        return scan

    def prepare(self, jobs, workers: int = 1, progress: bool | None = None) -> None:
        """Prepares ``(subject, corruption, severity)`` jobs into the cache, in ``workers``
        processes (N4 and the k-space artifacts are the cost); those already cached are
        skipped. Without a cache there is nothing to share, so nothing is done.

        Raises:
            DataError: an unreadable scan.
        """
        from keras_advseg.data.parallel import progress_map

        if self.cache is None:
            return
        todo = [
            job
            for job in jobs
            if _read(self.cache / f"{self.key(*job)}.npz", tuple(self.preprocessing.shape)) is None
        ]
        for _ in progress_map(
            _PrepareScan(self), todo, workers=workers, desc="corrupt", disable=not progress
        ):
            pass

    def key(self, subject: Subject, corruption: str, severity: int) -> str:
        """What a prepared scan depends on, hashed: the raw files (path, size, modification
        time), the corruption, severity, seed and sequences, and the preprocessing's crop."""
        files = []
        for path in subject.files:
            try:
                stat = path.stat()
                files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
            except OSError:
                files.append([str(path), None, None])
        value = {
            **_FORMAT,
            "subject": subject.subject_id,
            "files": files,
            "corruption": corruption,
            "severity": int(severity),
            "seed": self.seed if severity else None,
            "modalities": list(self.modalities) if self.modalities and severity else None,
            "shape": list(self.preprocessing.shape),
            "n4": bool(self.preprocessing.n4),
            "n4_shrink": int(self.preprocessing.n4_shrink),
            "margin": int(self.preprocessing.margin),
        }
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]


class _PrepareScan:
    """Picklable: one job of :meth:`CorruptedScans.prepare` (single-threaded SimpleITK, as the
    dataset preparation's workers)."""

    def __init__(self, scans: CorruptedScans):
        self.scans = scans

    def __call__(self, job) -> None:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        self.scans.get(*job)


def spacing_of(subject: Subject) -> tuple[float, float, float]:
    """A subject's voxel size in mm, in the RAS+ orientation its arrays are loaded in."""
    import nibabel as nib

    try:
        zooms = nib.as_closest_canonical(nib.load(str(subject.images[0]))).header.get_zooms()
    except Exception as exc:  # nibabel raises many types for bad headers
        raise DataError(f"{subject.images[0]}: not a readable NIfTI file ({exc})") from None
    return tuple(float(z) for z in zooms[:3])


def _own(folder: Path) -> None:
    """Creates the cache folder, or accepts it when it is empty or stamped as ours."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: exists and is not a folder; choose a new cache folder")
    stamp = folder / _STAMP
    if folder.is_dir() and any(folder.iterdir()) and not stamp.is_file():
        raise DataError(
            f"{folder}: a non-empty folder that is not a corrupted-scan cache (no {_STAMP}); "
            "choose a new or empty folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        write_json_atomic(stamp, _FORMAT, indent=None)


def _read(path: Path, shape: tuple[int, ...]) -> PreparedScan | None:
    """A cached scan, checked (untrusted input); None when absent or not what it should be,
    so that it is prepared again and the file replaced."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            image, mask = archive["image"], archive["mask"]
            box, native = archive["box"], archive["native_shape"]
            params = json.loads(str(archive["params"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # json.JSONDecodeError is a ValueError
    valid = (
        image.shape == shape + (4,)
        and image.dtype == np.float32
        and mask.shape == shape
        and box.shape == (3, 2)
        and native.shape == (3,)
        and isinstance(params, dict)
        and bool(np.all(np.isfinite(image)))
        and all(0 <= lo < hi <= n for (lo, hi), n in zip(box.tolist(), native.tolist()))
    )
    if not valid:
        return None
    return PreparedScan(
        image,
        mask.astype(bool),
        tuple(slice(int(lo), int(hi)) for lo, hi in box.tolist()),
        tuple(int(n) for n in native.tolist()),
        params,
    )


def _write(path: Path, scan: PreparedScan) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            image=scan.image.astype(np.float32),
            mask=scan.mask.astype(np.uint8),
            box=np.array([[s.start, s.stop] for s in scan.box], np.int64),
            native_shape=np.array(scan.native_shape, np.int64),
            params=np.array(json.dumps(scan.params, sort_keys=True)),
        )


@dataclass(frozen=True)
class CorruptionAugmentation:
    """Random corruptions at random severities for training (``advseg train --defense
    corruptions``).

    Applied to a prepared volume (cropped and resized, before standardisation), not to the
    native scan: preparing a native scan again for every training step (N4 takes seconds per
    sequence) would make an epoch many times slower, while the corruptions are defined in physical
    units and carry over to the prepared grid given its voxel size (``spacing``). What the
    model meets at test time is the native route (:class:`CorruptedScans`).

    Attributes:
        corruptions: The names drawn from (uniformly).
        rate: The probability that a training volume is corrupted.
        spacing: The prepared grid's voxel size in mm (:func:`prepared_spacing`).
    """

    corruptions: tuple[str, ...]
    rate: float
    spacing: tuple[float, float, float]

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        """``image`` (unstandardised) corrupted or not, from ``seed``."""
        from keras_advseg.corruptions import corrupt

        rng = np.random.default_rng(int(seed) & 0xFFFFFFFF)
        if rng.uniform() >= self.rate:
            return image
        name = self.corruptions[int(rng.integers(len(self.corruptions)))]
        severity = int(rng.integers(1, 6))
        return corrupt(image, name, severity, spacing=self.spacing, seed=int(rng.integers(2**31)))


def prepared_spacing(prepared, subjects: int = 3) -> tuple[float, float, float]:
    """The voxel size (mm) of a prepared cache's grid: the native spacing times the crop's
    extent over the prepared shape, the median over the first ``subjects`` raw training scans;
    1 mm when the raw dataset is not at hand."""
    from keras_advseg.data import discover_subjects
    from keras_advseg.data.preprocess import brain_mask, crop_box

    source = prepared.source
    if source is None or not Path(source).is_dir():
        return (1.0, 1.0, 1.0)
    wanted = set(prepared.ids("train")[:subjects])
    found = []
    for subject in discover_subjects(source):
        if subject.subject_id not in wanted:
            continue
        image, _ = subject.load()
        box = crop_box(brain_mask(image), prepared.config.margin)
        extent = np.array([s.stop - s.start for s in box], float)
        found.append(np.array(spacing_of(subject)) * extent / np.array(prepared.shape, float))
    if not found:
        return (1.0, 1.0, 1.0)
    return tuple(float(v) for v in np.median(found, axis=0))
