"""`advseg certify` end to end, and Gaussian noise training."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from support import assert_help_files_written, fails_cleanly, read_rows, scoring_args

from keras_advseg.certification import SIGMA_UNIT, certified_dice, certify, region_certified_dice
from keras_advseg.data.prepare import load_prepared

pytestmark = pytest.mark.one_fixture_seed  # the command's rows against the library's


def test_certify_writes_rows_that_equal_the_library_and_tracks_them(
    fitted_unet, prepared_dir, tmp_path, new_store
):
    from click.testing import CliRunner

    from keras_advseg.cli import main

    path = tmp_path / "model.keras"
    fitted_unet.save(path)
    uri = new_store(tmp_path, "m.db")
    out = tmp_path / "cert"
    result = CliRunner().invoke(
        main,
        scoring_args(
            path,
            prepared_dir,
            out,
            uri,
            "--sigma",
            "0.05,0.25",
            "--n",
            "60",
            "--n0",
            "5",
            "--subjects",
            "1",
            "--seed",
            "4",
            command="certify",
        ),
    )
    assert result.exit_code == 0, result.output
    assert "sigma 0.05: certified Dice WT" in result.output and "covers l-inf" in result.output
    assert "per region WT" in result.output and "standardised units; raw intensity" in result.output
    assert_help_files_written(("certify",), out)
    rows = read_rows(out / "certified.csv")
    assert [float(r["sigma"]) for r in rows] == [0.05, 0.25]
    prepared = load_prepared(prepared_dir)
    subject = prepared.ids("test")[0]
    image, labels = prepared.load(subject)
    for k, row in enumerate(rows):
        certificate = certify(
            fitted_unet, image, sigma=float(row["sigma"]), n=60, n0=5, seed=4 * 1_000_003 + k
        )
        dice = certified_dice(labels, certificate.labels)
        regions = region_certified_dice(labels, certificate.regions)
        assert row["subject"] == subject
        for r in ("wt", "tc", "et"):
            assert float(row[f"certified_dice_{r}"]) == pytest.approx(dice[r])
            assert float(row[f"region_certified_dice_{r}"]) == pytest.approx(regions[r])
            assert float(row[f"region_abstain_rate_brain_{r}"]) == pytest.approx(
                certificate.region_abstain_rate(r, np.any(image != 0, axis=-1))
            )
        # sigma and the radius in standardised units; the radius in raw intensity per sequence
        assert float(row["radius"]) == pytest.approx(float(row["sigma"]) * 0.6744897501960817)
        for c, m in enumerate(("t1", "t1gd", "t2", "flair")):
            assert float(row[f"radius_raw_{m}"]) == pytest.approx(
                float(row["radius"]) * float(prepared.std[c]), rel=1e-6
            )
    summary = json.loads((out / "certify_summary.json").read_text())
    assert set(summary["sigmas"]) == {"0.05", "0.25"}
    assert summary["settings"]["sigma_unit"] == SIGMA_UNIT
    assert summary["settings"]["input_std"] == pytest.approx([float(v) for v in prepared.std])
    stored = summary["smoothed_models"]["0.25"]
    assert stored["sigma"] == 0.25 and stored["sigma_unit"] == SIGMA_UNIT
    assert stored["radius"] == pytest.approx(float(rows[1]["radius"]))
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("keras-advseg").experiment_id])[0]
    assert run.data.metrics["certified_dice_wt_sigma0.25"] == pytest.approx(
        float(rows[1]["certified_dice_wt"])
    )
    assert run.data.metrics["region_certified_dice_tc_sigma0.25"] == pytest.approx(
        float(rows[1]["region_certified_dice_tc"])
    )
    assert run.data.params["sigma_unit"] == "standardised"
    base = ["certify", path, "--data", prepared_dir, "--out", tmp_path / "x", "--tracking-uri", uri]
    fails_cleanly([*base, "--sigma", "0"], contains=("--sigma must be positive",))
    fails_cleanly([*base, "--tau", "1"], contains=("--tau",))


def test_gaussian_noise_training_adds_noise_of_sigma_in_input_units_and_round_trips():
    from keras_advseg.config import TrainConfig
    from keras_advseg.defenses import GaussianNoiseTrainer
    from keras_advseg.models import unet3d

    network = unet3d((8, 8, 8, 4), base_filters=2, depth=2)
    trainer = GaussianNoiseTrainer(network, sigma=0.2, seed=1)
    x = np.zeros((2, 8, 8, 8, 4), "float32")
    x[:, 0, 0, 0, 0] = 10.0  # an intensity range of 10: it does not scale the noise
    noise = np.asarray(trainer.noisy(keras.ops.convert_to_tensor(x))) - x
    assert noise.std() == pytest.approx(0.2, rel=0.05)  # the certificate's units
    assert trainer.get_config()["sigma"] == 0.2
    assert TrainConfig(defense="gaussian", noise_sigma=0.5).noise_sigma == 0.5
    from keras_advseg.training.fit import build_trainer

    built = build_trainer(TrainConfig(defense="gaussian", noise_sigma=0.5), network)
    assert isinstance(built, GaussianNoiseTrainer) and built.sigma == 0.5
