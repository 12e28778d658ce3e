"""Discovery and loading in every supported layout, and every validation error."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from support import (
    LEVEL,
    OLD_SUFFIXES,
    SHAPE,
    label_volume,
    modality_volume,
    save_nifti,
    write_brats,
)

from keras_advseg.data import MODALITIES, DataError, discover_subjects


def expected_levels():
    return [LEVEL[m] for m in MODALITIES]


def test_brats2021_discovery_order_and_labels(brats2021):
    subjects = discover_subjects(brats2021)
    assert [s.subject_id for s in subjects] == [
        "BraTS2021_00000",
        "BraTS2021_00001",
        "BraTS2021_00002",
    ]
    assert {s.layout for s in subjects} == {"brats2021"}
    image, labels = subjects[0].load()
    assert image.dtype == np.float32 and image.shape == SHAPE + (4,)
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    np.testing.assert_array_equal(image[5, 5, 5], expected_levels())
    np.testing.assert_array_equal(labels, label_volume((0, 1, 2, 4)))


def test_brats2017_nested_hgg_lgg(tmp_path):
    root = tmp_path / "MICCAI_BraTS_2018"
    write_brats(root / "HGG", "Brats18_2013_2_1", OLD_SUFFIXES, (0, 1, 2, 4))
    write_brats(root / "LGG", "Brats18_2013_0_1", OLD_SUFFIXES, (0, 1, 2, 4))
    subjects = discover_subjects(root)
    assert [s.layout for s in subjects] == ["brats2017", "brats2017"]
    assert len({s.subject_id for s in subjects}) == 2


def test_brats2023_converts_label_3_to_4(brats2023):
    subjects = discover_subjects(brats2023)
    assert [s.layout for s in subjects] == ["brats2023", "brats2023"]
    image, labels = subjects[0].load()
    np.testing.assert_array_equal(image[5, 5, 5], expected_levels())
    np.testing.assert_array_equal(labels, label_volume((0, 1, 2, 4)))


def test_msd_modality_order_and_label_mapping(msd):
    subjects = discover_subjects(msd)
    assert [s.subject_id for s in subjects] == ["BRATS_001", "BRATS_002", "BRATS_900"]
    assert subjects[2].seg is None and not subjects[2].has_labels
    image, labels = subjects[0].load()
    np.testing.assert_array_equal(image[5, 5, 5], expected_levels())
    # MSD: 1 edema -> 2, 2 non-enhancing -> 1, 3 enhancing -> 4
    np.testing.assert_array_equal(labels, label_volume((0, 2, 1, 4)))
    image, labels = subjects[2].load()
    assert labels is None and image.shape == SHAPE + (4,)


def test_subject_without_seg_is_inference_only(tmp_path):
    write_brats(tmp_path, "case1", OLD_SUFFIXES, (0,), with_seg=False)
    (subject,) = discover_subjects(tmp_path)
    image, labels = subject.load()
    assert labels is None and image.shape == SHAPE + (4,)


def test_reorientation_to_ras(tmp_path):
    """An LAS file (x flipped) loads flipped back, so both orientations give the same array."""
    ramp = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) + 1
    las = np.diag([-1.0, 1, 1, 1])
    las[0, 3] = SHAPE[0] - 1
    for name, data, affine in (("ras", ramp, np.eye(4)), ("las", ramp[::-1].copy(), las)):
        folder = tmp_path / name / "s"
        for suffix in OLD_SUFFIXES:
            save_nifti(folder / f"s_{suffix}.nii.gz", data, affine)
    ras_image, _ = discover_subjects(tmp_path / "ras")[0].load()
    las_subject = discover_subjects(tmp_path / "las")[0]
    las_image, _ = las_subject.load()
    np.testing.assert_array_equal(las_image, ras_image)
    assert nib.aff2axcodes(las_subject.affine()) == ("R", "A", "S")


def test_missing_modality_names_file(brats2021):
    (brats2021 / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()
    with pytest.raises(
        DataError,
        match=r"BraTS2021_00001: missing modality t2 \(expected BraTS2021_00001_t2.nii.gz\)",
    ):
        discover_subjects(brats2021)


def test_truncated_file(brats2021):
    path = brats2021 / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    subject = discover_subjects(brats2021)[0]
    with pytest.raises(DataError, match=r"BraTS2021_00000_flair.nii.gz: truncated or corrupt"):
        subject.load()


def test_unreadable_file(brats2021):
    path = brats2021 / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"BraTS2021_00000_t1.nii.gz: not a readable NIfTI file"):
        discover_subjects(brats2021)[0].load()


def test_shape_mismatch(brats2021):
    save_nifti(
        brats2021 / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz", np.ones((5, 5, 5), np.float32)
    )
    with pytest.raises(DataError, match=r"BraTS2021_00000_t2.nii.gz: shape \(5, 5, 5\) disagrees"):
        discover_subjects(brats2021)[0].load()


def test_affine_mismatch(brats2021):
    save_nifti(
        brats2021 / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz",
        modality_volume("t2"),
        np.diag([2.0, 1, 1, 1]),
    )
    with pytest.raises(DataError, match=r"BraTS2021_00000_t2.nii.gz: affine disagrees"):
        discover_subjects(brats2021)[0].load()


def test_non_finite_voxels(brats2021):
    data = modality_volume("t1")
    data[1, 1, 1] = np.nan
    save_nifti(brats2021 / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz", data)
    with pytest.raises(DataError, match=r"BraTS2021_00000_t1.nii.gz: 1 non-finite voxels"):
        discover_subjects(brats2021)[0].load()


def test_unexpected_label_values(brats2021):
    save_nifti(
        brats2021 / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz", label_volume((0, 1, 3))
    )
    with pytest.raises(
        DataError, match=r"BraTS2021_00000_seg.nii.gz: unexpected label values \[3.0\]"
    ):
        discover_subjects(brats2021)[0].load()


def test_label_3_is_invalid_in_2023_only_when_4(brats2023):
    save_nifti(
        brats2023 / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-seg.nii.gz", label_volume((0, 4))
    )
    with pytest.raises(
        DataError,
        match=r"unexpected label values \[4.0\]; the brats2023 layout defines \[0, 1, 2, 3\]",
    ):
        discover_subjects(brats2023)[0].load()


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match=r"no subjects found"):
        discover_subjects(tmp_path)
    with pytest.raises(DataError, match=r"nowhere: no such folder"):
        discover_subjects(tmp_path / "nowhere")


def test_msd_missing_listed_file(msd):
    (msd / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(
        DataError, match=r"BRATS_002.nii.gz: listed in .*dataset.json but not found"
    ):
        discover_subjects(msd)
