"""Shared fixtures: tiny NIfTI datasets in every supported layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nibabel as nib
import numpy as np
import pytest

SHAPE = (12, 10, 8)
# Constant intensity per modality in package order (t1, t1gd, t2, flair), so order is checkable.
LEVEL = {"t1": 10.0, "t1gd": 20.0, "t2": 30.0, "flair": 40.0}


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def label_volume(values=(0, 1, 2, 4)) -> np.ndarray:
    """A label map holding each of ``values`` in a known slab along axis 0."""
    labels = np.zeros(SHAPE, np.uint8)
    for i, value in enumerate(values):
        labels[3 * i : 3 * i + 3] = value
    return labels


def modality_volume(name: str) -> np.ndarray:
    data = np.full(SHAPE, LEVEL[name], np.float32)
    data[0, 0, 0] = 0  # background voxel
    return data


def write_brats(root: Path, subject: str, suffixes: dict, seg_values, sep="_", with_seg=True) -> Path:
    folder = root / subject
    for suffix, modality in suffixes.items():
        save_nifti(folder / f"{subject}{sep}{suffix}.nii.gz", modality_volume(modality))
    if with_seg:
        save_nifti(folder / f"{subject}{sep}seg.nii.gz", label_volume(seg_values))
    return folder


OLD_SUFFIXES = {"t1": "t1", "t1ce": "t1gd", "t2": "t2", "flair": "flair"}
NEW_SUFFIXES = {"t1n": "t1", "t1c": "t1gd", "t2w": "t2", "t2f": "flair"}


@pytest.fixture
def brats2021(tmp_path) -> Path:
    root = tmp_path / "brats2021"
    for i in range(3):
        write_brats(root, f"BraTS2021_{i:05d}", OLD_SUFFIXES, (0, 1, 2, 4))
    return root


@pytest.fixture
def brats2023(tmp_path) -> Path:
    root = tmp_path / "brats2023"
    for i in range(2):
        write_brats(root, f"BraTS-GLI-{i:05d}-000", NEW_SUFFIXES, (0, 1, 2, 3), sep="-")
    return root


@pytest.fixture
def msd(tmp_path) -> Path:
    root = tmp_path / "Task01_BrainTumour"
    order = ["flair", "t1", "t1gd", "t2"]
    image = np.stack([modality_volume(m) for m in order], axis=-1)
    training = []
    for i in (1, 2):
        save_nifti(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", image)
        save_nifti(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", label_volume((0, 1, 2, 3)))
        training.append({"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"})
    save_nifti(root / "imagesTs" / "BRATS_900.nii.gz", image)
    (root / "dataset.json").write_text(json.dumps({
        "name": "BRATS",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "training": training,
        "test": ["./imagesTs/BRATS_900.nii.gz"],
    }))
    return root


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Six phantom subjects at 4 mm (about 50x58x48 voxels)."""
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset

    root = tmp_path_factory.mktemp("phantom")
    synthesize_dataset(root, 6, seed=0, config=PhantomConfig(voxel_mm=4.0), progress=False)
    return root


@pytest.fixture(scope="session")
def prepared_dir(phantom_dir, tmp_path_factory) -> Path:
    """The phantom prepared at 16^3 without N4 (fast)."""
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset(phantom_dir, out, PrepareConfig(shape=(16, 16, 16), n4=False, test_fraction=0.34), progress=False)
    return out
