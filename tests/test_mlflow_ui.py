"""The address the reports and the CLI print opens the experiment's runs in a real MLflow UI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import free_ports

from keras_advseg.tracking import experiment_address, ui_command, ui_lines
from keras_advseg.workflows.card.logged_model import CARD_TAG

pytestmark = pytest.mark.slow


def test_the_printed_address_serves_the_experiments_runs(tmp_path, new_store):
    import mlflow

    uri = new_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("advseg-ui-test")
    with mlflow.start_run(run_name="unet3d-none") as run:
        mlflow.log_metric("dice_wt_clean", 0.8)
        # two cards as the card logs them (logged models of the run, their headline metrics)
        for name, worst in (("unet3d-none", 0.31), ("unet3d-adversarial", 0.52)):
            model = mlflow.initialize_logged_model(
                name=name, source_run_id=run.info.run_id, tags={CARD_TAG: "true"}
            )
            mlflow.log_metrics({"worst_dice": worst, "clean_dice": 0.8}, model_id=model.model_id)
            mlflow.finalize_logged_model(model.model_id, "READY")
    mlflow.set_tracking_uri(None)

    (port,) = free_ports(1)
    address = experiment_address(uri, "advseg-ui-test", port=port)
    experiment_id = mlflow.MlflowClient(uri).get_experiment_by_name("advseg-ui-test").experiment_id
    assert address == (
        f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )
    command = ui_command(uri, port=port)
    assert command.startswith(f"mlflow ui --backend-store-uri sqlite:///{Path(tmp_path).resolve()}")
    assert ui_lines(uri, "advseg-ui-test")[1].startswith("then open http://127.0.0.1:5000/#/")

    # one worker process (the UI starts four by default, some 16 s of CPU more here)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *command.split()[1:], "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(address.split("#")[0], timeout=2) as response:
                    page = response.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert page is not None and "<title>MLflow" in page  # the UI answers at that address
        # the experiment in the address is the one named, and its run is there
        query = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/runs/search"
        body = json.dumps({"experiment_ids": [experiment_id]}).encode()
        request = urllib.request.Request(
            query, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["unet3d-none"]
        # the UI's model view: both cards, with their metrics, ranked by worst-case Dice
        query = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/logged-models/search"
        body = json.dumps(
            {
                "experiment_ids": [experiment_id],
                "order_by": [{"field_name": "metrics.worst_dice", "ascending": False}],
            }
        ).encode()
        request = urllib.request.Request(
            query, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            models = json.loads(response.read())["models"]
        shown = [
            (m["info"]["name"], {x["key"]: x["value"] for x in m["data"]["metrics"]})
            for m in models
        ]
        assert shown == [
            ("unet3d-adversarial", {"worst_dice": 0.52, "clean_dice": 0.8}),
            ("unet3d-none", {"worst_dice": 0.31, "clean_dice": 0.8}),
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
