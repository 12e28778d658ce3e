"""Faults in the data a user points the tool at, and in the caches it reads back."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
from support import fails_cleanly, snapshot


def test_prepare_refuses_a_non_empty_folder_it_does_not_own(phantom_dir, tmp_path):
    mine = tmp_path / "my_project"
    (mine / "volumes").mkdir(parents=True)
    (mine / "volumes" / "notes.txt").write_text("precious")
    (mine / "results.csv").write_text("1,2,3")
    before = snapshot(mine)
    fails_cleanly(
        ["data", "prepare", phantom_dir, "--out", mine, "--no-n4", "--shape", 16],
        contains=[mine, "not a prepared cache"],
    )
    assert snapshot(mine) == before


def test_prepare_into_a_file(phantom_dir, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    fails_cleanly(
        ["data", "prepare", phantom_dir, "--out", target, "--no-n4", "--shape", 16],
        contains=[target, "is a file"],
    )
    assert target.read_text() == "x"


def copy_subjects(phantom_dir, tmp_path, n=2):
    raw = tmp_path / "raw"
    for folder in sorted(p for p in phantom_dir.iterdir() if p.is_dir())[:n]:
        shutil.copytree(folder, raw / folder.name)
    return raw


def test_images_that_are_not_3d_are_named(phantom_dir, tmp_path):
    raw = copy_subjects(phantom_dir, tmp_path)
    flair = next(raw.glob("*/*_flair.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2, 2), np.float32), np.eye(4)), str(flair))
    fails_cleanly(
        ["data", "prepare", raw, "--out", tmp_path / "o", "--no-n4"],
        contains=[flair, "expected a 3-D image"],
    )
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(flair))
    fails_cleanly(
        ["data", "prepare", raw, "--out", tmp_path / "o", "--no-n4"],
        contains=[flair, "expected a 3-D image"],
    )


def test_an_all_zero_subject_is_named(phantom_dir, tmp_path):
    raw = copy_subjects(phantom_dir, tmp_path)
    subject = sorted(raw.iterdir())[0]
    for path in subject.glob("*.nii.gz"):
        img = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine), str(path))
    fails_cleanly(
        ["data", "prepare", raw, "--out", tmp_path / "o", "--no-n4"],
        contains=[subject.name, "empty brain mask"],
    )


def test_a_dataset_without_labels_is_named(phantom_dir, tmp_path):
    raw = copy_subjects(phantom_dir, tmp_path)
    for seg in raw.glob("*/*_seg.nii.gz"):
        seg.unlink()
    fails_cleanly(
        ["data", "prepare", raw, "--out", tmp_path / "o", "--no-n4"],
        contains=[raw, "no subject has a label file"],
    )


def corrupt_copy(prepared_dir, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(prepared_dir, cache)
    return cache


def test_corrupt_caches_are_named(prepared_dir, tmp_path, uri):
    cache = corrupt_copy(prepared_dir, tmp_path)
    manifest = cache / "prepared.json"
    original = json.loads(manifest.read_text())
    manifest.write_text("{ not json")
    fails_cleanly(["data", "info", cache], contains=[manifest, "malformed prepared.json"])
    escaped = dict(original, split=dict(original["split"], train=["../../outside"]))
    manifest.write_text(json.dumps(escaped))
    fails_cleanly(["data", "info", cache], contains=[manifest, "is not a plain name"])
    broken = dict(
        original,
        statistics={"mean": [0, 0, 0, float("nan")], "std": [1, 1, 1, 1], "split": "train"},
    )
    manifest.write_text(json.dumps(broken))
    fails_cleanly(
        ["data", "info", cache], contains=[manifest, "invalid standardisation statistics"]
    )
    manifest.write_text(json.dumps(original))
    volume = cache / "volumes" / f"{original['split']['train'][0]}.npz"
    volume.write_bytes(b"PK\x03\x04 truncated")
    fails_cleanly(
        [
            "train",
            "--data",
            cache,
            "--out",
            tmp_path / "run",
            "--preset",
            "smoke",
            "--epochs",
            1,
            "--tracking-uri",
            uri,
        ],
        contains=[volume],
    )
