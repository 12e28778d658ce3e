"""`advseg train` end to end: outputs, MLflow runs, resume after a kill, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from support import assert_help_files_written, free_ports, train_args

from keras_advseg.cli import main
from keras_advseg.export import load_model

ADVSEG = [sys.executable, "-m", "keras_advseg.cli"]

pytestmark = pytest.mark.slow  # every test here runs whole trainings


@pytest.fixture(scope="module")
def trained_run(prepared_dir, tmp_path_factory, new_store):
    root = tmp_path_factory.mktemp("train")
    uri = new_store(root)
    result = CliRunner().invoke(
        main,
        train_args(
            prepared_dir,
            root / "out",
            uri,
            "--epochs",
            3,
            "--defense",
            "adversarial",
            "--eps",
            0.02,
        ),
    )
    assert result.exit_code == 0, result.output
    return root / "out", uri, result.output


def test_outputs_and_model_round_trip(trained_run, prepared_dir):
    out, _, output = trained_run
    assert "saved" in output and (out / "model.keras").is_file() and (out / "last.keras").is_file()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["finished"] and state["epoch"] == 3 and 1 <= state["best_epoch"] <= 3
    model = load_model(out / "model.keras")
    assert model.output_shape[1:] == (16, 16, 16, 4)
    assert_help_files_written(("train",), out)


def test_mlflow_run_has_params_metrics_tags_and_artifacts(trained_run):
    out, uri, _ = trained_run
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (
        params["defense"] == "adversarial"
        and params["adv_eps"] == "0.02"
        and params["preset"] == "smoke"
    )
    assert len(params["data_hash"]) == 16 and params["seed"] == "0"
    assert run.data.tags["defense"] == "adversarial" and run.data.tags["model"] == "unet3d"
    assert run.data.tags["adv_eps"] == "0.02" and "temperature" in run.data.tags
    # what the numbers depend on besides code, data and seed
    assert run.data.tags["env.onednn"] == os.environ["TF_ENABLE_ONEDNN_OPTS"]
    assert run.data.tags["env.tensorflow"] == tf.__version__
    assert run.data.tags["env.cores"] == str(os.cpu_count()) and run.data.tags["env.cpu"]
    history = client.get_metric_history(run.info.run_id, "val_dice_wt")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.keras", "last.keras"} <= artifacts
    logged = client.search_logged_models([run.info.experiment_id])
    assert any(m.source_run_id == run.info.run_id for m in logged)


def test_refuses_to_overwrite_and_resume_without_checkpoint(trained_run, prepared_dir, tmp_path):
    out, uri, _ = trained_run
    result = CliRunner().invoke(main, train_args(prepared_dir, out, uri))
    assert result.exit_code == 1 and "pass --resume" in result.output
    result = CliRunner().invoke(main, train_args(prepared_dir, tmp_path / "new", uri, "--resume"))
    assert result.exit_code == 1 and "no checkpoint to resume" in result.output


def test_unreachable_tracking_server_fails_before_training(prepared_dir, tmp_path):
    result = CliRunner().invoke(
        main, train_args(prepared_dir, tmp_path / "out", "http://127.0.0.1:9")
    )
    assert result.exit_code == 1
    assert "MLflow tracking store http://127.0.0.1:9 is unreachable" in result.output
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_non_finite_loss_stops_with_message_and_marks_run_failed(prepared_dir, tmp_path, new_store):
    uri = new_store(tmp_path)
    result = CliRunner().invoke(
        main, train_args(prepared_dir, tmp_path / "out", uri, "--lr", "1e30", "--epochs", 3)
    )
    assert result.exit_code == 1
    assert "non-finite loss at epoch" in result.output and "last good checkpoint" in result.output
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"


def test_bad_data_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(
        main, train_args(tmp_path / "missing", tmp_path / "out", f"sqlite:///{tmp_path}/m.db")
    )
    assert result.exit_code == 2 and "missing: no such folder" in result.output


def weights(path):
    return [np.asarray(w) for w in load_model(path).get_weights()]


def test_resume_after_kill_matches_uninterrupted_run(prepared_dir, tmp_path, new_store):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    epochs = 5  # enough to cut after epoch 2 and resume three more
    common = [
        "--epochs",
        epochs,
        "--seed",
        3,
        "--lr-schedule",
        "cosine",
    ]  # the schedule resumes too
    uri = new_store(tmp_path)
    # the uninterrupted run in this process (the same kernels, threads and determinism as the
    # commands below: a fresh interpreter would only add seconds of imports)
    full = CliRunner().invoke(main, train_args(prepared_dir, tmp_path / "full", uri, *common))
    assert full.exit_code == 0, full.output[-2000:]
    state_path = tmp_path / "cut" / "checkpoint" / "state.json"
    process = subprocess.Popen(
        ADVSEG + train_args(prepared_dir, tmp_path / "cut", uri, *common),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if state_path.is_file() and json.loads(state_path.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads(state_path.read_text())
    assert not state["finished"] and state["epoch"] < epochs, "the run must be cut before it ends"
    # the resumed run in this process too: only the cut needs a process of its own to kill
    resumed = CliRunner().invoke(main, train_args(prepared_dir, tmp_path / "cut", uri, "--resume"))
    assert resumed.exit_code == 0, resumed.output[-2000:]
    for a, b in zip(
        weights(tmp_path / "full" / "last.keras"), weights(tmp_path / "cut" / "last.keras")
    ):
        np.testing.assert_array_equal(a, b)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {
        "FINISHED"
    }  # the cut run was resumed, not duplicated


def test_training_against_a_real_mlflow_server(prepared_dir, tmp_path, new_store):
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            new_store(tmp_path, "server.db"),
            "--artifacts-destination",
            str(tmp_path / "art"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
                break
            except Exception:
                time.sleep(0.5)
        result = CliRunner().invoke(
            main, train_args(prepared_dir, tmp_path / "out", uri, "--epochs", 1)
        )
        assert result.exit_code == 0, result.output
        client = MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
        assert run.info.status == "FINISHED" and run.data.params["defense"] == "none"
        assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def train_student(prepared_dir, out, uri, teacher, *extra):
    """``advseg train --defense distillation --teacher TEACHER --epochs 1 EXTRA...`` in-process."""
    return CliRunner().invoke(
        main,
        train_args(
            prepared_dir,
            out,
            uri,
            "--defense",
            "distillation",
            "--teacher",
            teacher,
            "--epochs",
            1,
            *extra,
        ),
    )


def test_distillation_with_a_teacher_from_an_mlflow_run(trained_run, prepared_dir, tmp_path):
    _, uri, _ = trained_run
    client = MlflowClient(tracking_uri=uri)
    teacher_run = client.search_runs(
        [client.get_experiment_by_name("tests").experiment_id],
        filter_string="tags.defense = 'adversarial'",
    )[0]
    result = train_student(
        prepared_dir, tmp_path / "student", uri, teacher_run.info.run_id, "--temperature", 20
    )
    assert result.exit_code == 0, result.output
    soft = sorted((tmp_path / "student" / "soft_labels").glob("*.npy"))
    assert soft and np.allclose(np.load(soft[0]).sum(axis=-1), 1.0, atol=1e-5)
    assert not (tmp_path / "student" / "teacher.keras").exists()  # the given teacher was used
    result = train_student(prepared_dir, tmp_path / "s2", uri, "0" * 32)
    assert result.exit_code == 2 and "cannot fetch the model" in result.output


def test_mixed_bfloat16_training(prepared_dir, tmp_path, new_store):
    import keras

    result = CliRunner().invoke(
        main,
        train_args(
            prepared_dir,
            tmp_path / "out",
            new_store(tmp_path, "m.db"),
            "--epochs",
            1,
            "--precision",
            "mixed_bfloat16",
        ),
    )
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "out" / "model.keras")
    conv = model.get_layer("enc0_0_conv")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert model.output.dtype == "float32"  # logits stay float32
    assert keras.mixed_precision.global_policy().name == "float32"  # the process policy is restored


def test_warm_start_from_a_model_and_distillation_from_a_temperature_1_teacher(
    trained_run, prepared_dir, tmp_path
):
    import keras

    from keras_advseg.config import TrainConfig
    from keras_advseg.models import unet3d
    from keras_advseg.training import TrainingError, warm_start

    out, uri, _ = trained_run
    source = load_model(out / "model.keras")
    config = TrainConfig.from_preset("smoke", init=str(out / "model.keras"))
    network = unet3d(source.input_shape[1:], base_filters=config.base_filters, depth=config.depth)
    warm_start(config, network)
    for mine, theirs in zip(network.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    student = TrainConfig.from_preset(
        "smoke", defense="distillation", temperature=20.0, teacher_temperature=1.0, init="teacher"
    )
    warm_start(student, network, teacher=source)
    x = np.random.default_rng(0).normal(size=(1,) + source.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(
        np.asarray(network(x)), 20.0 * np.asarray(source(x)), rtol=1e-4, atol=1e-3
    )
    with pytest.raises(TrainingError, match="do not fit the configured unet3d network"):
        warm_start(
            config,
            unet3d(
                source.input_shape[1:], base_filters=config.base_filters + 1, depth=config.depth
            ),
        )
    with pytest.raises(ValueError, match="needs defense='distillation'"):
        TrainConfig(init="teacher")

    # End to end: the student's soft labels are the T=1 teacher's own softmax, and it starts from the teacher.
    result = train_student(
        prepared_dir,
        tmp_path / "student",
        uri,
        out / "model.keras",
        "--teacher-temperature",
        1,
        "--temperature",
        20,
        "--init",
        "teacher",
    )
    assert result.exit_code == 0, result.output
    first = sorted((tmp_path / "student" / "soft_labels").glob("*.npy"))[0]
    from keras_advseg.data.prepare import load_prepared

    image, _ = load_prepared(prepared_dir).load(first.stem)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(source(image[None]), axis=-1))[0]
    np.testing.assert_allclose(np.load(first), expected, atol=1e-5)
    result = CliRunner().invoke(
        main, train_args(prepared_dir, tmp_path / "bad", uri, "--init", "teacher")
    )
    assert result.exit_code == 2 and "needs defense='distillation'" in result.output


def test_sigterm_ends_the_run_like_ctrl_c(prepared_dir, tmp_path, new_store):
    """What timeout, Slurm and Kubernetes send: the run is KILLED, not left RUNNING, no
    temporary file is left, and --resume continues it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    uri = new_store(tmp_path)
    out = tmp_path / "run"
    process = subprocess.Popen(
        ADVSEG + train_args(prepared_dir, out, uri, "--epochs", 40),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_path = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (
        state_path.is_file() and json.loads(state_path.read_text())["epoch"] >= 1
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "KILLED"
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    state = json.loads(state_path.read_text())
    assert not state["finished"] and state["epoch"] < 40
