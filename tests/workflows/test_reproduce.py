"""`advseg reproduce --preset smoke` end to end, as a subprocess, with its MLflow runs."""

from __future__ import annotations

import json
import subprocess
import sys

from mlflow.tracking import MlflowClient

from keras_advseg.config import STUDIES


def test_smoke_study_end_to_end_and_resumable(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable,
        "-m",
        "keras_advseg.cli",
        "reproduce",
        "--preset",
        "smoke",
        "--out",
        str(tmp_path / "study"),
        "--tracking-uri",
        uri,
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    study = tmp_path / "study"
    report = (study / "report.md").read_text()
    assert "## The paper's findings, checked" in report
    for claim in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert f"- {claim}" in report
    assert (
        "Table 1 (3D-UNet, eps 0.05)" in report and "0.821" in report
    )  # the paper's values beside ours
    assert "## How each model was trained" in report
    assert "- unet3d-adversarial-eps0.05: 2 epochs, fine-tuning unet3d-none (4 in all)." in report
    assert (study / "compare3d" / "fig_eps_overlay.png").is_file()
    assert (study / "evals" / "unet3d-none" / "fig_iterations.png").is_file()
    smoke = STUDIES["smoke"]
    models = smoke.models3d + smoke.models2d
    for spec in models:
        assert (study / "models" / spec.name / "model.keras").is_file()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("advseg-reproduce-smoke")
    runs = client.search_runs([experiment.experiment_id])
    training = [r for r in runs if "evaluation" not in r.data.tags]
    evaluations = [r for r in runs if r.data.tags.get("evaluation") == "true"]
    assert len(training) == len(models) and all(r.info.status == "FINISHED" for r in runs)
    distilled = [s for s in models if s.defense == "distillation"]
    assert len(evaluations) == len(models) + len(
        distilled
    )  # logit-level attacks on distilled models
    # adversarial training and noise fine-tune the no-defense model of their family; distillation does not
    for run in training:
        params, name = run.data.params, run.info.run_name
        defense = run.data.tags["defense"]
        expected = str(study / "models" / f"{run.data.tags['model']}-none" / "model.keras")
        assert params["init"] == (expected if defense in ("adversarial", "noise") else "None"), name
    by_id = {r.info.run_id: r for r in training}
    assert all(
        e.data.tags["source_run_id"] in by_id for e in evaluations
    )  # linked to their training runs
    # a second run skips every finished step
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        second.stderr.count("skipped (done before)")
        == len(json.loads((study / "progress.json").read_text())) - 2
    )
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)
