"""`advseg predict` and `advseg score`: native geometry, label conventions, refusals, resumption."""

from __future__ import annotations

import shutil

import keras
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from support import assert_help_files_written, fails_cleanly

from keras_advseg.cli import main
from keras_advseg.data import discover_subjects
from keras_advseg.data.prepare import load_prepared
from keras_advseg.export import save_model
from keras_advseg.inference import Preprocessing, restore, segment
from keras_advseg.metrics import brats_dice, predict_labels


@pytest.fixture(scope="module")
def fitted(fitted_unet, prepared_dir, tmp_path_factory):
    """The small trained UNet, saved with its preprocessing."""
    model = fitted_unet
    prepared = load_prepared(prepared_dir)
    path = save_model(
        model,
        tmp_path_factory.mktemp("fitted") / "model.keras",
        Preprocessing.from_prepared(prepared),
    )
    return path, model, prepared


def predict(*args):
    result = CliRunner().invoke(main, ["predict", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_restore_inverts_crop_and_resize(phantom_dir):
    from keras_advseg.data.preprocess import crop_and_resize, resize

    subject = discover_subjects(phantom_dir)[0]
    image, labels = subject.load()
    _, _, box = crop_and_resize(image, (16, 16, 16), n4=False, n4_shrink=4, margin=2, name="s")
    crop = tuple(b.stop - b.start for b in box)
    dice = {}
    for shape in ((16, 16, 16), (32, 32, 32), crop):
        model_space = resize(labels[box], shape, order=0)
        one_hot = np.eye(4, dtype=np.float32)[np.searchsorted([0, 1, 2, 4], model_space)]
        native = restore(one_hot, box, labels.shape)
        assert native.shape == labels.shape + (4,)
        np.testing.assert_allclose(native.sum(-1), 1.0, atol=1e-5)
        predicted = np.array([0, 1, 2, 4], np.uint8)[native.argmax(-1)]
        dice[shape] = brats_dice(labels, predicted)["wt"]
        if shape == crop:  # no resampling: the round trip is exact, crop and placement included
            np.testing.assert_array_equal(predicted, labels)
    assert 0.7 < dice[(16, 16, 16)] < dice[(32, 32, 32)] < 1.0  # only resampling loses detail


def test_predict_writes_native_label_maps_that_score_like_the_model(fitted, phantom_dir, tmp_path):
    path, model, prepared = fitted
    out = tmp_path / "pred"
    predict(path, phantom_dir, "--out", out, "--probabilities")
    subjects = discover_subjects(phantom_dir)
    for subject in subjects:
        written = nib.load(str(out / f"{subject.subject_id}.nii.gz"))
        source = nib.load(str(subject.images[0]))
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
        assert written.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}
        probabilities = nib.load(str(out / f"{subject.subject_id}_probabilities.nii.gz"))
        assert probabilities.shape == source.shape + (4,)
    assert_help_files_written(("predict",), out)
    result = CliRunner().invoke(
        main, ["score", str(out), "--data", str(phantom_dir), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert_help_files_written(("score",), tmp_path / "s")
    import csv

    with open(tmp_path / "s" / "scores.csv") as handle:
        rows = {row["subject"]: row for row in csv.DictReader(handle)}
    from keras_advseg.data.preprocess import crop_and_resize

    by_id = {s.subject_id: s for s in subjects}
    for subject_id in prepared.train_ids:
        image, labels = prepared.load(subject_id)
        model_space = brats_dice(labels, predict_labels(model, image[None])[0])["wt"]
        # predict = the model on the cached (identically preprocessed) volume, mapped back
        raw, native_labels = by_id[subject_id].load()
        _, _, box = crop_and_resize(raw, (16, 16, 16), n4=False, n4_shrink=4, margin=2, name="s")
        probabilities = np.asarray(keras.ops.softmax(model(image[None]), axis=-1))[0]
        expected = np.array([0, 1, 2, 4], np.uint8)[
            restore(probabilities, box, native_labels.shape).argmax(-1)
        ]
        written = np.asarray(
            nib.as_closest_canonical(nib.load(str(out / f"{subject_id}.nii.gz"))).dataobj
        )
        assert np.mean(written != expected) < 1e-3
        in_python = segment(model, raw, Preprocessing.from_prepared(prepared))  # the library call
        assert np.mean(np.array([0, 1, 2, 4], np.uint8)[in_python.argmax(-1)] != written) < 1e-3
        assert model_space > 0.5
        native = float(rows[subject_id]["dice_wt"])
        assert native == pytest.approx(brats_dice(native_labels, written)["wt"])
        assert native > 0.4 and float(rows[subject_id]["hd95_wt"]) >= 0
    assert "WT Dice" in result.output and "HD95" in result.output


def test_conventions_orientation_resumption_and_refusals(fitted, phantom_dir, tmp_path, models):
    path, _, _ = fitted
    subject = discover_subjects(phantom_dir)[0]
    out17, out23 = tmp_path / "p17", tmp_path / "p23"
    predict(path, subject.images[0].parent, "--out", out17)
    predict(
        path,
        "--t1",
        subject.images[0],
        "--t1gd",
        subject.images[1],
        "--t2",
        subject.images[2],
        "--flair",
        subject.images[3],
        "--out",
        out23,
        "--labels",
        "brats2023",
    )
    a = np.asarray(nib.load(str(out17 / f"{subject.subject_id}.nii.gz")).dataobj)
    (only,) = list(out23.iterdir())
    b = np.asarray(nib.load(str(only)).dataobj)
    np.testing.assert_array_equal(np.where(a == 4, 3, a), b)

    # the same scan stored left-right flipped (another orientation) gives the same segmentation
    flipped = tmp_path / "flipped" / subject.subject_id
    flipped.mkdir(parents=True)
    for file in subject.files:
        img = nib.load(str(file))
        affine = img.affine @ np.array(
            [[-1, 0, 0, img.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
        )
        nib.save(
            nib.Nifti1Image(np.asarray(img.dataobj)[::-1], affine, img.header),
            str(flipped / file.name),
        )
    predict(path, flipped, "--out", tmp_path / "pf")
    again = nib.load(str(tmp_path / "pf" / f"{subject.subject_id}.nii.gz"))
    assert np.allclose(again.affine, nib.load(str(flipped / subject.files[0].name)).affine)
    np.testing.assert_array_equal(np.asarray(again.dataobj)[::-1], a)

    before = (out17 / f"{subject.subject_id}.nii.gz").stat().st_mtime_ns
    assert "0 label maps" in predict(path, subject.images[0].parent, "--out", out17)
    assert (out17 / f"{subject.subject_id}.nii.gz").stat().st_mtime_ns == before
    fails_cleanly(
        ["predict", models / "a.keras", phantom_dir, "--out", tmp_path / "x"],
        contains=["a.keras", "does not record the preprocessing"],
    )
    fails_cleanly(
        ["predict", path, "--t1", subject.images[0], "--out", tmp_path / "x"],
        contains=["--t1, --t1gd, --t2 and --flair"],
    )
    missing = tmp_path / "partial"
    shutil.copytree(out17, missing)
    fails_cleanly(
        ["score", missing, "--data", phantom_dir, "--out", tmp_path / "s"],
        contains=["missing prediction"],
    )


def test_sliding_window_and_resize_agree_when_the_crop_fits_the_model(phantom_dir, tmp_path):
    """With a model whose input equals the cropped scan, the two paths see the same volume."""
    from keras_advseg.data.preprocess import crop_and_resize

    subject = discover_subjects(phantom_dir)[0]
    image, _ = subject.load()
    _, _, box = crop_and_resize(image, None, n4=False, n4_shrink=4, margin=2, name="s")
    crop = tuple(b.stop - b.start for b in box)
    prepared = Preprocessing(shape=crop, n4=False, n4_shrink=4, margin=2, normalization="volume")
    keras.utils.set_random_seed(0)
    inputs = keras.Input(crop + (4,))
    model = keras.Model(inputs, keras.layers.Conv3D(4, 3, padding="same")(inputs))
    path = save_model(model, tmp_path / "m.keras", prepared)
    folder = subject.images[0].parent
    predict(path, folder, "--out", tmp_path / "resize")
    predict(path, folder, "--out", tmp_path / "tiles", "--sliding-window")
    a = np.asarray(nib.load(str(tmp_path / "resize" / f"{subject.subject_id}.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "tiles" / f"{subject.subject_id}.nii.gz")).dataobj)
    assert np.mean(a == b) > 0.999


def test_evaluate_native_scores_clean_and_attacked_inputs_in_the_scans_space(
    fitted, phantom_dir, prepared_dir, tmp_path, new_store
):
    from support import read_rows, run_evaluate

    path, _, prepared = fitted
    out = tmp_path / "eval"
    run_evaluate(path, prepared_dir, out, new_store(tmp_path, "m.db"), "--eps", "0.05", "--native")
    rows = read_rows(out / "per_subject.csv")
    assert {r["attack"] for r in rows} == {"none", "fgsm"}
    clean = {r["subject"]: r for r in rows if r["attack"] == "none"}
    predicted = {s.subject_id: s for s in discover_subjects(phantom_dir)}
    # the clean native scores are what `predict` + `score` give for the same model
    predict(path, phantom_dir, "--out", tmp_path / "pred")
    result = CliRunner().invoke(
        main,
        ["score", str(tmp_path / "pred"), "--data", str(phantom_dir), "--out", str(tmp_path / "s")],
    )
    assert result.exit_code == 0, result.output
    scores = {r["subject"]: r for r in read_rows(tmp_path / "s" / "scores.csv")}
    for subject_id, row in clean.items():
        assert subject_id in predicted
        for region in ("wt", "tc", "et"):
            assert float(row[f"native_dice_{region}"]) == pytest.approx(
                float(scores[subject_id][f"dice_{region}"]), abs=1e-6
            )
            assert float(row[f"native_hd95_{region}"]) == pytest.approx(
                float(scores[subject_id][f"hd95_{region}"]), abs=1e-6
            )
    attacked = [r for r in rows if r["attack"] == "fgsm"]
    assert np.mean([float(r["native_dice_wt"]) for r in attacked]) < np.mean(
        [float(r["native_dice_wt"]) for r in clean.values()]
    )
