"""Evaluation over two logical CPU devices and over two worker processes gives the single-device rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import read_rows, run_workers

from keras_advseg.evaluation.distributed import merge
from keras_advseg.evaluation.results import Evaluation

pytestmark = pytest.mark.slow

METRICS = ("dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse")


def same_rows(a, b):
    assert [(r["subject"], r["attack"], float(r["eps"])) for r in a] == [
        (r["subject"], r["attack"], float(r["eps"])) for r in b
    ]
    for x, y in zip(a, b):
        for metric in METRICS:
            if y[metric] == "":
                assert x[metric] == ""
            else:
                assert float(x[metric]) == pytest.approx(float(y[metric]), rel=1e-4, abs=1e-4)


def test_mirrored_evaluation_equals_one_device(models, prepared_dir):
    helper = Path(__file__).with_name("distributed_eval.py")
    done = subprocess.run(
        [sys.executable, str(helper), str(models / "a.keras"), str(prepared_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["devices"]) == 2 and result["devices"][0] != result["devices"][1]
    same_rows(result["mirrored"], result["single"])
    assert result["example"] == result["ids"][0]


def test_merge_orders_rows_by_subject():
    parts = [
        Evaluation([{"subject": "b", "attack": "none"}, {"subject": "b", "attack": "fgsm"}]),
        Evaluation([{"subject": "a", "attack": "none"}], example={"subject": "a"}),
    ]
    merged = merge(parts, ["a", "b"])
    assert [(r["subject"], r["attack"]) for r in merged.rows] == [
        ("a", "none"),
        ("b", "none"),
        ("b", "fgsm"),
    ]
    assert merged.example == {"subject": "a"}


def test_multiworker_evaluation_on_two_processes(models, prepared_dir, tmp_path, new_store):
    from keras_advseg.cli import main

    common = ["evaluate", str(models / "a.keras"), "--data", str(prepared_dir)]
    common += ["--attacks", "fgsm,pgd", "--steps", "2", "--split", "all"]
    args = common + ["--out", str(tmp_path / "multi"), "--strategy", "multiworker"]
    outputs = run_workers(args + ["--tracking-uri", new_store(tmp_path)])
    assert "worker-1: evaluated its share" in outputs[1]
    assert not (tmp_path / "multi" / "workers" / "worker-1" / "per_subject.csv").exists()

    from click.testing import CliRunner

    single = CliRunner().invoke(
        main,
        common + ["--out", str(tmp_path / "one"), "--tracking-uri", new_store(tmp_path, "one.db")],
    )
    assert single.exit_code == 0, single.output
    merged, alone = (
        read_rows(tmp_path / "multi" / "per_subject.csv"),
        read_rows(tmp_path / "one" / "per_subject.csv"),
    )
    assert len({r["subject"] for r in merged}) == 6  # both workers' subjects, all of them
    same_rows(merged, alone)
