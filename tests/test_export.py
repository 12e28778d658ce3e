"""UNet structure, the slice-wise wrapper, saving and SavedModel export."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from support import assert_help_files_written, tiny3d

from keras_advseg.cli import main
from keras_advseg.export import export_savedmodel, load_model, save_model
from keras_advseg.models import SliceWise, unet2d


def test_keras_round_trip_identical(tmp_path):
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 16, 4)).astype("float32")
    for model in (tiny3d(), SliceWise(unet2d((16, 16, 4), base_filters=2, depth=2))):
        model(x)
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        np.testing.assert_array_equal(load_model(path)(x), model(x))


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="expected an existing .keras model file"):
        load_model(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.keras: cannot load model"):
        load_model(bad)


def test_savedmodel_export_matches_keras(tmp_path):
    model = tiny3d()
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 16, 4)).astype("float32")
    export_savedmodel(model, tmp_path / "sm")
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = reloaded.serve(tf.constant(x))
    probs = keras.ops.softmax(model(x), axis=-1)
    np.testing.assert_allclose(served["probabilities"], probs, atol=1e-5)
    index = np.argmax(probs, axis=-1)
    np.testing.assert_array_equal(served["labels"], np.where(index == 3, 4, index))
    with pytest.raises(FileExistsError, match="already exists"):
        export_savedmodel(model, tmp_path / "sm")


def test_export_cli(tmp_path):
    model = tiny3d()
    model.save(tmp_path / "m.keras")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.keras"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "saved_model.pb").is_file()
    assert_help_files_written(("export",), tmp_path / "out")
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "nope.keras"), str(tmp_path / "o2")]
    )
    assert (
        result.exit_code == 2
        and "nope.keras: expected an existing .keras model file" in result.output
    )


def test_the_docs_serving_snippet_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    (snippet,) = [
        b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "tf.saved_model.load" in b
    ]
    model = tiny3d()
    export_savedmodel(model, tmp_path / "served_model")
    monkeypatch.chdir(tmp_path)
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 4)).astype("float32")
    namespace = {"image": image}
    exec(snippet, namespace)
    assert namespace["labels"].shape == (1, 16, 16, 16)
    np.testing.assert_allclose(
        np.asarray(namespace["probabilities"]),
        np.asarray(keras.ops.softmax(model(image), axis=-1)),
        atol=1e-5,
    )


def exported_with_preprocessing(preprocessing, tmp_path):
    """A tiny model saved with ``preprocessing``, exported by ``advseg export
    --with-preprocessing`` into ``tmp_path/served``: ``(model, the loaded SavedModel)``."""
    model = tiny3d()
    path = save_model(model, tmp_path / "m.keras", preprocessing)
    result = CliRunner().invoke(
        main, ["export", str(path), str(tmp_path / "served"), "--with-preprocessing"]
    )
    assert result.exit_code == 0, result.output
    return model, tf.saved_model.load(str(tmp_path / "served"))


@pytest.mark.parametrize("normalization", ["global", "volume"])
def test_export_with_preprocessing_takes_raw_intensities(tmp_path, normalization):
    from keras_advseg.data.preprocess import standardize
    from keras_advseg.inference import Preprocessing

    rng = np.random.default_rng(0)
    raw = rng.uniform(50, 900, size=(2, 16, 16, 16, 4)).astype("float32")
    raw[:, :3] = 0  # background
    stats = normalization == "global"
    preprocessing = Preprocessing(
        shape=(16, 16, 16),
        n4=False,
        n4_shrink=4,
        margin=2,
        normalization=normalization,
        mean=(400.0, 500.0, 450.0, 475.0) if stats else None,
        std=(200.0, 250.0, 225.0, 240.0) if stats else None,
    )
    model, served = exported_with_preprocessing(preprocessing, tmp_path)
    mask = np.any(raw != 0, axis=-1, keepdims=True)
    got = served.serve(tf.constant(raw), tf.constant(mask))["probabilities"].numpy()
    mean = None if not stats else np.asarray(preprocessing.mean, np.float32)
    std = None if not stats else np.asarray(preprocessing.std, np.float32)
    standardised = np.stack([standardize(v, m[..., 0], mean, std) for v, m in zip(raw, mask)])
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(standardised), axis=-1))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    model.save(tmp_path / "plain.keras")
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "plain.keras"), str(tmp_path / "x"), "--with-preprocessing"]
    )
    assert result.exit_code == 2 and "does not record the preprocessing" in result.output


def test_the_exported_preprocessing_gives_what_predict_gives_on_real_scans(
    phantom_dir, prepared_dir, tmp_path
):
    """On the phantom's scans, voxel by voxel: the SavedModel fed what
    crop_resize_and_mask returns equals the model on predict's own preprocessing."""
    from keras_advseg.data import discover_subjects
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.inference import Preprocessing, crop_resize_and_mask, preprocess

    preprocessing = Preprocessing.from_prepared(load_prepared(prepared_dir))
    model, served = exported_with_preprocessing(preprocessing, tmp_path)
    edge = 0
    for subject in discover_subjects(phantom_dir)[:3]:
        image, _ = subject.load()
        x, _ = preprocess(image, preprocessing)
        raw, mask, _ = crop_resize_and_mask(image, preprocessing)
        edge += int(np.sum(np.any(raw != 0, axis=-1) & ~mask[..., 0]))
        got = served.serve(tf.constant(raw[None]), tf.constant(mask[None]))
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(x[None]), axis=-1))
        np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5)
    assert edge > 0  # the linearly resized image's non-zero voxels are not the mask
