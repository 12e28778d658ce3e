"""`advseg reproduce --preset smoke` end to end, with its MLflow runs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from support import assert_help_files_written, smoke_command

from keras_advseg.cli import main
from keras_advseg.config import STUDIES

pytestmark = pytest.mark.slow


def test_smoke_study_end_to_end_and_resumable(smoke_study):
    uri = f"sqlite:///{smoke_study / 'mlflow.db'}"
    command = smoke_command(smoke_study / "study", uri, "--workers", "1")
    root = smoke_study / "study"
    study = root / "seeds" / "0"  # the default, one training seed
    # compare2d/ is written only by presets with 2-D models (smoke has one)
    assert_help_files_written(("reproduce",), root, ignore=("logs/",))  # --engine ray only
    report = (study / "report.md").read_text()
    assert report.startswith("# keras-advseg reproduction (smoke preset, training seed 0)")
    assert "## The paper's findings, checked" in report
    for claim in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)"):
        assert f"| {claim}" in report  # one row each in the findings table
    smoke = STUDIES["smoke"]
    # every 3-D model: a worst-case row per test subject, and (but the control) an audit
    assert "## Worst case and gradient-masking audit (3-D models)" in report
    for spec in smoke.models3d:
        if spec.control:
            assert not (study / "audits" / spec.name).exists()
            assert "| not audited (control) |" in report
        else:
            audit = json.loads((study / "audits" / spec.name / "audit.json").read_text())
            assert audit["verdict"] in ("PASS", "WARN") and len(audit["items"]) == 8
        assert f"| {spec.name} |" in report.split("## Worst case")[1]
        worst = [
            line
            for line in (study / "evals" / spec.name / "per_subject.csv").open()
            if ",worst,0.05," in line
        ]
        assert len(worst) == len(
            json.loads((root / "prepared" / "prepared.json").read_text())["split"]["test"]
        )
    assert (
        "Table 1 (3D-UNet, eps 0.05)" in report and "0.821" in report
    )  # the paper's values beside ours
    assert "## How each model was trained" in report
    # every 3-D model scored under the preset's corruptions, on one shared set of scans
    assert "## Under corruptions: MRI artifacts and operator errors (3-D models)" in report
    carded = [spec for spec in smoke.models3d if not spec.control]
    for spec in carded:
        assert f"| {spec.name} |" in report.split("## Under corruptions")[1]
        assert (study / "corruptions" / spec.name / "corruptions.csv").is_file()
    for spec in carded:  # certified at the preset's sigma, a column of the table
        assert (study / "certify" / spec.name / "certified.csv").is_file()
    assert not (study / "certify" / "unet3d-none-control").exists()
    assert "| corruptions | certified |" in report
    # a robustness card of every 3-D model but the control, from the study's own files, and
    # the report opens with their leaderboard
    import jsonschema

    from keras_advseg.workflows.card import read_card
    from keras_advseg.workflows.card.schema import SCHEMA_FILE

    published = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    test_split = json.loads((root / "prepared" / "prepared.json").read_text())["split"]["test"]
    for spec in carded:
        # every card of the study is a card of the published schema, its subjects the split's
        published.validate(json.loads((study / "cards" / spec.name / "card.json").read_text()))
        card = read_card(study / "cards" / spec.name)
        assert sorted(card["provenance"]["data"]["subjects"]) == sorted(test_split)
        assert card["provenance"]["model"]["sha256"] is not None
        assert card["plan"]["name"] == "study-smoke" and card["reused"]
        evaluation = json.loads((study / "evals" / spec.name / "summary.json").read_text())
        assert card["clean"]["dice"]["wt"] == evaluation["clean"]["dice_wt"]["mean"]
        assert card["clean"]["native_hd95_mm"]["wt"] is not None
        assert 0 <= card["adversarial"]["vafa"]["dice"]["et"] <= 1
        audit = json.loads((study / "audits" / spec.name / "audit.json").read_text())
        assert card["audit"]["verdict"] == audit["verdict"]
    # and each card an MLflow logged model of the study's experiment, under its model's name
    import mlflow
    from keras_advseg.workflows.card.logged_model import CARD_TAG

    models = mlflow.MlflowClient(tracking_uri=uri).search_logged_models(
        experiment_ids=[
            MlflowClient(uri).get_experiment_by_name("advseg-reproduce-smoke").experiment_id
        ],
        filter_string=f"tags.`{CARD_TAG}` = 'true'",
    )
    assert sorted(m.tags["card.model_name"] for m in models) == sorted(s.name for s in carded)
    board = (study / "leaderboard" / "leaderboard.csv").read_text()
    assert all(spec.name in board for spec in carded)
    opening = report.split("## The paper's findings, checked")[0]
    assert "## Leaderboard: one robustness card per model" in opening
    assert all(f"| {spec.name} |" in opening for spec in carded)
    assert "VAFA's setting: VAFA light: 8^3 blocks" in opening  # named where VAFA is shown
    assert len(list((root / "corrupted").glob("*.npz"))) == len(
        json.loads((root / "prepared" / "prepared.json").read_text())["split"]["test"]
    ) * (1 + len(smoke.corruptions) * len(smoke.corruption_severities))
    assert "- unet3d-adversarial-eps0.05: 2 epochs, fine-tuning unet3d-none (4 in all)." in report
    assert (study / "compare3d" / "fig_eps_overlay.png").is_file()
    assert (study / "evals" / "unet3d-none" / "fig_iterations.png").is_file()
    models = smoke.models3d + smoke.models2d
    for spec in models:
        assert (study / "models" / spec.name / "model.keras").is_file()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("advseg-reproduce-smoke")
    runs = client.search_runs([experiment.experiment_id])
    training = [r for r in runs if not {"evaluation", "audit_of", "card"} & set(r.data.tags)]
    cards = [r for r in runs if r.data.tags.get("card") == "true"]
    assert len(cards) == len(carded) and all(
        "card.clean_dice_wt" in r.data.metrics and r.data.tags["mlflow.parentRunId"] for r in cards
    )
    evaluations = [r for r in runs if r.data.tags.get("evaluation") == "true"]
    audits = [r for r in runs if "audit_of" in r.data.tags]
    assert len(audits) == len(smoke.models3d) - 1  # every 3-D model but the control
    for run in training:  # the headline numbers are in each model's own row of the runs table
        headline = {k for k in run.data.metrics if k.startswith("eval_test.dice_mean_")}
        assert {"eval_test.dice_mean_clean", "eval_test.dice_mean_fgsm_eps0.05"} <= headline
        assert ("eval_test.dice_mean_worst_eps0.05" in headline) == (
            run.data.tags["model"] == "unet3d"
        )
    # the report ends with the address that opens these runs in the model-training view
    assert (
        f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
        in (root / "report.md").read_text()
    )
    for run in training:  # the audit's verdict is on the 3-D models' training runs too
        audited = run.data.tags["model"] == "unet3d" and "control" not in run.info.run_name
        assert ("audit" in run.data.tags) == audited
    assert len(training) == len(models) and all(r.info.status == "FINISHED" for r in runs)
    distilled = [s for s in models if s.defense == "distillation"]
    # logit-level attacks on distilled models, the corruptions and certificates of every carded
    # 3-D model
    assert len(evaluations) == len(models) + len(distilled) + 2 * len(carded)
    # adversarial training and noise fine-tune the no-defense model of their family; distillation does not
    for run in training:
        params, name = run.data.params, run.info.run_name
        defense = run.data.tags["defense"]
        expected = str(study / "models" / f"{run.data.tags['model']}-none" / "model.keras")
        fine_tuned = defense in ("adversarial", "noise") or name.startswith("unet3d-none-control")
        assert params["init"] == (expected if fine_tuned else "None"), name
        assert name.endswith("-seed0") and params["seed"] == "0"
    by_id = {r.info.run_id: r for r in training}
    assert all(
        e.data.tags["source_run_id"] in by_id for e in evaluations
    )  # linked to their training runs
    # the study's report: findings per seed and pooled (one seed here)
    pooled = (root / "report.md").read_text()
    assert "(smoke preset, 1 training seed: 0)" in pooled
    assert "| finding | pooled | seed 0 | seeds holding |" in pooled
    assert "| unet3d-none-control | unet3d-none | FGSM 0.05 |" in pooled
    assert "Most Dice kept under the worst case" in pooled and "Wall time of the steps" in pooled
    # a second run skips every finished step but "prepare" and the reports
    second = CliRunner().invoke(main, command)
    assert second.exit_code == 0, second.output[-3000:]
    done = json.loads((root / "progress.json").read_text())
    steps = [name for name in done if name != "(elapsed)"]  # the study's wall clock is no step
    assert second.stderr.count("skipped (done before)") == len(steps) - 3
    assert done["(elapsed)"] >= max(done[name] for name in steps)
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)
    # another data seed would need another split: refused before any work
    third = CliRunner().invoke(main, command + ["--data-seed", "1"])
    assert third.exit_code == 2 and "started with --data-seed 0; received 1" in third.output
    assert "Traceback" not in third.output
