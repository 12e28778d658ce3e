"""Typed results: summaries with float eps keys, metric names, and reading folders back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_advseg.evaluation.results import (
    Evaluation,
    Summary,
    eps_key,
    load_results,
    metric_names,
    summarize,
)
from keras_advseg.io import FileFormatError, write_text_atomic


def row(subject, attack, eps, wt, tc, et, psnr=""):
    return {
        "subject": subject,
        "attack": attack,
        "eps": eps,
        "steps": 0,
        "dice_wt": wt,
        "dice_tc": tc,
        "dice_et": et,
        "psnr": psnr,
        "ssim": "" if psnr == "" else 0.9,
        "rmse": "" if psnr == "" else 0.1,
    }


@pytest.fixture
def evaluation():
    rows = [
        row("a", "none", 0.0, 0.8, 0.6, 0.4),
        row("b", "none", 0.0, 0.6, 0.4, 0.2),
        row("a", "fgsm", 0.05, 0.4, 0.3, 0.2, 30.0),
        row("b", "fgsm", 0.05, 0.2, 0.1, 0.0, 32.0),
        row("a", "fgsm_sweep", 0.001, 0.7, 0.5, 0.3, 50.0),
        row("b", "fgsm_sweep", 0.001, 0.5, 0.3, 0.1, 52.0),
    ]
    iterations = [
        {
            "subject": s,
            "attack": "ifgsm",
            "iteration": k,
            "dice_wt": 1.0 / k,
            "dice_tc": 0.5,
            "dice_et": 0.5,
            "psnr": 40.0,
            "ssim": 0.9,
            "rmse": 0.1,
        }
        for s in "ab"
        for k in (1, 2)
    ]
    return Evaluation(rows, iterations)


def test_summary_means_drops_and_float_keys(evaluation):
    summary = summarize(evaluation)
    assert summary.n_subjects == 2 and set(summary.attacks["fgsm"]) == {0.05}
    assert summary.mean("none", 0, "dice_wt") == pytest.approx(0.7)
    entry = summary.attacks["fgsm"][0.05]
    assert entry["dice_wt"]["mean"] == pytest.approx(0.3) and entry["dice_wt"][
        "sd"
    ] == pytest.approx(np.std([0.4, 0.2], ddof=1))
    assert entry["dice_drop"]["wt"] == pytest.approx((0.7 - 0.3) / 0.7)
    assert entry["psnr"]["mean"] == pytest.approx(31.0)
    assert summary.iterations["ifgsm"]["dice_wt"] == pytest.approx([1.0, 0.5])


def test_summary_json_round_trip(evaluation):
    summary = summarize(evaluation)
    document = json.loads(json.dumps(summary.to_json()))
    assert set(document["attacks"]["fgsm"]) == {"0.05"}  # JSON keys are text
    back = Summary.from_json(document)
    assert back == summary
    with pytest.raises(FileFormatError, match="not an evaluation summary"):
        Summary.from_json({"attacks": {"fgsm": {"zero": {}}}, "n_subjects": 1, "clean": {}})


def test_metric_names_for_the_tracking_ui(evaluation):
    flat, series = metric_names(summarize(evaluation))
    assert flat["dice_wt_clean"] == pytest.approx(0.7)
    assert flat["dice_et_fgsm_eps0.05"] == pytest.approx(0.1)
    assert series["sweep_fgsm_dice_wt"] == [(1, pytest.approx(0.6))]
    assert series["iterations_ifgsm_dice_wt"] == [(1, 1.0), (2, 0.5)]
    assert eps_key(0.1) == "0.1" and eps_key(0.05) == "0.05"


def test_load_results_reads_back_what_was_written(evaluation, tmp_path):
    write_text_atomic(tmp_path / "per_subject.csv", evaluation.rows_csv())
    write_text_atomic(tmp_path / "summary.json", json.dumps(summarize(evaluation).to_json()))
    result = load_results(tmp_path)
    assert result.series("fgsm", 0.05, "dice_wt") == {"a": 0.4, "b": 0.2}
    assert (
        result.subjects() == {"a", "b"}
        and result.has("fgsm", 0.0)
        and not result.has("pgd-dice", 0.05)
    )
    assert result.summary.attacks["fgsm"][0.05]["dice_tc"]["mean"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "text",
    [
        "subject,attack\na,none\n",
        "subject,attack,eps,dice_wt\na,none,zero,0.5\n",
        "subject,attack,eps,dice_wt\na,none,0,nan\n",
    ],
)
def test_malformed_tables_name_the_file(tmp_path, text):
    (tmp_path / "per_subject.csv").write_text(text)
    with pytest.raises(FileFormatError, match="per_subject.csv: malformed evaluation table"):
        load_results(tmp_path)
    with pytest.raises(FileFormatError, match="not an evaluation folder"):
        load_results(tmp_path / "elsewhere")


def test_headline_metrics_are_the_mean_dice_clean_under_fgsm_and_the_worst_case():
    from keras_advseg.evaluation.results import Summary
    from keras_advseg.workflows.evaluate import headline_metrics

    def entry(wt, tc, et):
        return {
            f"dice_{r}": {"mean": v, "sd": 0.0, "n": 2}
            for r, v in zip("wt tc et".split(), (wt, tc, et))
        }

    summary = Summary(
        2,
        entry(0.9, 0.6, 0.3),
        {
            "fgsm": {0.05: entry(0.6, 0.3, 0.0)},
            "worst": {0.05: entry(0.3, 0.0, 0.0)},
            "ifgsm": {0.05: entry(0.1, 0.1, 0.1)},
        },
        {},
    )
    assert headline_metrics(summary) == {
        "eval_test.dice_mean_clean": pytest.approx(0.6),
        "eval_test.dice_mean_fgsm_eps0.05": pytest.approx(0.3),
        "eval_test.dice_mean_worst_eps0.05": pytest.approx(0.1),
    }
