"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import pytest


def test_iteration_curves_reuse_the_attack_they_end_with(models, prepared_dir):
    """With --iterations-sweep, the i-FGSM rows at eps[0] come from the curve's last iterate:
    the same numbers as an evaluation that attacks separately."""
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import EvalConfig
    from keras_advseg.evaluation import evaluate as run
    from keras_advseg.export import load_model

    prepared = load_prepared(prepared_dir)
    model = load_model(models / "a.keras")
    ids = prepared.test_ids[:2]
    config = dict(attacks=("ifgsm", "targeted-ifgsm"), eps=(0.05,), steps=3)
    swept = run(model, prepared, ids, EvalConfig(iterations_sweep=True, **config), progress=False)
    plain = run(model, prepared, ids, EvalConfig(**config), progress=False)
    metrics = ("dice_wt", "dice_tc", "dice_et", "psnr", "ssim", "rmse")
    for a, b in zip(swept.rows, plain.rows):
        assert (a["subject"], a["attack"], a["eps"]) == (b["subject"], b["attack"], b["eps"])
        for metric in metrics:  # the clean rows have no input quality ("")
            expected = (
                b[metric] if b[metric] == "" else pytest.approx(b[metric], rel=1e-4, abs=1e-4)
            )
            assert a[metric] == expected, (a["attack"], metric)
    for row in (r for r in swept.rows if r["attack"] != "none"):
        last = next(
            c
            for c in swept.iterations
            if c["subject"] == row["subject"]
            and c["attack"] == row["attack"]
            and c["iteration"] == 3
        )
        assert all(last[m] == pytest.approx(row[m], rel=1e-4, abs=1e-4) for m in metrics)


def test_fgsm_rows_share_the_sweep_gradient_and_match_a_direct_attack(models, prepared_dir):
    from keras_advseg.attacks import fgsm
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import EvalConfig
    from keras_advseg.evaluation import evaluate as run
    from keras_advseg.export import load_model
    from keras_advseg.metrics import brats_dice, image_quality, predict_labels

    prepared = load_prepared(prepared_dir)
    model = load_model(models / "a.keras")
    subject = prepared.test_ids[0]
    config = EvalConfig(
        attacks=("fgsm", "ifgsm"),
        eps=(0.05, 0.1),
        iterative_eps=(0.05,),
        steps=2,
        eps_sweep=(0.0, 0.05),
    )
    rows = run(model, prepared, [subject], config, progress=False).rows
    assert sorted((r["attack"], r["eps"]) for r in rows) == [
        ("fgsm", 0.05),
        ("fgsm", 0.1),
        ("fgsm_sweep", 0.0),
        ("fgsm_sweep", 0.05),
        ("ifgsm", 0.05),
        ("none", 0.0),
    ]
    image, labels = prepared.load(subject)
    for eps in (0.05, 0.1):
        x_adv = fgsm(model, image[None], one_hot_labels(labels[None]).numpy(), eps=eps).numpy()
        dice = brats_dice(labels, predict_labels(model, x_adv)[0])
        row = next(r for r in rows if r["attack"] == "fgsm" and r["eps"] == eps)
        assert [row[f"dice_{k}"] for k in ("wt", "tc", "et")] == pytest.approx(
            [float(dice[k]) for k in ("wt", "tc", "et")]
        )
        assert row["psnr"] == pytest.approx(image_quality(image, x_adv[0])["psnr"], rel=1e-5)
    swept = next(r for r in rows if r["attack"] == "fgsm_sweep" and r["eps"] == 0.05)
    direct = next(r for r in rows if r["attack"] == "fgsm" and r["eps"] == 0.05)
    assert {k: swept[k] for k in ("dice_wt", "psnr")} == {k: direct[k] for k in ("dice_wt", "psnr")}


def test_segmentation_attacks_are_evaluated(models, prepared_dir):
    from keras_advseg.config import EvalConfig
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import evaluate
    from keras_advseg.export import load_model

    prepared = load_prepared(prepared_dir)
    config = EvalConfig(attacks=("segpgd", "cospgd"), eps=(0.05,), steps=2)
    rows = evaluate(load_model(models / "a.keras"), prepared, prepared.ids("test")[:1], config).rows
    assert [(r["attack"], r["eps"], r["steps"]) for r in rows] == [
        ("none", 0.0, 0),
        ("segpgd", 0.05, 2),
        ("cospgd", 0.05, 2),
    ]
    assert all(r["psnr"] != "" and 0 <= r["dice_wt"] <= 1 for r in rows[1:])


def test_eps_curve_goes_up_to_dice_zero_and_keeps_the_breaking_input(fitted_unet, prepared_dir):
    from keras_advseg.config import EPS_CURVE
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import EvalConfig
    from keras_advseg.evaluation import evaluate as run

    prepared = load_prepared(prepared_dir)
    config = EvalConfig(attacks=("fgsm", "pgd-dice"), eps=(0.03,), steps=2, eps_curve=True)
    assert config.budgets_iterative == tuple(sorted({0.03, *EPS_CURVE}))
    result = run(fitted_unet, prepared, prepared.test_ids[:1], config, progress=False)
    for attack in ("fgsm", "pgd-dice"):
        rows = sorted((r for r in result.rows if r["attack"] == attack), key=lambda r: r["eps"])
        assert [r["eps"] for r in rows] == list(config.budgets_iterative)
    pgd_rows = sorted((r for r in result.rows if r["attack"] == "pgd-dice"), key=lambda r: r["eps"])
    zero = [all(r[f"dice_{k}"] == 0 for k in ("wt", "tc", "et")) for r in pgd_rows]
    assert zero[-1] and not zero[0]  # from a partial segmentation to none at all
    first = zero.index(True)
    # beyond the first budget that broke the subject, its input is kept: same perturbation
    for row in pgd_rows[first + 1 :]:
        assert row["psnr"] == pgd_rows[first]["psnr"] and row["rmse"] == pgd_rows[first]["rmse"]
    # below it, each budget is attacked anew: the perturbation grows with eps
    rmse = [r["rmse"] for r in pgd_rows[: first + 1]]
    assert rmse == sorted(rmse)
