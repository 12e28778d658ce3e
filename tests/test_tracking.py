"""The runs a study's step opens on a Ray cluster carry the step and the study, and only that
step's runs of that study are ended when its worker dies."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from keras_advseg.tracking import (
    STUDY_DIR_TAG,
    STUDY_DIR_VARIABLE,
    STUDY_STEP_TAG,
    STUDY_STEP_VARIABLE,
    end_orphaned_runs,
    environment_tags,
)


def test_a_dead_steps_runs_are_ended_and_no_other(tmp_path, new_store, monkeypatch):
    monkeypatch.delenv(STUDY_STEP_VARIABLE, raising=False)
    assert STUDY_STEP_TAG not in environment_tags()  # outside a study's Ray step: no tag
    monkeypatch.setenv(STUDY_STEP_VARIABLE, "seed 0: train unet3d-none")
    monkeypatch.setenv(STUDY_DIR_VARIABLE, "/shared/a")
    tags = environment_tags()
    assert (
        tags[STUDY_STEP_TAG] == "seed 0: train unet3d-none" and tags[STUDY_DIR_TAG] == "/shared/a"
    )
    uri = new_store(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("advseg-reproduce-smoke")
    made = {
        (step, study, status): client.create_run(
            experiment, tags={STUDY_STEP_TAG: step, STUDY_DIR_TAG: study}
        ).info.run_id
        for step, study, status in (
            ("seed 0: train unet3d-none", "/shared/a", "RUNNING"),  # the dead worker's
            ("seed 0: train unet3d-none", "/shared/b", "RUNNING"),  # another study's, live
            ("seed 0: evaluate unet3d-none", "/shared/a", "RUNNING"),  # another step's
            ("seed 0: train unet3d-none", "/shared/a", "FINISHED"),  # an earlier attempt's
        )
    }
    client.set_terminated(made["seed 0: train unet3d-none", "/shared/a", "FINISHED"], "FINISHED")
    ended = end_orphaned_runs(
        uri, "advseg-reproduce-smoke", "seed 0: train unet3d-none", "/shared/a"
    )
    assert ended == 1
    status = {key: client.get_run(run).info.status for key, run in made.items()}
    assert status == {
        ("seed 0: train unet3d-none", "/shared/a", "RUNNING"): "FAILED",
        ("seed 0: train unet3d-none", "/shared/b", "RUNNING"): "RUNNING",
        ("seed 0: evaluate unet3d-none", "/shared/a", "RUNNING"): "RUNNING",
        ("seed 0: train unet3d-none", "/shared/a", "FINISHED"): "FINISHED",
    }
    assert end_orphaned_runs(uri, "no such experiment", "x", "/shared/a") == 0
