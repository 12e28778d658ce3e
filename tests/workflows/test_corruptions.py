"""`advseg corruptions` end to end on the phantom: rows, scores, tests, figures, MLflow,
the shared cache, the reference's mCE and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import assert_help_files_written, fails_cleanly, read_rows, run_evaluate

from keras_advseg.data.prepare import load_prepared
from keras_advseg.export import save_model
from keras_advseg.inference import Preprocessing
from keras_advseg.metrics import brats_dice, predict_labels

CORRUPTIONS = "motion,ghosting,bias-field,rician-noise,contrast-expansion,missing-sequence"


@pytest.fixture(scope="module")
def corrupted(fitted_unet, prepared_dir, models, tmp_path_factory, new_store):
    root = tmp_path_factory.mktemp("corrupted")
    prepared = load_prepared(prepared_dir)
    path = save_model(fitted_unet, root / "model.keras", Preprocessing.from_prepared(prepared))
    uri = new_store(root)
    output = run_evaluate(
        path,
        prepared_dir,
        root / "eval",
        uri,
        "--corruptions",
        CORRUPTIONS,
        "--severities",
        "1,5",
        "--native",
        "--reference",
        models / "a.keras",
        "--corruption-cache",
        root / "cache",
        command="corruptions",
    )
    return root, path, prepared, uri, output


def test_rows_scores_tests_and_figures_are_written(corrupted):
    root, _, prepared, uri, output = corrupted
    out = root / "eval"
    assert_help_files_written(("corruptions",), out, ignore=("corrupted/",))
    rows = read_rows(out / "corruptions.csv")
    names = CORRUPTIONS.split(",")
    ids = prepared.ids("test")
    assert len(rows) == len(ids) * (1 + 2 * len(names))
    assert {(r["corruption"], r["severity"]) for r in rows} == {("none", "0")} | {
        (n, s) for n in names for s in ("1", "5")
    }
    assert {"native_dice_wt", "native_hd95_et"} <= set(rows[0])
    # every row records what its corruption drew for its subject (the clean rows nothing)
    for row in rows:
        drawn = json.loads(row["params"])
        if row["corruption"] == "none":
            assert drawn == {}
        else:
            assert drawn["level"] and set(drawn) - {"level"}, row
    summary = json.loads((out / "corruption_summary.json").read_text())
    scores = summary["scores"]

    # ROOD-MRI's overall score recomputed from the rows: (D0 + sum a^s D_s) / (1 + sum a^s)
    def mean(name, severity, region="wt"):
        return np.mean(
            [
                float(r[f"dice_{region}"])
                for r in rows
                if r["corruption"] == name and r["severity"] == str(severity)
            ]
        )

    a = 2 / 3
    expected = (mean("none", 0) + a * mean("motion", 1) + a**5 * mean("motion", 5)) / (1 + a + a**5)
    assert scores["corruptions"]["motion"]["wt"]["overall"] == pytest.approx(expected)
    assert scores["mce"]["wt"] is not None and scores["mce"]["wt"] > 0  # with --reference
    assert scores["worst"]["wt"] in names
    tests = read_rows(out / "corruption_tests.csv")
    assert len(tests) == 2 * len(names) * 3
    assert all(float(t["p_bonferroni"]) >= float(t["p"]) for t in tests)
    for figure in ("fig_corruption_severity.png", "fig_corruption_grid.png"):
        assert (out / figure).stat().st_size > 10_000
    # the headline under corruptions is the mean Dice of the corrupted scans (each subject's Dice
    # averaged over its corrupted scans, then over subjects); ROOD-MRI's scores, defined over
    # severities 1-5, are not printed for severities 1 and 5
    per_subject = {}
    for r in rows:
        if r["severity"] != "0":
            per_subject.setdefault(r["subject"], []).append(float(r["dice_wt"]))
    expected = np.mean([np.mean(v) for v in per_subject.values()])
    assert summary["corrupted_dice"]["wt"] == pytest.approx(expected)
    assert f"mean Dice of the corrupted scans WT {expected:.3f}" in output.output
    assert "overall (ROOD-MRI, alpha 2/3)" not in output.output
    assert "worst corruption" in output.output
    import mlflow

    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("eval-tests").experiment_id]
    )
    metrics = runs[0].data.metrics
    assert metrics["dice_wt_motion_s5"] == pytest.approx(mean("motion", 5))
    assert "corruption_overall_wt" in metrics and "native_dice_wt_clean" in metrics


def test_clean_rows_equal_the_models_dice_on_the_prepared_volumes_and_severity_costs_dice(
    corrupted, fitted_unet
):
    root, _, prepared, _, _ = corrupted
    rows = read_rows(root / "eval" / "corruptions.csv")
    for subject in prepared.ids("test"):
        image, labels = prepared.load(subject)
        dice = brats_dice(labels, predict_labels(fitted_unet, image[None])[0])
        clean = next(r for r in rows if r["subject"] == subject and r["corruption"] == "none")
        for region in ("wt", "tc", "et"):
            assert float(clean[f"dice_{region}"]) == pytest.approx(float(dice[region]), abs=1e-6)
    names = CORRUPTIONS.split(",")

    def mean(name, severity):
        return np.mean(
            [
                float(r[f"dice_{g}"])
                for r in rows
                for g in ("wt", "tc", "et")
                if r["corruption"] == name and r["severity"] == str(severity)
            ]
        )

    worse = [n for n in names if mean(n, 5) < mean(n, 1)]
    assert len(worse) > len(names) / 2, worse


def test_a_second_model_reuses_the_prepared_scans_and_a_tampered_one_is_prepared_again(
    corrupted, tmp_path, new_store
):
    root, path, _, _, _ = corrupted
    uri = new_store(tmp_path, "m.db")
    cache = root / "cache"
    files = sorted(cache.glob("*.npz"))
    assert files
    victim = files[0]
    victim.write_bytes(b"not an npz")
    stamps = {f: f.stat().st_mtime_ns for f in files[1:]}
    run_evaluate(
        path,
        root / "eval" / "prepared" if False else corrupted[2].root,
        tmp_path / "e",
        uri,
        "--corruptions",
        CORRUPTIONS,
        "--severities",
        "1,5",
        "--corruption-cache",
        cache,
        command="corruptions",
    )
    assert all(f.stat().st_mtime_ns == stamp for f, stamp in stamps.items())  # reused
    assert np.load(victim)["image"].ndim == 4  # replaced by a good one
    a = read_rows(root / "eval" / "corruptions.csv")
    b = read_rows(tmp_path / "e" / "corruptions.csv")
    key = ("subject", "corruption", "severity", "dice_wt", "dice_tc", "dice_et")
    assert [tuple(r[k] for k in key) for r in a] == [tuple(r[k] for k in key) for r in b]
    # prepared in two processes into a fresh cache: the same scans, the same rows
    run_evaluate(
        path,
        corrupted[2].root,
        tmp_path / "p",
        uri,
        "--corruptions",
        "missing-sequence,ghosting",
        "--severities",
        "5",
        "--corruption-cache",
        tmp_path / "fresh",
        "--workers",
        2,
        command="corruptions",
    )
    c = read_rows(tmp_path / "p" / "corruptions.csv")
    chosen = {(r["subject"], r["corruption"], r["severity"]): r["dice_wt"] for r in a}
    assert all(chosen[(r["subject"], r["corruption"], r["severity"])] == r["dice_wt"] for r in c)
    assert len(list((tmp_path / "fresh").glob("*.npz"))) == len(c)


def test_refusals_are_one_line(corrupted, tmp_path):
    root, path, prepared, _, _ = corrupted
    options = [
        path,
        "--data",
        prepared.root,
        "--out",
        tmp_path / "x",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    ]
    # the spelling of the last release: evaluate --corruptions, without attack options
    fails_cleanly(
        ["evaluate", *options, "--corruptions", "motion", "--attacks", "fgsm"],
        contains=("--corruptions scores corruptions, not attacks; drop --attacks",),
    )
    fails_cleanly(
        ["evaluate", *options, "--reference", path], contains=("--reference needs --corruptions",)
    )
    base = ["corruptions", *options]
    fails_cleanly(
        [*base, "--corruptions", "motion", "--severities", "7"],
        contains=("--severities: expected distinct integers in [1, 5]",),
    )
    fails_cleanly([*base, "--corruptions", "motoin"], contains=("corruption must be one of",))
    fails_cleanly(
        [*base, "--corruptions", "blur", "--modalities", "pd"],
        contains=("modalities must name sequences",),
    )
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    fails_cleanly(
        [*base, "--corruptions", "blur", "--corruption-cache", tmp_path / "foreign"],
        contains=("not a corrupted-scan cache",),
    )
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
