"""One subject on disk: where its files are and how to read them uniformly.

Whatever the source layout, :meth:`Subject.load` returns the four modalities in
the order ``(t1, t1gd, t2, flair)`` and labels in the BraTS-2017 convention
(0 background, 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour),
reoriented to the closest canonical (RAS+) orientation, so axis 2 is axial.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from keras_advseg.data.errors import DataError
from keras_advseg.vocabulary import BRATS_LABELS, MODALITIES

__all__ = ["BRATS2023_LABELS", "BRATS_LABELS", "IDENTITY_LABELS", "MODALITIES", "Subject"]

IDENTITY_LABELS = ((0, 0), (1, 1), (2, 2), (4, 4))
BRATS2023_LABELS = ((0, 0), (1, 1), (2, 2), (3, 4))

_AFFINE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Subject:
    """A subject's files and how to map them onto the package's conventions.

    Attributes:
        subject_id: Identifier (the folder or file name of the source layout).
        layout: Source layout: ``"brats2017"``, ``"brats2021"``, ``"brats2023"``
            or ``"msd"``.
        images: One file per modality in :data:`MODALITIES` order, or a single
            4-D file whose last axis holds the modalities (see ``channels``).
        seg: Label file, or None for an inference-only subject.
        channels: For a 4-D image, the index of each of :data:`MODALITIES` in
            its last axis; None for one file per modality.
        label_map: Pairs ``(source_label, brats_label)``.
    """

    subject_id: str
    layout: str
    images: tuple[Path, ...]
    seg: Path | None = None
    channels: tuple[int, ...] | None = None
    label_map: tuple[tuple[int, int], ...] = field(default=IDENTITY_LABELS)

    @property
    def has_labels(self) -> bool:
        return self.seg is not None

    @property
    def files(self) -> tuple[Path, ...]:
        return self.images + ((self.seg,) if self.seg is not None else ())

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Reads, validates and reorients the subject.

        Returns:
            ``(image, labels)``: ``image`` float32 ``(X, Y, Z, 4)`` in
            :data:`MODALITIES` order; ``labels`` uint8 ``(X, Y, Z)`` in the
            BraTS-2017 convention, or None when the subject has no label file.

        Raises:
            DataError: a file is missing, unreadable or truncated; shapes or
                affines disagree between files; a voxel is not finite; a label
                value is not one the layout defines.
        """
        headers = [_open(p) for p in self.files]
        self._check_geometry(headers)
        canonical = [nib.as_closest_canonical(img) for img in headers]
        if self.channels is None:
            image = np.stack(
                [_read(img, path) for img, path in zip(canonical, self.images)], axis=-1
            )
        else:
            full = _read(canonical[0], self.images[0])
            if full.ndim != 4 or full.shape[-1] <= max(self.channels):
                raise DataError(
                    f"{self.images[0]}: expected a 4-D image with at least "
                    f"{max(self.channels) + 1} modalities on its last axis, got shape {full.shape}"
                )
            image = full[..., list(self.channels)]
        image = np.ascontiguousarray(image, dtype=np.float32)
        labels = None
        if self.seg is not None:
            labels = self._convert_labels(_read(canonical[-1], self.seg))
        return image, labels

    def affine(self) -> np.ndarray:
        """The RAS+ voxel-to-world affine of the loaded arrays."""
        return nib.as_closest_canonical(_open(self.images[0])).affine

    def _check_geometry(self, headers: list) -> None:
        for index, (path, img) in enumerate(zip(self.files, headers)):
            four_d = self.channels is not None and index == 0  # the Decathlon's 4-D image
            expected = 4 if four_d else 3
            if len(img.shape) != expected:
                raise DataError(
                    f"{path}: expected a {expected}-D image, got shape {tuple(img.shape)}"
                )
        ref_path, ref = self.files[0], headers[0]
        ref_shape = ref.shape[:3]
        for path, img in zip(self.files[1:], headers[1:]):
            if img.shape[:3] != ref_shape:
                raise DataError(
                    f"{path}: shape {img.shape[:3]} disagrees with {ref_path.name} "
                    f"shape {ref_shape}; all modalities and the label map must share one grid"
                )
            if not np.allclose(img.affine, ref.affine, atol=_AFFINE_TOLERANCE):
                raise DataError(
                    f"{path}: affine disagrees with {ref_path.name}; "
                    "all modalities and the label map must share one voxel-to-world affine"
                )

    def _convert_labels(self, raw: np.ndarray) -> np.ndarray:
        rounded = np.rint(raw)
        source_values = np.array([s for s, _ in self.label_map])
        found = np.unique(rounded)
        unexpected = [v for v in found if v not in source_values or v != int(v)]
        if unexpected or not np.allclose(rounded, raw):
            bad = unexpected or sorted(set(np.unique(raw)) - set(found))
            raise DataError(
                f"{self.seg}: unexpected label values {[float(v) for v in bad][:5]}; "
                f"the {self.layout} layout defines {sorted(int(v) for v in source_values)}"
            )
        lut = np.zeros(int(source_values.max()) + 1, dtype=np.uint8)
        for source, target in self.label_map:
            lut[source] = target
        return lut[rounded.astype(np.int64)]


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers
        raise DataError(f"{path}: not a readable NIfTI file ({exc})") from None


def _read(img, path: Path) -> np.ndarray:
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or not np.issubdtype(dtype, np.number) or dtype.kind == "c":
        raise DataError(
            f"{path}: voxels of type {dtype}; expected real intensities (a magnitude image, "
            "not complex or RGB)"
        )
    try:
        data = img.get_fdata(dtype=np.float32)
    except (EOFError, OSError, zlib.error, ValueError, TypeError) as exc:
        raise DataError(f"{path}: truncated or corrupt image data ({exc})") from None
    if not np.all(np.isfinite(data)):
        count = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataError(
            f"{path}: {count} non-finite voxels (NaN or Inf); expected finite intensities"
        )
    return data
