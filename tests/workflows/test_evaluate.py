"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from support import assert_help_files_written, read_rows, run_evaluate

from keras_advseg.cli import main


def test_per_subject_rows_and_summary_schema(evaluated, prepared_dir):
    root, _ = evaluated
    from keras_advseg.data.prepare import load_prepared

    test_ids = load_prepared(prepared_dir).test_ids
    rows = read_rows(root / "a" / "per_subject.csv")
    keys = {(r["subject"], r["attack"], float(r["eps"])) for r in rows}
    for subject in test_ids:
        assert (subject, "none", 0.0) in keys
        for attack in ("fgsm", "ifgsm", "targeted-ifgsm", "pgd-dice"):
            assert (subject, attack, 0.05) in keys and (subject, attack, 0.1) in keys
        for eps in (0.0, 0.005, 0.01):
            assert (subject, "fgsm_sweep", eps) in keys
    assert len(rows) == len(keys)  # one row per subject x attack x eps
    fgsm_row = next(r for r in rows if r["attack"] == "fgsm" and r["eps"] == "0.05")
    assert (
        0 <= float(fgsm_row["dice_wt"]) <= 1
        and float(fgsm_row["psnr"]) > 0
        and float(fgsm_row["rmse"]) > 0
    )
    summary = json.loads((root / "a" / "summary.json").read_text())
    assert summary["n_subjects"] == len(test_ids)
    entry = summary["attacks"]["fgsm"]["0.05"]
    assert set(entry) == {"dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse", "dice_drop"}
    assert set(entry["dice_wt"]) == {"mean", "sd", "n"}
    # every file evaluate's help names (fig_eps_curve.png only with --eps-curve)
    corruption_files = {
        "corruptions.csv",
        "corruption_tests.csv",
        "corruption_summary.json",
        "fig_corruption_severity.png",
        "fig_corruption_grid.png",
        "corruptions_reference.csv",
        "corrupted/",
    }
    assert_help_files_written(
        ("evaluate",), root / "a", ignore=("fig_eps_curve.png", *corruption_files)
    )
    clean = summary["clean"]["dice_wt"]["mean"]
    if clean:
        assert entry["dice_drop"]["wt"] == pytest.approx((clean - entry["dice_wt"]["mean"]) / clean)
    assert len(summary["iterations"]["ifgsm"]["dice_wt"]) == 3
    assert len(read_rows(root / "a" / "iterations.csv")) == 2 * 3 * len(test_ids)
    for name in ("fig_example.png", "fig_iterations.png", "fig_eps.png"):
        assert (root / "a" / name).stat().st_size > 5000


def test_sweep_rows_equal_separate_fgsm_rows(evaluated):
    root, _ = evaluated
    rows = read_rows(root / "a" / "per_subject.csv")
    clean = {r["subject"]: r for r in rows if r["attack"] == "none"}
    zero = {r["subject"]: r for r in rows if r["attack"] == "fgsm_sweep" and float(r["eps"]) == 0}
    for subject, row in zero.items():
        assert row["dice_wt"] == clean[subject]["dice_wt"]


def test_mlflow_evaluation_run_metrics(evaluated):
    root, uri = evaluated
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("eval-tests").experiment_id])
    run = next(r for r in runs if "pgd-dice" in r.data.tags["attacks"])
    summary = json.loads((root / "a" / "summary.json").read_text())
    assert run.data.metrics["dice_et_fgsm_eps0.05"] == pytest.approx(
        summary["attacks"]["fgsm"]["0.05"]["dice_et"]["mean"]
    )
    assert "dice_wt_clean" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "sweep_fgsm_dice_wt")
    assert sorted(m.step for m in history) == [0, 5, 10]
    assert len(client.get_metric_history(run.info.run_id, "iterations_ifgsm_dice_wt")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_subject.csv", "summary.json", "fig_example.png"} <= artifacts


def test_transfer_attack_and_2d_model(models, prepared_dir, tmp_path, new_store):
    uri = new_store(tmp_path)
    run_evaluate(
        models / "c2d.keras",
        prepared_dir,
        tmp_path / "c",
        uri,
        "--attacks",
        "fgsm",
        "--transfer-from",
        models / "a.keras",
    )
    rows = read_rows(tmp_path / "c" / "per_subject.csv")
    assert {r["attack"] for r in rows} == {"none", "fgsm"}
    # the perturbation is the source model's: same input quality as attacking the source itself
    run_evaluate(models / "a.keras", prepared_dir, tmp_path / "a", uri, "--attacks", "fgsm")
    source = read_rows(tmp_path / "a" / "per_subject.csv")
    psnr = lambda table: sorted(float(r["psnr"]) for r in table if r["attack"] == "fgsm")
    np.testing.assert_allclose(psnr(rows), psnr(source), rtol=1e-6)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("eval-tests").experiment_id])
    assert any(r.data.tags.get("transfer_from", "").endswith("a.keras") for r in runs)


def test_bad_options(models, prepared_dir, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(models / "a.keras"),
            "--data",
            str(prepared_dir),
            "--out",
            str(tmp_path),
            "--eps",
            "abc",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
    )
    assert result.exit_code == 2 and "--eps: expected numbers" in result.output
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(tmp_path / "none.keras"),
            "--data",
            str(prepared_dir),
            "--out",
            str(tmp_path),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
    )
    assert result.exit_code == 2 and "no such model file" in result.output


def test_source_run_id_from_reference_or_checkpoint(tmp_path):
    from keras_advseg.workflows.frame import source_run_id

    run_id = "0123456789abcdef0123456789abcdef"
    assert source_run_id(f"runs:/{run_id}/model.keras", tmp_path / "model.keras") == run_id
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    assert source_run_id(str(model), model) is None  # no checkpoint beside it
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(
        json.dumps({"epoch": 1, "config": {}, "run_id": run_id})
    )
    assert source_run_id(str(model), model) == run_id
    (tmp_path / "checkpoint" / "state.json").write_text(
        json.dumps({"epoch": 1, "config": {}, "run_id": "../x"})
    )
    assert source_run_id(str(model), model) is None
    (tmp_path / "checkpoint" / "state.json").write_text("{corrupt")
    assert source_run_id(str(model), model) is None


def test_the_scored_run_frame_logs_kept_files_on_success_and_closes_failed_or_killed(
    tmp_path, new_store
):
    """The frame of evaluate, corruptions, certify, audit and the card: params on opening, the
    kept files logged on success (FINISHED), nothing logged on an error (FAILED) or an interrupt
    (KILLED), the run nested under a parent run of the same store."""
    from keras_advseg.workflows.frame import lineage, ready, scored_run

    uri = new_store(tmp_path, "m.db")
    out = ready(tmp_path / "out", uri)
    with scored_run(uri, "frame", run_name="parent", tags={}) as parent:
        pass
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    source, tags = lineage(f"runs:/{parent.run_id}/model.keras", model, uri)
    assert source == parent.run_id and tags["mlflow.parentRunId"] == parent.run_id
    with scored_run(
        uri, "frame", run_name="ok", tags={"kind": "x", **tags}, params={"n": 3}
    ) as run:
        run.write_json(out / "summary.json", {"a": 1.5})
        run.write_text(out / "rows.csv", "a\n1\n")
        run.log_metrics({"dice": 0.5})
    assert (out / "summary.json").read_text() == '{\n  "a": 1.5\n}'
    client = MlflowClient(uri)
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.params == {"n": "3"}
    assert finished.data.metrics == {"dice": 0.5} and finished.data.tags["kind"] == "x"
    assert finished.data.tags["mlflow.parentRunId"] == parent.run_id
    assert sorted(a.path for a in client.list_artifacts(run.run_id)) == [
        "rows.csv",
        "summary.json",
    ]
    for error, status in ((ValueError("bad"), "FAILED"), (KeyboardInterrupt(), "KILLED")):
        with pytest.raises(type(error)):
            with scored_run(uri, "frame", run_name=status, tags={}) as broken:
                broken.write_text(out / f"{status}.txt", "half")
                raise error
        assert client.get_run(broken.run_id).info.status == status
        assert client.list_artifacts(broken.run_id) == []  # nothing logged from a broken run
