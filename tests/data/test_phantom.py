"""The MNI152 phantom: determinism, labels, contrasts and anatomy."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from keras_advseg.data import discover_subjects
from keras_advseg.data.phantom import CONTRAST, PhantomConfig, mni152_anatomy, synthesize_subject

FAST = PhantomConfig(voxel_mm=4.0)


def test_same_seed_same_volumes_other_seed_differs():
    a = synthesize_subject(0, 1, FAST)
    b = synthesize_subject(0, 1, FAST)
    c = synthesize_subject(1, 1, FAST)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_written_dataset_is_deterministic_and_readable(phantom_dir, tmp_path):
    from keras_advseg.data.phantom import synthesize_dataset

    synthesize_dataset(tmp_path, 2, seed=0, config=FAST, progress=False)

    def digest(root, name):
        return hashlib.sha256(
            np.ascontiguousarray(discover_subjects(root)[0].load()[0]).tobytes()
        ).hexdigest()

    assert digest(tmp_path, "a") == digest(phantom_dir, "b")
    subjects = discover_subjects(phantom_dir)
    assert len(subjects) == 6 and {s.layout for s in subjects} == {"brats2021"}
    image, labels = subjects[0].load()
    assert image.shape[-1] == 4 and np.all(image == np.rint(image))  # scanner-like integers
    assert np.all(image[labels > 0] > 0)


def test_labels_present_and_varied(phantom_dir):
    volumes = []
    for subject in discover_subjects(phantom_dir):
        _, labels = subject.load()
        values = set(np.unique(labels))
        assert {0, 2, 4} <= values <= {0, 1, 2, 4}
        volumes.append((labels > 0).sum())
    assert max(volumes) > 2 * min(volumes)  # tumour sizes vary across subjects


def test_oedema_stays_out_of_csf():
    gm, wm, mask, _ = mni152_anatomy(4.0)
    for index in range(4):
        image, labels, _ = synthesize_subject(
            0, index, PhantomConfig(voxel_mm=4.0, noise=0, bias=0, texture=0)
        )
        t2 = image[..., 2].astype(float)
        wm_level = np.median(t2[(labels == 0) & (t2 > 0)])
        # pure CSF is 3.5x white matter on T2; oedema voxels should not sit on such voxels
        assert np.mean(t2[labels == 2] > 3.2 * wm_level) < 0.02


def test_contrast_table_is_what_is_drawn():
    """Without noise, bias or texture, pure tissue follows CONTRAST relative to white matter.

    Pure voxels all share one exact value, so each tissue's level is the most
    frequent value among its voxels; tumour regions are eroded by one voxel to
    leave out partial volumes at their borders.
    """
    from scipy import ndimage

    config = PhantomConfig(voxel_mm=2.0, noise=0.0, bias=0.0, texture=0.0, oedema_fade=0.0)
    columns = ("csf", "gm", "wm", "ncr", "ed", "et")
    checked = set()

    def mode(values):
        found, counts = np.unique(values, return_counts=True)
        return float(found[np.argmax(counts)])

    for index in range(3):
        image, labels, _ = synthesize_subject(0, index, config)
        for c, modality in enumerate(CONTRAST):
            channel = image[..., c]
            wm_level = mode(channel[(labels == 0) & (channel > 0)])
            for tissue, label in (("et", 4), ("ed", 2), ("ncr", 1)):
                interior = ndimage.binary_erosion(labels == label)
                if interior.sum() < 20:
                    continue
                measured = mode(channel[interior]) / wm_level
                expected = CONTRAST[modality][columns.index(tissue)]
                assert measured == pytest.approx(expected, rel=0.05), (index, modality, tissue)
                checked.add(tissue)
    assert checked == {"et", "ed", "ncr"}


def test_enhancing_bright_on_t1gd_oedema_bright_on_flair(phantom_dir):
    for subject in discover_subjects(phantom_dir)[:3]:
        image, labels = subject.load()
        healthy = (labels == 0) & (image[..., 0] > 0)
        t1gd, flair = image[..., 1], image[..., 3]
        assert t1gd[labels == 4].mean() > 1.2 * np.median(t1gd[healthy])
        assert flair[labels == 2].mean() > 1.3 * np.median(flair[healthy])


def test_oedema_fades_towards_its_outer_edge():
    """Infiltrative oedema: on FLAIR, oedema far from the tumour is fainter than oedema next
    to it, by about ``oedema_fade`` of its contrast; with ``oedema_fade=0`` it is uniform."""
    from scipy import ndimage

    def near_minus_far(fade):
        gaps = []
        for index in range(4):
            image, labels, _ = synthesize_subject(
                0, index, PhantomConfig(voxel_mm=2.0, noise=0, bias=0, texture=0, oedema_fade=fade)
            )
            flair = image[..., 3].astype(float)
            wm_level = np.median(flair[(labels == 0) & (flair > 0)])
            oedema = ndimage.binary_erosion(
                labels == 2
            )  # away from partial volumes with healthy tissue
            beyond = ndimage.distance_transform_edt((labels != 1) & (labels != 4))
            reach = beyond[oedema].max()
            near = oedema & (beyond > 1.5) & (beyond < 0.3 * reach)
            far = oedema & (beyond > 0.7 * reach)
            if near.sum() >= 10 and far.sum() >= 10:
                gaps.append((np.median(flair[near]) - np.median(flair[far])) / wm_level)
        assert len(gaps) >= 2
        return float(np.median(gaps))

    uniform, faded = near_minus_far(0.0), near_minus_far(0.4)
    assert abs(uniform) < 0.05
    assert faded > 0.15  # (1.9 - 1.0) * 0.4 * (0.7 - 0.3) ~ 0.15 to 0.3 over white matter
