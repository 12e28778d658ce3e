"""`mlflow run mlflow -e ...` runs the project's entry points."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support import run_ok

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_mlflow_run_synth_entry_point(tmp_path, new_store):
    bin_dir = Path(sys.executable).parent
    uri = new_store(tmp_path)
    # earlier in-process MLflow calls may leave MLFLOW_* variables (experiment id, run id) behind
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{bin_dir}:{os.environ['PATH']}")
    run_ok(
        [
            str(bin_dir / "mlflow"),
            "run",
            "mlflow",
            "-e",
            "synth",
            "--env-manager",
            "local",
            "-P",
            f"out={tmp_path}/phantom",
            "-P",
            "n=1",
            "-P",
            "voxel_mm=6",
            "--experiment-name",
            "project-test",
        ],
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert (tmp_path / "phantom" / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz").is_file()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("project-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["voxel_mm"] == "6"
