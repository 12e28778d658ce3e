"""Hostile use of the card, certify, corruption, leaderboard and training commands: no input
overwritten, no traceback, no unbounded work (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from support import fails_cleanly, save_nifti, scoring_args, train_args, write_brats

from keras_advseg.cli import main
from keras_advseg.errors import InputError


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


PREPROCESSING = {
    "version": 1,
    "modalities": ["t1", "t1gd", "t2", "flair"],
    "shape": [16, 16, 16],
    "n4": False,
    "n4_shrink": 4,
    "margin": 2,
    "normalization": "volume",
}


def test_a_card_whose_out_holds_its_model_is_refused_and_the_model_kept(models, tmp_path, uri):
    folder = tmp_path / "t"
    folder.mkdir()
    model = folder / "model.keras"
    shutil.copy(models / "a.keras", model)
    before = sha(model)
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps(PREPROCESSING))
    fails_cleanly(
        ["card", model, "--out", folder, "--preprocessing", pre, "--data", tmp_path / "missing"]
        + ["--tracking-uri", uri],
        contains=["--out", "holds the model", "an input is never an output"],
    )
    assert sha(model) == before and sorted(p.name for p in folder.iterdir()) == ["model.keras"]


@pytest.mark.parametrize("command", ["evaluate", "corruptions", "certify", "audit"])
def test_no_scoring_command_writes_into_the_folder_of_its_model(
    command, models, prepared_dir, tmp_path, uri
):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(models / "a.keras", folder / "model.keras")
    fails_cleanly(
        scoring_args(folder / "model.keras", prepared_dir, folder, uri, command=command),
        contains=[str(folder), "holds the model"],
    )
    assert [p.name for p in folder.iterdir()] == ["model.keras"]


def test_outputs_inside_a_dataset_or_over_a_model_are_refused(
    models, phantom_dir, prepared_dir, tmp_path, uri
):
    raw = tmp_path / "raw"
    shutil.copytree(phantom_dir, raw)
    listing = sorted(p.name for p in raw.iterdir())
    # predict into the data folder: its discovery would read the outputs as a subject
    fails_cleanly(
        ["predict", models / "a.keras", raw, "--out", raw / "predictions"],
        contains=["--out", "inside the dataset folder"],
    )
    fails_cleanly(
        ["data", "prepare", raw, "--out", raw / "prepared", "--shape", 16, "--no-n4"],
        contains=["inside the raw dataset folder"],
    )
    assert sorted(p.name for p in raw.iterdir()) == listing
    # a warm start from the model in --out would be replaced by the run's own model.keras
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(models / "a.keras", out / "model.keras")
    fails_cleanly(
        train_args(prepared_dir, out, uri, "--init", out / "model.keras"),
        contains=["--init model", "holds"],
    )
    fails_cleanly(["export", out / "model.keras", out], contains=["OUT_DIR", "holds the model"])
    # one card given twice is not ranked against itself
    fails_cleanly(
        ["leaderboard", out, f"{out}/", "--out", tmp_path / "board"],
        contains=["the same card", "once"],
    )


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("n4", "false", "'n4' must be true or false"),
        ("shape", [256, 256, 256], "16"),  # the model's input, refused before preparation
        ("shape", [16, 16], "'shape' must be three integers"),
        ("margin", -1, "'margin' must be an integer from 0"),
        ("normalization", "zscore", "'normalization' must be one of"),
        ("n4_shrink", True, "'n4_shrink' must be an integer"),
    ],
)
def test_card_preprocessing_json_is_checked_field_by_field_before_any_work(
    models, phantom_dir, tmp_path, uri, field, value, expected
):
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps({**PREPROCESSING, field: value}))
    out = tmp_path / "card"
    line = fails_cleanly(
        ["card", models / "a.keras", "--data", phantom_dir, "--out", out]
        + ["--preprocessing", pre, "--tracking-uri", uri],
        contains=[expected],
    )
    assert "pre.json" in line or "a.keras" in line
    assert not (out / "prepared").exists() and not (out / "model.keras").exists()


def test_the_cards_copy_keeps_its_identity_and_a_foreign_model_keras_is_not_replaced(
    models, tmp_path
):
    from keras_advseg.workflows.card.run import _with_preprocessing

    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps(PREPROCESSING))
    out = tmp_path / "card"
    out.mkdir()
    copy, first = _with_preprocessing(models / "a.keras", pre, out)
    stamp = copy.stat().st_mtime_ns
    again, second = _with_preprocessing(models / "a.keras", pre, out)
    assert again == copy and second == first and copy.stat().st_mtime_ns == stamp
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**PREPROCESSING, "margin": 3}))
    assert _with_preprocessing(models / "a.keras", other, out)[1] != first
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(models / "b.keras", foreign / "model.keras")
    with pytest.raises(InputError, match="not a copy this command wrote"):
        _with_preprocessing(models / "a.keras", pre, foreign)
    assert sha(foreign / "model.keras") == sha(models / "b.keras")


def test_corrupt_refuses_non_finite_scans_and_severities():
    from keras_advseg.corruptions import corrupt

    scan = np.full((8, 8, 8, 4), 100.0, np.float32)
    scan[1, 1, 1, 0] = np.nan
    with pytest.raises(InputError, match="image holds 1 non-finite"):
        corrupt(scan, "motion", 3)
    clean = np.full((8, 8, 8, 4), 100.0, np.float32)
    for severity in (float("nan"), float("inf"), "3", True):
        with pytest.raises(InputError, match="severity must be an integer 0-5"):
            corrupt(clean, "motion", severity)
    with pytest.raises(InputError, match="real numbers"):
        corrupt(clean.astype(np.complex64), "motion", 3)


def test_certify_refuses_bad_volumes_and_settings_and_caps_the_batch(models):
    from keras_advseg.certification import SmoothedModel, certify
    from keras_advseg.export import load_model

    model = load_model(models / "a.keras")
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 4)).astype("float32")
    cases = [
        (dict(x=x[..., :3]), "x must have 4 channels"),
        (dict(x=np.where(x > 2, np.inf, x)), "non-finite value"),
        (dict(x=np.where(x > 2, np.nan, x)), "non-finite value"),
        (dict(x=x, sigma="0.5"), "sigma must be a positive number. Received: sigma='0.5'"),
        (dict(x=x, n="100"), "n must be an integer"),
        (dict(x=x, batch_size=10**7), "batch_size must be None (chosen from memory) or an integer"),
    ]
    for override, message in cases:
        settings = {"sigma": 0.5, "n": 100, "n0": 5, "seed": 0, **override}
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            certify(model, settings.pop("x"), **settings)
    # a batch above the samples is cut to them; one that cannot fit is refused in one line,
    # naming the largest that fits
    assert SmoothedModel(model, sigma=0.5, n=100, n0=5, batch_size=200_000).batch_size == 100
    big = SmoothedModel(model, sigma=0.5, n=200_000, n0=5, batch_size=200_000)
    with pytest.raises(InputError, match=r"GiB for the forward pass .* use batch_size <= \d+"):
        big.certify(x, seed=0)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--noise-sigma", "0.5"),
        ("--noise-radius", "0.01"),
        ("--eps", "0.05"),
        ("--beta", "0.5"),
        ("--adv-steps", "3"),
        ("--trades-beta", "6"),
        ("--adv-mode", "joint"),
        ("--teacher", "x.keras"),
        ("--teacher-temperature", "2"),
        ("--corruptions", "motion"),
    ],
)
def test_a_defense_option_without_its_defense_is_refused(
    prepared_dir, tmp_path, uri, option, value
):
    fails_cleanly(
        train_args(prepared_dir, tmp_path / "t", uri, option, value),
        contains=["applies to --defense", "it would change nothing with --defense none"],
    )
    assert not (tmp_path / "t").exists()


def test_the_old_spelling_of_a_defense_option_is_refused_too(prepared_dir, tmp_path, uri):
    result = CliRunner().invoke(
        main, [str(a) for a in train_args(prepared_dir, tmp_path / "t", uri, "--artifacts", "x")]
    )
    assert result.exit_code == 2 and "--corruptions applies to --defense" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "t").exists()


def test_training_options_that_their_defense_reads_are_accepted():
    from keras_advseg.train_config import unused_options

    assert unused_options("gaussian", ["noise_sigma"]) == []
    assert unused_options("none", ["corruptions", "corruption_rate"]) == []
    assert unused_options("adversarial", ["adv_eps", "beta", "adv_mode"]) == []
    assert unused_options("fast", ["adv_mode"]) == ["adv_mode"]


def test_workers_are_capped_at_the_work_and_the_cores_and_it_is_said(capsys):
    from keras_advseg.data.parallel import capped_workers, progress_map

    used, note = capped_workers(40, 2)
    assert used <= 2 and "not 40" in note and "2 items" in note
    assert capped_workers(1, 5) == (1, None)
    assert sorted(progress_map(abs, [-1, -2], workers=40, desc="scans", disable=False)) == [1, 2]
    assert "scans: " in capsys.readouterr().err


def test_huge_ranges_and_steps_are_refused_before_any_work(models, prepared_dir, tmp_path, uri):
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, tmp_path / "c", uri, command="corruptions")
        + ["--severities", "1-1000000000000"],
        contains=["--severities", "[1, 5]"],
    )
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, tmp_path / "e", uri)
        + ["--attacks", "none", "--eps-curve"],
        contains=["eps_curve", "no attack"],
    )
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, tmp_path / "e", uri)
        + ["--iterations-sweep", "--steps", "5000"],
        contains=["iterations_sweep", "at most 1000"],
    )
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, tmp_path / "e", uri)
        + ["--steps", "100000000"],
        contains=["vafa_steps must be at most 10000", "steps=100000000"],
    )


def test_a_card_with_an_unfit_reference_is_refused_before_any_axis(
    models, prepared_dir, tmp_path, uri
):
    from keras_advseg.export import load_model, save_model
    from keras_advseg.inference import Preprocessing
    from keras_advseg.models import unet3d

    pre = Preprocessing(shape=(16, 16, 16), n4=False, n4_shrink=4, margin=2, normalization="volume")
    model = save_model(load_model(models / "a.keras"), tmp_path / "m.keras", pre)
    three = tmp_path / "three.keras"
    unet3d((16, 16, 16, 4), n_classes=3, base_filters=2, depth=2).save(three)
    out = tmp_path / "card"
    fails_cleanly(
        ["card", model, "--data", prepared_dir, "--out", out, "--reference", three]
        + ["--tracking-uri", uri],
        contains=["three.keras", "predicts 3 classes"],
    )
    assert not (out / "adversarial").exists()


def test_a_failed_study_start_pins_nothing(tmp_path):
    out = tmp_path / "study"
    dead = ["--tracking-uri", "http://127.0.0.1:9"]
    first = CliRunner().invoke(main, ["reproduce", "--preset", "smoke", "--out", str(out)] + dead)
    assert first.exit_code == 1 and "127.0.0.1:9" in first.output
    assert not (out / "study.json").exists()
    second = CliRunner().invoke(main, ["reproduce", "--preset", "quick", "--out", str(out)] + dead)
    assert second.exit_code == 1 and "started with --preset" not in second.output


def test_malformed_decathlon_manifests_are_one_line(msd, tmp_path):
    manifest = json.loads((msd / "dataset.json").read_text())
    cases = [
        ({"training": [{"label": "./labelsTr/BRATS_001.nii.gz"}]}, "training[0] must be an object"),
        ({"modality": ["FLAIR", "T1w", "t1gd", "T2w"]}, "'modality' must be an object"),
        ({"test": [7]}, "test[0] must be an object"),
        ({"training": {"image": "x"}}, "'training' must be a list"),
    ]
    for change, message in cases:
        (msd / "dataset.json").write_text(json.dumps({**manifest, **change}))
        fails_cleanly(["data", "info", msd], contains=["dataset.json", message])


def test_complex_scans_and_nan_predictions_are_one_line(brats2021, tmp_path):
    import nibabel as nib

    subject = sorted(p for p in brats2021.iterdir())[0]
    flair = next(subject.glob("*_flair.nii.gz"))
    data = np.asarray(nib.load(str(flair)).dataobj)
    save_nifti(flair, data.astype(np.complex64))
    fails_cleanly(
        ["data", "prepare", brats2021, "--out", tmp_path / "p", "--shape", 16, "--no-n4"],
        contains=["_flair.nii.gz", "complex"],
    )
    # a prediction holding NaN, scored against a reference
    data_root = tmp_path / "data"
    write_brats(
        data_root,
        "BraTS2021_00001",
        {"t1": "t1", "t1ce": "t1gd", "t2": "t2", "flair": "flair"},
        (0, 1, 2, 4),
    )
    predictions = tmp_path / "pred"
    labels = nib.load(str(next((data_root / "BraTS2021_00001").glob("*_seg.nii.gz"))))
    broken = np.asarray(labels.dataobj).astype(np.float32)
    broken[0, 0, 0] = np.nan
    save_nifti(predictions / "BraTS2021_00001.nii.gz", broken, labels.affine)
    fails_cleanly(
        ["score", predictions, "--data", data_root, "--out", tmp_path / "s"],
        contains=["BraTS2021_00001.nii.gz", "non-finite"],
    )


def test_a_store_that_fails_mid_command_is_one_line_and_exit_1(
    models, prepared_dir, tmp_path, uri, monkeypatch
):
    import sqlalchemy.exc

    import mlflow

    def full(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(mlflow, "log_metrics", full)
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, tmp_path / "e", uri, "--attacks", "fgsm"),
        exit_code=1,
        contains=["MLflow tracking store failed", "database or disk is full"],
    )


def test_every_csv_goes_through_the_one_writer_that_escapes_formulas():
    """No module writes CSV but through io.rows_to_csv (which quotes a leading = + - @)."""
    from pathlib import Path

    import keras_advseg
    from keras_advseg.io import rows_to_csv

    package = Path(keras_advseg.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "io.py":
            continue
        text = path.read_text()
        assert "csv.writer" not in text and "DictWriter" not in text, path
    text = rows_to_csv([{"subject": "=1+2+cmd|' /C calc'!A0", "dice": 0.5}])
    assert "'=1+2+cmd" in text


def test_an_interrupt_after_the_last_epoch_is_completed_by_resume(
    prepared_dir, tmp_path, uri, monkeypatch
):
    """SIGTERM (turned into an interrupt) while the finished training logs its model: the run
    is KILLED and its checkpoint not finished, and --resume trains no epoch again but writes
    what is missing and ends the run FINISHED."""
    from mlflow.tracking import MlflowClient

    from keras_advseg.workflows import train as train_module

    log_model = train_module._log_model

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_log_model", interrupted)
    out = tmp_path / "run"
    args = [str(a) for a in train_args(prepared_dir, out, uri, "--epochs", 1)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code != 0
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "KILLED"
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and not state["finished"]
    monkeypatch.setattr(train_module, "_log_model", log_model)
    resumed = CliRunner().invoke(main, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED"
    assert json.loads((out / "checkpoint" / "state.json").read_text())["finished"]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1]  # no epoch trained twice
    again = CliRunner().invoke(main, args + ["--resume"])
    assert again.exit_code == 1 and "already finished" in again.output


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "pgd", "targeted_ifgsm"])
def test_attacks_refuse_non_finite_inputs(models, attack):
    import keras_advseg.attacks as attacks
    from keras_advseg.export import load_model

    model = load_model(models / "a.keras")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 4)).astype("float32")
    y = np.zeros((1, 16, 16, 16, 4), "float32")
    y[..., 0] = 1
    bad = x.copy()
    bad[0, 3, 3, 3, 1] = np.inf
    with pytest.raises(InputError, match="x holds 1 non-finite"):
        getattr(attacks, attack)(model, bad, y, eps=0.05)
    nan_labels = y.copy()
    nan_labels[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        getattr(attacks, attack)(model, x, nan_labels, eps=0.05)


def test_the_output_rule_refuses_only_what_could_be_overwritten_or_read_back(tmp_path):
    from keras_advseg.io import refuse_inputs_in_output

    data, model = tmp_path / "data", tmp_path / "runs" / "none" / "model.keras"
    (data / "case1").mkdir(parents=True)
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    refuse_inputs_in_output(tmp_path / "preds", {"dataset": data / "case1", "model": model})
    refuse_inputs_in_output(tmp_path / "evals" / "none", {"data": data, "model": model})
    refuse_inputs_in_output(model.parent / "evals", {"model": model})  # beside it, not over it
    refuse_inputs_in_output(tmp_path / "x", {"model": "0123456789abcdef0123456789abcdef"})
    with pytest.raises(InputError, match="inside the data folder"):
        refuse_inputs_in_output(data / "case1" / "out", {"data": data})
    with pytest.raises(InputError, match="holds the model"):
        refuse_inputs_in_output(tmp_path / "runs", {"model": model})


def test_numbers_too_large_for_a_float_are_refused_not_raised(tmp_path):
    from keras_advseg.errors import FileFormatError
    from keras_advseg.inference import Preprocessing
    from keras_advseg.workflows.card import CARD_SCHEMA, CARD_VERSION, validate_card

    huge = 10**400
    value = {**PREPROCESSING, "normalization": "global", "mean": [huge, 0, 0, 0], "std": [1] * 4}
    with pytest.raises(InputError, match="'mean' must be four finite numbers"):
        Preprocessing.from_json(value, "pre.json")
    with pytest.raises(FileFormatError, match=r"card: plan\.eps\.0 .*not a finite number"):
        validate_card({"schema": CARD_SCHEMA, "version": CARD_VERSION, "plan": {"eps": [huge]}})
    from keras_advseg.certification import SmoothedModel

    with pytest.raises(InputError, match="sigma must be a positive number"):
        SmoothedModel(None, sigma=huge)
