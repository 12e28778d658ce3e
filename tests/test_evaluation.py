"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from scipy import stats

from keras_advseg.cli import main
from keras_advseg.models import SliceWise, unet2d, unet3d
from keras_advseg.statistics import bonferroni, load_results, wilcoxon


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    unet3d((16, 16, 16, 4), base_filters=4, depth=3).save(root / "a.keras")
    keras.utils.set_random_seed(1)
    unet3d((16, 16, 16, 4), base_filters=4, depth=3).save(root / "b.keras")
    net2d = SliceWise(unet2d((16, 16, 4), base_filters=4, depth=3))
    net2d(np.zeros((1, 16, 16, 16, 4), "float32"))
    net2d.save(root / "c2d.keras")
    return root


def evaluate(model, prepared_dir, out, uri, *extra):
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(prepared_dir), "--out", str(out),
                                       "--tracking-uri", uri, "--experiment", "eval-tests", *map(str, extra)])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def evaluated(models, prepared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    uri = f"sqlite:///{root}/mlflow.db"
    evaluate(models / "a.keras", prepared_dir, root / "a", uri, "--attack", "fgsm", "--attack", "ifgsm",
             "--attack", "tifgsm", "--attack", "pgd", "--eps", "0.05,0.1", "--steps", 3,
             "--eps-sweep", "0:0.01:0.005", "--iterations-sweep")
    evaluate(models / "b.keras", prepared_dir, root / "b", uri, "--attack", "fgsm", "--eps", "0.05,0.1")
    return root, uri


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_per_subject_rows_and_summary_schema(evaluated, prepared_dir):
    root, _ = evaluated
    from keras_advseg.data.prepare import load_prepared

    test_ids = load_prepared(prepared_dir).test_ids
    rows = read_rows(root / "a" / "per_subject.csv")
    keys = {(r["subject"], r["attack"], float(r["eps"])) for r in rows}
    for subject in test_ids:
        assert (subject, "none", 0.0) in keys
        for attack in ("fgsm", "ifgsm", "tifgsm", "pgd"):
            assert (subject, attack, 0.05) in keys and (subject, attack, 0.1) in keys
        for eps in (0.0, 0.005, 0.01):
            assert (subject, "fgsm_sweep", eps) in keys
    assert len(rows) == len(keys)  # one row per subject x attack x eps
    fgsm_row = next(r for r in rows if r["attack"] == "fgsm" and r["eps"] == "0.05")
    assert 0 <= float(fgsm_row["dice_wt"]) <= 1 and float(fgsm_row["psnr"]) > 0 and float(fgsm_row["rmse"]) > 0
    summary = json.loads((root / "a" / "summary.json").read_text())
    assert summary["n_subjects"] == len(test_ids)
    entry = summary["attacks"]["fgsm"]["0.05"]
    assert set(entry) == {"dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse", "dice_drop"}
    assert set(entry["dice_wt"]) == {"mean", "sd", "n"}
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
    run = next(r for r in runs if "pgd" in r.data.tags["attacks"])
    summary = json.loads((root / "a" / "summary.json").read_text())
    assert run.data.metrics["dice_et_fgsm_eps0.05"] == pytest.approx(summary["attacks"]["fgsm"]["0.05"]["dice_et"]["mean"])
    assert "dice_wt_clean" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "sweep_fgsm_dice_wt")
    assert sorted(m.step for m in history) == [0, 5, 10]
    assert len(client.get_metric_history(run.info.run_id, "iterations_ifgsm_dice_wt")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_subject.csv", "summary.json", "fig_example.png"} <= artifacts


def test_statistics_match_scipy_and_bonferroni():
    rng = np.random.default_rng(0)
    a = {f"s{i}": float(v) for i, v in enumerate(rng.random(12))}
    b = {k: v - 0.1 - 0.05 * rng.random() for k, v in a.items()}
    n, p = wilcoxon(a, b)
    keys = sorted(a)
    assert n == 12 and p == pytest.approx(stats.wilcoxon([a[k] for k in keys], [b[k] for k in keys]).pvalue)
    assert wilcoxon(a, a) == (12, 1.0)
    assert bonferroni([0.01, 0.2, 0.6]) == pytest.approx([0.03, 0.6, 1.0])


def test_compare_tables_and_files(evaluated, tmp_path):
    root, _ = evaluated
    result = CliRunner().invoke(main, ["compare", str(root / "b"), "--baseline", str(root / "a"), "--out",
                                       str(tmp_path), "--title", "3D-UNet"])
    assert result.exit_code == 0, result.output
    assert "Bonferroni over 12 comparisons" in result.output  # 4 attacks x 3 regions
    assert "Bonferroni over 9 comparisons" in result.output   # 1 model x 3 regions x 3 eps
    for name in ("tables.md", "table1_attacks.csv", "table_defenses.csv", "compare.json", "fig_eps_overlay.png"):
        assert (tmp_path / name).is_file()
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
    result = CliRunner().invoke(main, ["compare", str(mismatched), "--baseline", str(root / "a"), "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code == 2 and "subjects differ from the baseline" in result.output
    result = CliRunner().invoke(main, ["compare", str(tmp_path), "--baseline", str(root / "a"), "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code == 2 and "not an evaluation folder" in result.output


def test_transfer_attack_and_2d_model(models, prepared_dir, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    evaluate(models / "c2d.keras", prepared_dir, tmp_path / "c", uri, "--attack", "fgsm",
             "--transfer-from", models / "a.keras")
    rows = read_rows(tmp_path / "c" / "per_subject.csv")
    assert {r["attack"] for r in rows} == {"none", "fgsm"}
    # the perturbation is the source model's: same input quality as attacking the source itself
    evaluate(models / "a.keras", prepared_dir, tmp_path / "a", uri, "--attack", "fgsm")
    source = read_rows(tmp_path / "a" / "per_subject.csv")
    psnr = lambda table: sorted(float(r["psnr"]) for r in table if r["attack"] == "fgsm")
    np.testing.assert_allclose(psnr(rows), psnr(source), rtol=1e-6)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("eval-tests").experiment_id])
    assert any(r.data.tags.get("transfer_from", "").endswith("a.keras") for r in runs)


def test_bad_options(models, prepared_dir, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(models / "a.keras"), "--data", str(prepared_dir), "--out",
                                       str(tmp_path), "--eps", "abc", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 2 and "--eps: expected numbers" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "none.keras"), "--data", str(prepared_dir),
                                       "--out", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 2 and "no such model file" in result.output


def test_iteration_curves_reuse_the_attack_they_end_with(models, prepared_dir):
    """With --iterations-sweep, the i-FGSM rows at eps[0] come from the curve's last iterate:
    the same numbers as an evaluation that attacks separately."""
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import EvalConfig, evaluate as run
    from keras_advseg.export import load_model

    prepared = load_prepared(prepared_dir)
    model = load_model(models / "a.keras")
    ids = prepared.test_ids[:2]
    config = dict(attacks=("ifgsm", "tifgsm"), eps=(0.05,), steps=3)
    swept = run(model, prepared, ids, EvalConfig(iterations_sweep=True, **config), progress=False)
    plain = run(model, prepared, ids, EvalConfig(**config), progress=False)
    metrics = ("dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse")
    for a, b in zip(swept.rows, plain.rows):
        assert (a["subject"], a["attack"], a["eps"]) == (b["subject"], b["attack"], b["eps"])
        for metric in metrics:  # the clean rows have no input quality ("")
            expected = b[metric] if b[metric] == "" else pytest.approx(b[metric], rel=1e-4, abs=1e-4)
            assert a[metric] == expected, (a["attack"], metric)
    for row in (r for r in swept.rows if r["attack"] != "none"):
        last = next(c for c in swept.iterations if c["subject"] == row["subject"] and c["attack"] == row["attack"]
                    and c["iteration"] == 3)
        assert all(last[m] == pytest.approx(row[m], rel=1e-4, abs=1e-4) for m in metrics)


def test_fgsm_rows_share_the_sweep_gradient_and_match_a_direct_attack(models, prepared_dir):
    from keras_advseg.attacks import fgsm
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import EvalConfig, evaluate as run
    from keras_advseg.export import load_model
    from keras_advseg.metrics import brats_dice, image_quality, predict_labels

    prepared = load_prepared(prepared_dir)
    model = load_model(models / "a.keras")
    subject = prepared.test_ids[0]
    config = EvalConfig(attacks=("fgsm", "ifgsm"), eps=(0.05, 0.1), iterative_eps=(0.05,), steps=2,
                        eps_sweep=(0.0, 0.05))
    rows = run(model, prepared, [subject], config, progress=False).rows
    assert sorted((r["attack"], r["eps"]) for r in rows) == [
        ("fgsm", 0.05), ("fgsm", 0.1), ("fgsm_sweep", 0.0), ("fgsm_sweep", 0.05), ("ifgsm", 0.05), ("none", 0.0)]
    image, labels = prepared.load(subject)
    for eps in (0.05, 0.1):
        x_adv = fgsm(model, image[None], one_hot_labels(labels[None]).numpy(), eps=eps).numpy()
        dice = brats_dice(labels, predict_labels(model, x_adv)[0])
        row = next(r for r in rows if r["attack"] == "fgsm" and r["eps"] == eps)
        assert [row[f"dice_{k}"] for k in ("wt", "tc", "et")] == pytest.approx([float(dice[k]) for k in ("wt", "tc", "et")])
        assert row["psnr"] == pytest.approx(image_quality(image, x_adv[0])["psnr"], rel=1e-5)
    swept = next(r for r in rows if r["attack"] == "fgsm_sweep" and r["eps"] == 0.05)
    direct = next(r for r in rows if r["attack"] == "fgsm" and r["eps"] == 0.05)
    assert {k: swept[k] for k in ("dice_wt", "psnr")} == {k: direct[k] for k in ("dice_wt", "psnr")}
