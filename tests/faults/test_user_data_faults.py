"""Faults that could lose a user's file: an output that is an input, a folder the tool does not
own, an interrupted subject that would count as done."""

from __future__ import annotations

import shutil

import nibabel as nib
import pytest
from click.testing import CliRunner
from support import fails_cleanly, snapshot

from keras_advseg.cli import main
from keras_advseg.data import discover_subjects


@pytest.fixture(scope="module")
def model_with_preprocessing(models, prepared_dir, tmp_path_factory):
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.export import load_model, save_model
    from keras_advseg.inference import Preprocessing

    path = tmp_path_factory.mktemp("model") / "model.keras"
    preprocessing = Preprocessing.from_prepared(load_prepared(prepared_dir))
    return save_model(load_model(models / "a.keras"), path, preprocessing)


@pytest.mark.parametrize("overwrite", [False, True])
def test_predict_never_writes_over_its_input(
    model_with_preprocessing, phantom_dir, tmp_path, overwrite
):
    subject = discover_subjects(phantom_dir)[0]
    scans = tmp_path / "scans"
    shutil.copytree(subject.images[0].parent, scans)
    t1, t1gd, t2, flair = (scans / p.name for p in subject.images)
    before = snapshot(scans)
    args = ["predict", model_with_preprocessing, "--t1", t1, "--t1gd", t1gd, "--t2", t2]
    args += ["--flair", flair, "--out", scans] + (["--overwrite"] if overwrite else [])
    line = fails_cleanly(args, contains=[t1.name, "is an input of subject", "--out"])
    assert str(scans) in line
    assert snapshot(scans) == before  # the scan is still the scan


def test_a_subject_is_done_only_when_all_its_outputs_exist(
    model_with_preprocessing, phantom_dir, tmp_path
):
    subject = discover_subjects(phantom_dir)[0]
    out = tmp_path / "seg"
    args = ["predict", str(model_with_preprocessing), str(subject.images[0].parent), "--out"]
    args += [str(out), "--probabilities"]
    assert CliRunner().invoke(main, args).exit_code == 0
    probabilities = out / f"{subject.subject_id}_probabilities.nii.gz"
    probabilities.unlink()  # as if the run had stopped between the two files
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "wrote 1 label maps" in result.output
    assert nib.load(str(probabilities)).shape[-1] == 4
    # with both files present the subject is skipped
    assert "(1 existed, skipped)" in CliRunner().invoke(main, args).output


def test_reproduce_refuses_a_folder_it_does_not_own(tmp_path, uri):
    folder = tmp_path / "my-results"
    folder.mkdir()
    (folder / "report.md").write_text("the user's own report\n")
    before = snapshot(folder)
    fails_cleanly(
        ["reproduce", "--preset", "smoke", "--out", folder, "--tracking-uri", uri],
        contains=[str(folder), "not a study of advseg reproduce", "--out"],
    )
    assert snapshot(folder) == before


def test_a_leftover_tf_config_does_not_silence_a_single_process(
    models, prepared_dir, tmp_path, uri, monkeypatch
):
    import json

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    out = tmp_path / "e"
    args = ["evaluate", str(models / "a.keras"), "--data", str(prepared_dir), "--out", str(out)]
    args += ["--attacks", "fgsm", "--strategy", "default", "--tracking-uri", uri]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "the chief writes the rows" not in result.output
    assert (out / "per_subject.csv").is_file() and not (out / "workers").exists()


def test_score_refuses_a_prediction_on_another_grid(phantom_dir, tmp_path):
    import numpy as np

    subjects = discover_subjects(phantom_dir)
    preds = tmp_path / "pred"
    preds.mkdir()
    for subject in subjects:  # the reference itself as the prediction: a perfect score
        shutil.copy(subject.seg, preds / f"{subject.subject_id}.nii.gz")
    result = CliRunner().invoke(
        main, ["score", str(preds), "--data", str(phantom_dir), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 0 and "WT Dice 1.000" in result.output, result.output
    # the same voxels on another grid (twice the spacing): refused, not scored
    moved = preds / f"{subjects[0].subject_id}.nii.gz"
    image = nib.load(str(moved))
    affine = image.affine.copy()
    affine[:3, :3] *= 2
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header), str(moved))
    fails_cleanly(
        ["score", preds, "--data", phantom_dir, "--out", tmp_path / "s2"],
        contains=[moved.name, "differs from the reference", "mm"],
    )
    assert not (tmp_path / "s2" / "scores.csv").exists()


def test_one_fit_check_refuses_unfit_models_before_any_work(
    prepared_dir, phantom_dir, tmp_path, uri
):
    import keras

    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.export import save_model
    from keras_advseg.inference import Preprocessing
    from keras_advseg.models import unet2d, unet3d

    preprocessing = Preprocessing.from_prepared(load_prepared(prepared_dir))
    three_classes = tmp_path / "three.keras"
    save_model(
        unet3d((16, 16, 16, 4), n_classes=3, base_filters=2, depth=3), three_classes, preprocessing
    )
    flat = tmp_path / "flat.keras"
    save_model(unet2d((16, 16, 4), base_filters=2, depth=3), flat, preprocessing)
    keras.backend.clear_session()
    fails_cleanly(
        ["predict", three_classes, phantom_dir, "--out", tmp_path / "p"],
        contains=["three.keras", "predicts 3 classes, BraTS labels need 4"],
    )
    assert not (tmp_path / "p").exists()
    for command in ("evaluate", "audit"):
        fails_cleanly(
            [command, flat, "--data", prepared_dir, "--out", tmp_path / command]
            + ["--tracking-uri", uri],
            contains=["flat.keras", "2-D inputs", "SliceWise"],
        )


def test_predict_exits_1_for_an_unreachable_tracking_store_as_train_and_evaluate(
    phantom_dir, tmp_path
):
    run_id = "0123456789abcdef0123456789abcdef"
    fails_cleanly(
        ["predict", run_id, phantom_dir, "--out", tmp_path / "p"]
        + ["--tracking-uri", "http://127.0.0.1:9"],
        exit_code=1,
        contains=["127.0.0.1:9"],
    )


def test_a_model_file_cannot_ask_for_a_huge_volume(models, phantom_dir, tmp_path):
    from keras_advseg.export import load_model, save_model
    from keras_advseg.inference import Preprocessing

    crafted = Preprocessing(
        shape=(4096, 4096, 4096), n4=False, n4_shrink=4, margin=2, normalization="volume"
    )
    path = save_model(load_model(models / "a.keras"), tmp_path / "crafted.keras", crafted)
    fails_cleanly(
        ["predict", path, phantom_dir, "--out", tmp_path / "p"],
        contains=["crafted.keras", "[4096, 4096, 4096]", "at most 512"],
    )
    assert not (tmp_path / "p").exists()


def test_a_tracking_server_that_starts_failing_gives_one_line_in_bounded_time(
    models, prepared_dir, tmp_path, monkeypatch
):
    """The server answers the first check, then 503 to every later call (the run's lineage
    lookup, the run itself): the command ends with exit 1 and a line naming the server, within
    the retries bounded for every call of the process."""
    import http.server
    import json
    import threading
    import time

    answered = []

    class FailingServer(http.server.BaseHTTPRequestHandler):
        def reply(self):
            if "experiments/search" in self.path and not answered:
                answered.append(self.path)
                body = json.dumps({"experiments": []}).encode()
                self.send_response(200)
            else:
                body = b"unavailable"
                self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = reply

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    # a model from a training run: its lineage is looked up in the failing store too
    trained = tmp_path / "trained"
    (trained / "checkpoint").mkdir(parents=True)
    shutil.copy(models / "a.keras", trained / "model.keras")
    (trained / "checkpoint" / "state.json").write_text(
        json.dumps({"run_id": "0123456789abcdef0123456789abcdef", "epoch": 1, "config": {}})
    )
    try:
        start = time.monotonic()
        fails_cleanly(
            ["evaluate", trained / "model.keras", "--data", prepared_dir, "--out", tmp_path / "e"]
            + ["--attacks", "fgsm", "--tracking-uri", uri],
            exit_code=1,
            contains=[uri, "failed"],
        )
        assert time.monotonic() - start < 120
    finally:
        server.shutdown()


def _no_space(monkeypatch, free: int = 0):
    import collections
    import shutil as real

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(real, "disk_usage", lambda path: usage(10**9, 10**9 - free, free))


def test_export_on_a_full_disk_is_one_line_naming_the_folder(models, tmp_path, monkeypatch):
    _no_space(monkeypatch)
    line = fails_cleanly(
        ["export", models / "a.keras", tmp_path / "served"], contains=["no space left on device"]
    )
    assert str(tmp_path) in line and "MiB needed" in line
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_training_on_a_full_disk_fails_the_run_in_one_line(
    prepared_dir, tmp_path, uri, monkeypatch
):
    from mlflow.tracking import MlflowClient

    _no_space(monkeypatch)
    out = tmp_path / "run"
    line = fails_cleanly(
        ["train", "--data", prepared_dir, "--out", out, "--preset", "smoke", "--epochs", 1]
        + ["--tracking-uri", uri, "--experiment", "full"],
        contains=["no space left on device for the checkpoint", "checkpoint"],
    )
    assert str(out) in line
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.status == "FAILED"
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def test_a_worker_whose_chief_never_answers_says_so_and_exits_1(
    models, prepared_dir, tmp_path, uri, monkeypatch
):
    import json
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    monkeypatch.setenv("ADVSEG_CHIEF_WAIT_S", "2")
    fails_cleanly(
        ["evaluate", models / "a.keras", "--data", prepared_dir, "--out", tmp_path / "e"]
        + ["--attacks", "fgsm", "--strategy", "multiworker", "--tracking-uri", uri],
        exit_code=1,
        contains=["worker-1", f"127.0.0.1:{port}", "did not answer in 2 s"],
    )
    assert not (tmp_path / "e").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), where the suite runs as root and may mount."""
    import os
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root; the patched tests above cover the rest")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount ({mounted.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_export_onto_a_real_full_disk_is_one_line(models, small_disk):
    line = fails_cleanly(
        ["export", models / "a.keras", small_disk / "served"], contains=["no space left on device"]
    )
    assert str(small_disk) in line
    assert list(small_disk.iterdir()) == []
