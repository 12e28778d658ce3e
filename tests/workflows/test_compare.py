"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import csv

import numpy as np
from click.testing import CliRunner
from support import assert_help_files_written, read_rows

from keras_advseg.cli import main
from keras_advseg.evaluation.results import load_results
from keras_advseg.evaluation.statistics import wilcoxon


def test_compare_tables_and_files(evaluated, tmp_path):
    root, _ = evaluated
    result = CliRunner().invoke(
        main,
        [
            "compare",
            str(root / "b"),
            "--baseline",
            str(root / "a"),
            "--out",
            str(tmp_path),
            "--title",
            "3D-UNet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Bonferroni over 12 comparisons" in result.output  # 4 attacks x 3 regions
    assert "Bonferroni over 9 comparisons" in result.output  # 1 model x 3 regions x 3 eps
    for name in (
        "tables.md",
        "table1_attacks.csv",
        "table_defenses.csv",
        "compare.json",
        "fig_eps_overlay.png",
    ):
        assert (tmp_path / name).is_file()
    assert_help_files_written(("compare",), tmp_path)
    table = read_rows(tmp_path / "table_defenses.csv")
    assert {r["model"] for r in table} == {"a", "b"} and len(table) == 6
    baseline = load_results(root / "a")
    other = load_results(root / "b")
    n, p = wilcoxon(other.series("fgsm", 0.05, "dice_wt"), baseline.series("fgsm", 0.05, "dice_wt"))
    row = next(r for r in table if r["model"] == "b" and r["region"] == "Whole tumour")
    expected = "n/a" if np.isnan(p) else f"{min(1.0, p * 9):.4g}"
    assert row["p_eps0.05_corrected"] == expected


def test_compare_refuses_mismatched_subjects(evaluated, tmp_path):
    root, _ = evaluated
    rows = read_rows(root / "b" / "per_subject.csv")
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    with open(mismatched / "per_subject.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**r, "subject": r["subject"] + "_x"} for r in rows])
    result = CliRunner().invoke(
        main,
        ["compare", str(mismatched), "--baseline", str(root / "a"), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "subjects differ from the baseline" in result.output
    result = CliRunner().invoke(
        main,
        ["compare", str(tmp_path), "--baseline", str(root / "a"), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "not an evaluation folder" in result.output
