"""`advseg audit`: audit.json, audit.md, MLflow tags on the audit and the training run, exit codes."""

from __future__ import annotations

import json

from click.testing import CliRunner
from support import assert_help_files_written, fails_cleanly

from keras_advseg.cli import main

SMALL = ["--subjects", "1", "--steps", "1", "--attacks", "pgd-dice,segpgd"]
SMALL += ["--curve", "0.05,0.5", "--restarts", "2", "--queries", "3", "--relative-tolerance", "0.2"]


def test_audit_writes_its_verdict_everywhere(models, prepared_dir, tmp_path, new_store):
    import mlflow

    uri = new_store(tmp_path)
    args = ["audit", str(models / "a.keras"), "--data", str(prepared_dir), "--out"]
    args += [str(tmp_path / "audit"), "--tracking-uri", uri, "--reference", str(models / "b.keras")]
    result = CliRunner().invoke(main, args + SMALL + ["--fail-on-warn"])
    document = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert result.exit_code == (1 if document["verdict"] == "WARN" else 0), result.output
    items = document["items"]
    assert [i["item"] for i in items] == list(range(1, 9))
    # untrained networks segment nothing: item 8 says so, and the audit cannot PASS
    assert items[7]["verdict"] == "WARN" and document["verdict"] == "WARN"
    assert items[7]["numbers"]["missed"]
    assert document["verdict"] == ("WARN" if any(i["verdict"] == "WARN" for i in items) else "PASS")
    assert items[4]["verdict"] in ("PASS", "WARN")  # the reference makes item 5 run
    assert items[1]["numbers"]["eps"] == [0.05, 0.5]
    assert document["config"]["relative_tolerance"] == 0.2
    clean, white_box = items[0]["numbers"]["clean"], items[0]["numbers"]["worst_case"]
    assert items[2]["numbers"]["margin"] == max(0.01, 0.2 * max(clean - white_box, 0.0))
    markdown = (tmp_path / "audit" / "audit.md").read_text()
    assert f": {document['verdict']}" in markdown.splitlines()[0]
    assert markdown.count("| PASS |") + markdown.count("| WARN |") == 8
    assert_help_files_written(("audit",), tmp_path / "audit")
    for item in items:
        assert f"{item['item']} {item['verdict']}" in result.output

    run = mlflow.MlflowClient(tracking_uri=uri).get_run(document["audit_run_id"])
    assert run.data.tags["audit"] == document["verdict"]
    assert {run.data.tags[f"audit.item{i['item']}"] for i in items} <= {"PASS", "WARN", "SKIP"}
    assert run.data.params["steps"] == "1"


def test_audit_refuses_bad_options(models, prepared_dir, tmp_path):
    base = ["audit", str(models / "a.keras"), "--data", str(prepared_dir), "--out", str(tmp_path)]
    fails_cleanly([*base, "--curve", "0.1,2"], contains=["--curve"])
    fails_cleanly([*base, "--eps", "0"], contains=["--eps", "0<x<=1"])
    fails_cleanly([*base, "--tolerance", "-1"], contains=["tolerance"])
